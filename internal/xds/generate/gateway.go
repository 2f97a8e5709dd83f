package generate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// A gateway proxy (contract.Identity.Router) has no application behind
// it: it serves the servers of the Gateways whose selector picks it, as
// Istio's gateway listeners (pilot/pkg/networking/core/gateway.go) do.
//
//   - Servers are merged by port: one listener per port (at the server's
//     bind, else the proxy's GatewayBind, else 0.0.0.0).
//   - Plaintext HTTP servers on a port share the route configuration
//     "http.<port>": a virtual host per host a bound VirtualService
//     serves there (VirtualServices naming one host are merged, first
//     seen first); httpsRedirect makes its virtual hosts answer 301 to
//     https (require_tls).
//   - HTTPS servers each get a filter chain selected by SNI (their hosts;
//     "*" takes the connections no other chain names), terminating TLS
//     with the server's certificate (credentialName over SDS
//     "kubernetes://<name>", files, or the mesh certificate for
//     ISTIO_MUTUAL) and routing with "https.<port>.<portName>.<gateway>.<namespace>".
//   - TLS servers in PASSTHROUGH mode forward connections by SNI along
//     the bound VirtualServices' tls routes, without terminating them;
//     TLS servers that terminate, and TCP servers, forward along tcp
//     routes.
//   - A port is served on the target port of the gateway's own Service
//     port of that number, when a registry has one (Istio's mapping).
//   - The connection managers carry the RateLimit (ratelimit.go) and the
//     OIDCLogin (login.go) that select the gateway.

// gatewayServer is one server of a Gateway selecting the proxy.
type gatewayServer struct {
	gw    *config.Gateway
	srv   *networking.Server
	proto registry.Protocol
}

// terminates reports whether the server terminates TLS.
func (g gatewayServer) terminates() bool {
	switch g.srv.GetTls().GetMode() {
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		return false
	}
	return g.proto == registry.HTTPS || g.proto == registry.TLS
}

// gatewayPort is the servers sharing one listener.
type gatewayPort struct {
	bind string
	// number is the servers' port; listen where the listener binds: the
	// target port of the gateway's Service port number, if a Service
	// fronts the gateway with a different one, as Istio does (a pod
	// without privileges serves Gateway port 80 on 8080).
	number, listen uint32
	servers        []gatewayServer
}

// gatewayPorts groups the servers of the Gateways that select id by
// bind address and port, in port order.
func gatewayPorts(s *mesh.Snapshot, id contract.Identity) []*gatewayPort {
	byKey := map[string]*gatewayPort{}
	var out []*gatewayPort
	for _, gw := range s.Gateways.ForWorkload(id.Namespace, id.Labels) {
		for _, srv := range gw.Spec.GetServers() {
			p := srv.GetPort()
			proto, _ := registry.ParseProtocol(p.GetProtocol())
			bind := srv.GetBind()
			if bind == "" {
				bind = id.GatewayBind
			}
			if bind == "" {
				bind = "0.0.0.0"
			}
			key := bind + ":" + strconv.Itoa(int(p.GetNumber()))
			gp := byKey[key]
			if gp == nil {
				gp = &gatewayPort{bind: bind, number: p.GetNumber(), listen: targetPort(s, id, p.GetNumber())}
				byKey[key] = gp
				out = append(out, gp)
			}
			gs := gatewayServer{gw: gw, srv: srv, proto: proto}
			// Validation keeps a port's servers in one family; a server
			// of another family (from another Gateway) is left out, as
			// Istio drops conflicting servers.
			if len(gp.servers) > 0 && portFamily(gp.servers[0]) != portFamily(gs) {
				continue
			}
			gp.servers = append(gp.servers, gs)
		}
	}
	slices.SortFunc(out, func(a, b *gatewayPort) int {
		if a.number != b.number {
			return int(a.number) - int(b.number)
		}
		return strings.Compare(a.bind, b.bind)
	})
	return out
}

func portFamily(g gatewayServer) string {
	switch {
	case g.proto.IsHTTP():
		return "http"
	case g.proto == registry.HTTPS || g.proto == registry.TLS:
		return "tls"
	}
	return "tcp"
}

// targetPort is where a gateway serves its Gateways' port n: the port of
// its own endpoint for service port n when a registry has one (a
// Kubernetes Service mapping 80 to 8080), else n.
func targetPort(s *mesh.Snapshot, id contract.Identity, n uint32) uint32 {
	for _, ep := range s.Registry.EndpointsAt(id.IPs) {
		if ep.ServicePort == n && ep.Port != 0 {
			return ep.Port
		}
	}
	return n
}

// gatewayListeners builds a gateway proxy's listeners and their route
// configurations.
func gatewayListeners(s *mesh.Snapshot, id contract.Identity) (ls, rcs []types.Resource) {
	for _, gp := range gatewayPorts(s, id) {
		name := contract.ListenerName(gp.bind, gp.listen)
		l := &listener.Listener{
			Name:             name,
			Address:          socketAddress(gp.bind, gp.listen),
			TrafficDirection: core.TrafficDirection_OUTBOUND,
		}
		switch portFamily(gp.servers[0]) {
		case "http":
			rcName := fmt.Sprintf("http.%d", gp.number)
			rc := gatewayRouteConfig(s, id, rcName, gp.number, gp.servers)
			m := withGatewaySecurity(s, id, withLogin(s, id, withGatewayRateLimit(s, id, gp.number, gatewayHCM(s, id, name, rcName), rc), rc))
			l.FilterChains = []*listener.FilterChain{withChainCORS(&listener.FilterChain{Filters: []*listener.Filter{hcmFilter(s, id, m)}}, rc)}
			rcs = append(rcs, rc)
		case "tls":
			l.ListenerFilters = []*listener.ListenerFilter{tlsInspector()}
			used := map[string]bool{} // an SNI (or "" for none) already has a chain
			for _, gs := range gp.servers {
				if !gs.terminates() {
					l.FilterChains = append(l.FilterChains, passthroughChains(s, id, gs, gp.number, used)...)
					continue
				}
				snis := serverNames(gs.srv.GetHosts(), used)
				if snis == nil {
					continue // every name it serves has a chain already
				}
				fc := &listener.FilterChain{
					FilterChainMatch: &listener.FilterChainMatch{ServerNames: snis},
					TransportSocket:  downstreamTLSSocket(gatewayTLSContext(gs)),
				}
				if gs.proto == registry.HTTPS {
					rcName := fmt.Sprintf("https.%d.%s.%s.%s", gp.number, gs.srv.GetPort().GetName(), gs.gw.Name, gs.gw.Namespace)
					rc := gatewayRouteConfig(s, id, rcName, gp.number, []gatewayServer{gs})
					m := withGatewaySecurity(s, id, withLogin(s, id, withGatewayRateLimit(s, id, gp.number, gatewayHCM(s, id, name, rcName), rc), rc))
					fc.Filters = []*listener.Filter{hcmFilter(s, id, m)}
					withChainCORS(fc, rc)
					rcs = append(rcs, rc)
				} else if f := gatewayTCPFilter(s, id, gp.number, []gatewayServer{gs}); f != nil {
					fc.Filters = []*listener.Filter{f}
				} else {
					continue
				}
				if len(snis) == 1 && snis[0] == "" {
					fc.FilterChainMatch = nil
				}
				l.FilterChains = append(l.FilterChains, fc)
			}
		default:
			if f := gatewayTCPFilter(s, id, gp.number, gp.servers); f != nil {
				l.FilterChains = []*listener.FilterChain{{Filters: []*listener.Filter{f}}}
			}
		}
		if len(l.FilterChains) == 0 {
			continue // nothing routed there: Envoy refuses a listener without chains
		}
		withGatewayTCPSecurity(s, id, l)
		ls = append(ls, l)
	}
	return ls, rcs
}

// serverNames are the SNI names of a server's hosts not yet used by
// another chain of the listener: nil when all are; [""] when the server
// serves "*" (no server_names: any name, and none).
func serverNames(hosts []string, used map[string]bool) []string {
	var out []string
	for _, h := range hosts {
		_, host := config.ParseServerHost(h)
		if host == "*" {
			host = ""
		}
		if used[host] {
			continue
		}
		used[host] = true
		out = append(out, host)
	}
	if slices.Contains(out, "") {
		if len(out) > 1 {
			// "*" and named hosts on one server: the named ones are
			// covered by the catch-all chain.
			return []string{""}
		}
	}
	return out
}

// gatewayHCM is the connection manager of a gateway port: routes from
// rcName over RDS, fault injection and CORS before the router, the
// client's address taken from the connection (a gateway is the edge).
func gatewayHCM(s *mesh.Snapshot, id contract.Identity, listenerName, rcName string) *hcm.HttpConnectionManager {
	m := &hcm.HttpConnectionManager{
		StatPrefix: "outbound_" + listenerName,
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: rcName,
		}},
		HttpFilters:      append(faultFilters(), routerFilters()...),
		UseRemoteAddress: wrapperspb.Bool(true),
	}
	return withAccessLogs(s, m, id.Namespace, id.Labels, mesh.ModeClient)
}

// withGatewaySecurity applies the RequestAuthentications and
// AuthorizationPolicies that select the gateway proxy (by its labels, in
// its namespace or the root namespace), as Istio's gateways do: the JWT
// filter and the RBAC filters go last before the router of m, after the
// OIDC login (a user is sent to log in before policies that need the
// token it brings look at the request). Returns m.
func withGatewaySecurity(s *mesh.Snapshot, id contract.Identity, m *hcm.HttpConnectionManager) *hcm.HttpConnectionManager {
	filters := inboundSecurityFilters(s, workload{namespace: id.Namespace, labels: id.Labels})
	if len(filters) == 0 {
		return m
	}
	last := len(m.HttpFilters) - 1 // the router
	m.HttpFilters = slices.Insert(m.HttpFilters, last, filters...)
	return m
}

// withGatewayTCPSecurity puts the network RBAC filters of the
// AuthorizationPolicies that select the gateway proxy before the
// tcp_proxy of each TCP chain of l (TLS passthrough, TCP and terminated
// TLS servers), as Istio's gateways do.
func withGatewayTCPSecurity(s *mesh.Snapshot, id contract.Identity, l *listener.Listener) {
	rbac := tcpRBACFilters(s, workload{namespace: id.Namespace, labels: id.Labels})
	if len(rbac) == 0 {
		return
	}
	for _, fc := range l.FilterChains {
		if n := len(fc.Filters); n > 0 && fc.Filters[n-1].GetName() == wellknown.TCPProxy {
			fc.Filters = append(slices.Clone(rbac), fc.Filters...)
		}
	}
}

// withChainCORS adds the CORS filter to fc's connection manager when a
// route of rc, its route configuration, carries a CORS policy.
func withChainCORS(fc *listener.FilterChain, rc *route.RouteConfiguration) *listener.FilterChain {
	withCORSFilter(&listener.Listener{FilterChains: []*listener.FilterChain{fc}}, rc)
	return fc
}

// withGatewayRateLimit applies the RateLimit (networking.weft.dev) that
// selects the gateway proxy, as a sidecar's inbound side takes its own
// (ratelimit.go): the local rate limit filter before the router of m and
// the limits on the routes of rc, its route configuration, when the
// RateLimit covers the Gateway server's port. Returns m.
func withGatewayRateLimit(s *mesh.Snapshot, id contract.Identity, port uint32, m *hcm.HttpConnectionManager, rc *route.RouteConfiguration) *hcm.HttpConnectionManager {
	rl := s.RateLimits.For(id.Namespace, id.Labels)
	if rl == nil || !rateLimitCoversPort(rl.Spec, port) {
		return m
	}
	m.HttpFilters = rateLimitFilters(m.HttpFilters, rl.Spec)
	for _, vh := range rc.GetVirtualHosts() {
		vh.Routes = rateLimitRoutes(vh.GetRoutes(), rl.Spec)
	}
	return m
}

// gatewayRouteConfig builds the route configuration of HTTP servers:
// a virtual host per host the VirtualServices bound to the servers'
// Gateways serve on them, VirtualServices for one host merged in first
// seen order; for a server with httpsRedirect, its virtual hosts (and
// one per host it names that no VirtualService serves) redirect to
// https.
func gatewayRouteConfig(s *mesh.Snapshot, id contract.Identity, name string, port uint32, servers []gatewayServer) *route.RouteConfiguration {
	// As Istio's gateways: a Host's port is ignored (a client behind a
	// NodePort or a load balancer names a port the gateway does not
	// listen on). The ":port" domains stay for proxies that predate it.
	rc := &route.RouteConfiguration{Name: name, IgnorePortInHostMatching: true}
	vhosts := map[string]*route.VirtualHost{}
	merged := map[string]int{} // VirtualServices contributing to each host
	var order []string
	vhost := func(host string) *route.VirtualHost {
		vh := vhosts[host]
		if vh == nil {
			domains := []string{host}
			if host != "*" {
				domains = append(domains, host+":"+strconv.Itoa(int(port)))
			}
			vh = &route.VirtualHost{Name: host + ":" + strconv.Itoa(int(port)), Domains: domains}
			vhosts[host] = vh
			order = append(order, host)
		}
		return vh
	}
	for _, gs := range servers {
		redirect := gs.srv.GetTls().GetHttpsRedirect() && gs.proto.IsHTTP()
		for _, vs := range s.Gateways.Bound(gs.gw, id.Namespace) {
			if len(vs.Spec.GetHttp()) == 0 {
				continue
			}
			for _, host := range mesh.ServerHosts(gs.gw, gs.srv, vs) {
				vh := vhost(host)
				if redirect {
					vh.RequireTls = route.VirtualHost_ALL
				}
				if rs := gatewayHTTPRoutes(s, id, gs, vs, host, port); len(rs) > 0 {
					vh.Routes = append(vh.Routes, rs...)
					merged[host]++
				}
			}
		}
		if redirect {
			for _, h := range gs.srv.GetHosts() {
				_, host := config.ParseServerHost(h)
				vhost(host).RequireTls = route.VirtualHost_ALL
			}
		}
	}
	for _, h := range order {
		vh := vhosts[h]
		if merged[h] > 1 {
			// Routes of several VirtualServices: as Istio's
			// SortVHostRoutes, catch-all routes go last (in order), so
			// one VirtualService's "/" does not hide another's matches.
			slices.SortStableFunc(vh.Routes, func(a, b *route.Route) int { return boolInt(catchAll(a)) - boolInt(catchAll(b)) })
		}
		if len(vh.Routes) == 0 && vh.RequireTls == route.VirtualHost_NONE {
			continue
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	// Envoy picks exact domains before wildcards whatever the order; a
	// stable order keeps versions stable.
	slices.SortFunc(rc.VirtualHosts, func(a, b *route.VirtualHost) int { return strings.Compare(a.Name, b.Name) })
	return rc
}

// catchAll reports whether a route matches every request (Istio's
// isCatchAllRoute): prefix "/" with no other condition.
func catchAll(r *route.Route) bool {
	m := r.GetMatch()
	return m.GetPrefix() == "/" && len(m.GetHeaders()) == 0 && len(m.GetQueryParameters()) == 0 && m.GetRuntimeFraction() == nil && m.GetGrpc() == nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// gatewayHTTPRoutes translates the http routes of vs for host on a
// gateway server: each rule's matches that apply to this gateway (their
// gateways, else the VirtualService's, must name it), in order.
func gatewayHTTPRoutes(s *mesh.Snapshot, id contract.Identity, gs gatewayServer, vs *config.VirtualService, host string, port uint32) []*route.Route {
	// The routed "service" is the host the client asked for; destinations
	// without a port take their service's only (or first HTTP) port.
	svc := &registry.Service{Hostname: host, Namespace: vs.Namespace}
	p := registry.Port{Number: port, Protocol: registry.HTTP}
	gwRef := gs.gw.Namespace + "/" + gs.gw.Name
	var out []*route.Route
	for _, h := range vs.Spec.GetHttp() {
		action := withHashPolicy(s, drView(s, id), routeAction(s, vs.Namespace, h, svc, p))
		addMirrors(action, s, vs.Namespace, h, svc, p)
		applyResilience(action, h)
		if action == nil && h.GetRedirect() == nil && h.GetDirectResponse() == nil {
			continue
		}
		if len(h.GetMatch()) == 0 {
			out = append(out, withFault(h, withRouteActions(s, vs.Namespace, h, svc, p, &route.Route{
				Name:   h.GetName(),
				Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: action,
			})))
			continue
		}
		for _, m := range h.GetMatch() {
			if !gatewayMatchApplies(m, vs, gwRef, id, port) {
				continue
			}
			out = append(out, withFault(h, withRouteActions(s, vs.Namespace, h, svc, p, &route.Route{Name: h.GetName(), Match: routeMatch(m), Action: action})))
		}
	}
	return out
}

// gatewayMatchApplies is matchApplies for a gateway: the match's
// gateways (else the VirtualService's) must name this gateway, and its
// port, sourceLabels and sourceNamespace must fit the gateway proxy.
func gatewayMatchApplies(m *networking.HTTPMatchRequest, vs *config.VirtualService, gwRef string, id contract.Identity, port uint32) bool {
	if p := m.GetPort(); p != 0 && p != port {
		return false
	}
	if ns := m.GetSourceNamespace(); ns != "" && ns != id.Namespace {
		return false
	}
	for k, v := range m.GetSourceLabels() {
		if got, ok := id.Labels[k]; !ok || got != v {
			return false
		}
	}
	if gws := m.GetGateways(); len(gws) > 0 {
		for _, g := range gws {
			if g != mesh.GatewayMesh && config.GatewayRef(g, vs.Namespace) == gwRef {
				return true
			}
		}
		return false
	}
	return true
}

// gatewayTLSContext is the DownstreamTlsContext of a server that
// terminates TLS, as Istio's BuildListenerTLSContext: the certificate
// from credentialName (SDS), the files, or the gateway's mesh
// certificate (ISTIO_MUTUAL); for MUTUAL a client certificate required
// and checked against the credential's CA (or caCertificates), SANs if
// given; protocol versions and cipher suites as set.
func gatewayTLSContext(gs gatewayServer) *tlsv3.DownstreamTlsContext {
	t := gs.srv.GetTls()
	alpn := []string{"h2", "http/1.1"}
	if gs.proto != registry.HTTPS {
		alpn = nil
	}
	if a := t.GetAlpnProtocols(); len(a) > 0 {
		alpn = a // the server's own list, as set (Istio 1.32's alpnProtocols)
	}
	common := &tlsv3.CommonTlsContext{AlpnProtocols: alpn}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if t.GetMode() == networking.ServerTLSSettings_ISTIO_MUTUAL {
		m := istioMutualDownstream()
		m.CommonTlsContext.AlpnProtocols = alpn
		if curves := ecdhCurves(t); len(curves) > 0 {
			if m.CommonTlsContext.TlsParams == nil {
				m.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{}
			}
			m.CommonTlsContext.TlsParams.EcdhCurves = curves
		}
		return m
	}
	sans := exactSANs(t.GetSubjectAltNames())
	mutual := t.GetMode() == networking.ServerTLSSettings_MUTUAL
	switch cred := t.GetCredentialName(); {
	case cred != "":
		name := contract.SecretCredentialPrefix + strings.TrimPrefix(cred, contract.SecretCredentialPrefix)
		if strings.HasPrefix(cred, contract.SecretGatewayCredentialPrefix) {
			name = cred // a Gateway API certificate of another namespace
		}
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{credentialSecret(name)}
		if mutual {
			common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans},
					ValidationContextSdsSecretConfig: credentialSecret(name + contract.SecretCASuffix),
				},
			}
		}
	default:
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.GetServerCertificate()),
			PrivateKey:       fileSource(t.GetPrivateKey()),
		}}
		if mutual {
			vc := &tlsv3.CertificateValidationContext{TrustedCa: fileSource(t.GetCaCertificates()), MatchSubjectAltNames: sans}
			if crl := t.GetCaCrl(); crl != "" {
				vc.Crl = fileSource(crl)
			}
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		}
	}
	if mutual {
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	params := &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}
	if v := tlsProtocol(t.GetMinProtocolVersion()); v != tlsv3.TlsParameters_TLS_AUTO && v > tlsv3.TlsParameters_TLSv1_2 {
		params.TlsMinimumProtocolVersion = v
	}
	if v := tlsProtocol(t.GetMaxProtocolVersion()); v != tlsv3.TlsParameters_TLS_AUTO {
		params.TlsMaximumProtocolVersion = v
	}
	for _, cs := range t.GetCipherSuites() {
		if tlssocket.KnownCipherSuite(cs) && !slices.Contains(params.CipherSuites, cs) {
			params.CipherSuites = append(params.CipherSuites, cs)
		}
	}
	params.EcdhCurves = ecdhCurves(t)
	common.TlsParams = params
	return ctx
}

// ecdhCurves is a server's ecdhCurves the proxy knows, without
// duplicates; validation warns about the rest.
func ecdhCurves(t *networking.ServerTLSSettings) []string {
	var out []string
	for _, c := range t.GetEcdhCurves() {
		if tlssocket.KnownCurve(c) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func tlsProtocol(v networking.ServerTLSSettings_TLSProtocol) tlsv3.TlsParameters_TlsProtocol {
	switch v {
	case networking.ServerTLSSettings_TLSV1_0:
		return tlsv3.TlsParameters_TLSv1_0
	case networking.ServerTLSSettings_TLSV1_1:
		return tlsv3.TlsParameters_TLSv1_1
	case networking.ServerTLSSettings_TLSV1_2:
		return tlsv3.TlsParameters_TLSv1_2
	case networking.ServerTLSSettings_TLSV1_3:
		return tlsv3.TlsParameters_TLSv1_3
	}
	return tlsv3.TlsParameters_TLS_AUTO
}

// passthroughChains forwards a PASSTHROUGH server's connections by SNI,
// along the tls routes of the VirtualServices bound to its Gateway: a
// chain per route match, its server names the match's sniHosts that the
// server serves.
func passthroughChains(s *mesh.Snapshot, id contract.Identity, gs gatewayServer, port uint32, used map[string]bool) []*listener.FilterChain {
	var out []*listener.FilterChain
	gwRef := gs.gw.Namespace + "/" + gs.gw.Name
	for _, vs := range s.Gateways.Bound(gs.gw, id.Namespace) {
		hosts := mesh.ServerHosts(gs.gw, gs.srv, vs)
		for _, r := range vs.Spec.GetTls() {
			for _, m := range r.GetMatch() {
				if !gatewayL4MatchApplies(m.GetPort(), m.GetSourceLabels(), m.GetGateways(), vs, gwRef, id, port) {
					continue
				}
				var snis []string
				for _, sni := range m.GetSniHosts() {
					for _, h := range hosts {
						if n, ok := mesh.IntersectHosts(sni, h); ok && !used[n] {
							used[n] = true
							snis = append(snis, n)
						}
					}
				}
				if len(snis) == 0 {
					continue
				}
				f := tcpRouteFilter(s, id, vs, r.GetRoute(), port)
				if f == nil {
					continue
				}
				out = append(out, &listener.FilterChain{
					FilterChainMatch: &listener.FilterChainMatch{ServerNames: snis},
					Filters:          []*listener.Filter{f},
				})
			}
		}
	}
	return out
}

// gatewayL4MatchApplies is gatewayMatchApplies for tls and tcp route matches.
func gatewayL4MatchApplies(port uint32, sourceLabels map[string]string, gateways []string, vs *config.VirtualService, gwRef string, id contract.Identity, listenerPort uint32) bool {
	m := &networking.HTTPMatchRequest{Port: port, SourceLabels: sourceLabels, Gateways: gateways}
	return gatewayMatchApplies(m, vs, gwRef, id, listenerPort)
}

// gatewayTCPFilter forwards a TCP (or TLS-terminated) port's connections
// along the first tcp route of the VirtualServices bound to the servers'
// Gateways whose match applies; nil when none does.
func gatewayTCPFilter(s *mesh.Snapshot, id contract.Identity, port uint32, servers []gatewayServer) *listener.Filter {
	for _, gs := range servers {
		gwRef := gs.gw.Namespace + "/" + gs.gw.Name
		for _, vs := range s.Gateways.Bound(gs.gw, id.Namespace) {
			if len(mesh.ServerHosts(gs.gw, gs.srv, vs)) == 0 {
				continue
			}
			for _, r := range vs.Spec.GetTcp() {
				applies := len(r.GetMatch()) == 0
				for _, m := range r.GetMatch() {
					if len(m.GetDestinationSubnets()) == 0 && gatewayL4MatchApplies(m.GetPort(), m.GetSourceLabels(), m.GetGateways(), vs, gwRef, id, port) {
						applies = true
					}
				}
				if !applies {
					continue
				}
				if f := tcpRouteFilter(s, id, vs, r.GetRoute(), port); f != nil {
					return f
				}
			}
		}
	}
	return nil
}

// tcpRouteFilter is a tcp_proxy to a tcp or tls route's destinations
// (tcproute.go's targets: one cluster or weighted clusters, the
// DestinationRule's idle timeout and connection duration), logging each
// connection as the gateway's Telemetry says; nil without destinations.
func tcpRouteFilter(s *mesh.Snapshot, id contract.Identity, vs *config.VirtualService, dests []*networking.RouteDestination, port uint32) *listener.Filter {
	if len(dests) == 0 {
		return nil
	}
	var plan l4Plan
	t := plan.addTarget(s, drView(s, id), vs, dests, &registry.Service{}, registry.Port{Number: port})
	return tcpProxyTo(plan.targets[t], tcpAccessLogs(s, id.Namespace, id.Labels, mesh.ModeClient))
}
