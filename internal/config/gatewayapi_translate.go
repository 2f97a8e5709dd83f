package config

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/registry"
)

// The Gateway API is served by translating it into Istio's model, as
// Istio does (pilot/pkg/config/kube/gateway): after the load's checks,
// each listener of a Gateway of Weft's GatewayClasses becomes an Istio
// Gateway with one server, and the HTTPRoutes attached to it become one
// VirtualService per listener and host, their rules sorted by the Gateway
// API's precedence. The gateway index and generator then serve them as
// any other Gateway and VirtualService: this file is the whole of the
// Gateway API's support, and nothing downstream knows it exists.

// Controller names whose GatewayClasses Weft serves: its own, and
// Istio's, so that Istio users' classes (gatewayClassName: istio) work.
const (
	WeftControllerName  = "weft.dev/gateway-controller"
	IstioControllerName = "istio.io/gateway-controller"
)

// BuiltinGatewayClass is the GatewayClass of Weft's controller that
// exists without being written, as Istio's "istio" class does (which Weft
// serves too).
const BuiltinGatewayClass = "weft"

// GatewayNameLabel is the label by which a Gateway API Gateway picks its
// gateway proxies (in its own namespace), as on the pods of Istio's
// gateway deployments: gateway.networking.k8s.io/gateway-name: <name>.
const GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// AnnotationGeneratedFrom marks the Gateways and VirtualServices
// translated from the Gateway API, with the resource they come from
// ("Gateway.gateway.networking.k8s.io <namespace>/<name>").
const AnnotationGeneratedFrom = "weft.dev/generated-from"

// GatewayCredentialPrefix starts the credentialName of a Gateway API
// listener's certificate in another namespace, which a ReferenceGrant
// there permits: "kubernetes-gateway://<namespace>/<name>", as Istio
// names it. Only translated Gateways carry it (a user's Gateway cannot:
// credentialName must be a Secret's name), and the control plane serves
// it only to the gateways of the Gateway's namespace.
const GatewayCredentialPrefix = "kubernetes-gateway://"

// generatedGatewayName names the Istio Gateway made of a listener:
// "<gateway>-gwapi-<listener>", dots made dashes, cut to a DNS-1123
// label (63 characters, the rest replaced by a hash) as Istio's own
// validation wants Gateway names (VirtualServices name them
// <namespace>/<name>).
func generatedGatewayName(gateway, listener string) string {
	name := strings.ReplaceAll(gateway+"-gwapi-"+listener, ".", "-")
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return strings.TrimRight(name[:54], "-") + "-" + hex.EncodeToString(sum[:4])
}

// generatedVirtualServiceName names the VirtualService of a listener's
// host: "<gateway name>.<host>", "*" spelled "wildcard".
func generatedVirtualServiceName(gateway, host string) string {
	return gateway + "." + strings.ReplaceAll(host, "*", "wildcard")
}

// translator holds one translation's inputs and findings.
type translator struct {
	snap   *Snapshot
	suffix string
	// knownHost reports whether a registry knows a Service's FQDN (the
	// Store's Options.KnownHost); nil: Weft cannot tell.
	knownHost func(string) bool
	diags     []Diagnostic
	// rules caches the translated rules of each route, so a route
	// attached to several listeners is translated (and reported) once.
	rules map[*HTTPRoute][]*ruleRoute
	// status is what the Gateway API's status of each resource says.
	status *GatewayAPIStatus
	// mesh are the routes attached to Services (the Gateway API for
	// service mesh), by the VirtualService they become, in order.
	mesh      map[meshKey]*meshParent
	meshOrder []meshKey
}

// meshKey is one VirtualService of routes attached to a Service: its
// host, and the namespace of consumer routes (routes of another namespace
// than the Service's, which apply to their own namespace's sidecars only),
// "" for producer routes (of the Service's namespace, for every sidecar).
type meshKey struct {
	host, consumer string
}

// meshParent is what routes attached to one Service put on it.
type meshParent struct {
	first  *HTTPRoute // the first route attached: the VirtualService's namespace and position
	ref    int        // the parentRef of first that attached it
	routes []*ruleRoute
	l4     []meshL4 // of TCPRoutes and TLSRoutes
}

// meshL4 is one rule of a TCPRoute (tcp) or TLSRoute (tls) attached to a
// Service.
type meshL4 struct {
	key precedence
	tcp *networking.TCPRoute
	tls *networking.TLSRoute
}

// ruleRoute is one Istio route made from one match of one rule.
type ruleRoute struct {
	h   *networking.HTTPRoute
	key precedence
}

// precedence orders routes by the Gateway API's rules: the most specific
// match first (Exact path, then the longest PathPrefix, then regular
// expressions; a method; more headers; more query parameters), then the
// oldest route, then by namespace and name, then in rule and match order.
type precedence struct {
	rank, pathLen, method, headers, query int
	seq                                   uint64
	ns, name                              string
	rule, match, part                     int
}

func comparePrecedence(a, b precedence) int {
	return cmp.Or(
		-cmp.Compare(a.rank, b.rank), -cmp.Compare(a.pathLen, b.pathLen), -cmp.Compare(a.method, b.method),
		-cmp.Compare(a.headers, b.headers), -cmp.Compare(a.query, b.query),
		cmp.Compare(a.seq, b.seq), cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name),
		cmp.Compare(a.rule, b.rule), cmp.Compare(a.match, b.match), cmp.Compare(a.part, b.part))
}

// listener is one served listener of a Gateway API Gateway.
type listener struct {
	gw *KubeGateway
	l  *gwv1.Listener
	// gateway is the Istio Gateway it becomes.
	gateway *Gateway
	// hosts are the hosts routes put on it, in order, with their routes.
	hosts    []string
	routes   map[string][]*ruleRoute
	attached map[*HTTPRoute]bool
	// res is the listener's status; nil for a Gateway of Istio's classes.
	res *ListenerResult
}

// translateGatewayAPI appends to snap the Gateways and VirtualServices
// the Gateway API resources of snap mean, and returns what it found
// wrong: routes that attach to no listener and why, references not
// permitted, listeners Weft cannot serve. It only reads the Gateway API
// lists of snap; what it finds goes into snap.GatewayAPI too, as the
// Gateway API's status says it.
func translateGatewayAPI(snap *Snapshot, suffix string, knownHost func(string) bool) []Diagnostic {
	snap.GatewayAPI = newGatewayAPIStatus(snap.GatewayClasses)
	if len(snap.KubeGateways) == 0 && len(snap.HTTPRoutes) == 0 && len(snap.GRPCRoutes) == 0 && len(snap.TCPRoutes) == 0 && len(snap.TLSRoutes) == 0 {
		return nil
	}
	if suffix == "" {
		suffix = "cluster.local"
	}
	t := &translator{snap: snap, suffix: suffix, knownHost: knownHost, rules: map[*HTTPRoute][]*ruleRoute{}, status: snap.GatewayAPI,
		mesh: map[meshKey]*meshParent{}}
	// The classes istiod creates itself exist without being written, as
	// does Weft's own: Istio's samples say gatewayClassName: istio. A
	// GatewayClass written with one of their names wins.
	ours := map[string]bool{BuiltinGatewayClass: true, "istio": true}
	for _, c := range snap.GatewayClasses {
		ours[c.Name] = c.Spec.ControllerName == WeftControllerName || c.Spec.ControllerName == IstioControllerName
	}
	byGateway := map[string][]*listener{} // by namespace/name
	var all []*listener
	for _, gw := range snap.KubeGateways {
		class := string(gw.Spec.GatewayClassName)
		isOurs, known := ours[class]
		if !known {
			t.diags = append(t.diags, resourceDiag(gw, SeverityWarning, CodeRouteNotAttached, "spec.gatewayClassName",
				fmt.Sprintf("GatewayClass %q does not exist; the Gateway is not served", class)))
			continue
		}
		if !isOurs {
			continue // another controller's
		}
		key := gw.Namespace + "/" + gw.Name
		var res *GatewayResult
		if t.status.WeftClass(class) {
			res = &GatewayResult{Listeners: make([]ListenerResult, len(gw.Spec.Listeners))}
			t.status.Gateways[key] = res
		}
		for i := range gw.Spec.Listeners {
			var lr *ListenerResult
			if res != nil {
				lr = &res.Listeners[i]
				lr.Name = gw.Spec.Listeners[i].Name
			}
			if l := t.listener(gw, i, lr); l != nil {
				byGateway[key] = append(byGateway[key], l)
				all = append(all, l)
			}
		}
	}
	for _, r := range snap.HTTPRoutes {
		t.attach(r, byGateway)
	}
	for _, r := range snap.GRPCRoutes {
		t.attach(grpcAsHTTP(r), byGateway)
	}
	for _, r := range snap.TCPRoutes {
		t.attach(l4AsHTTP(r, r.Spec.CommonRouteSpec, nil, r.Spec.Rules), byGateway)
	}
	for _, r := range snap.TLSRoutes {
		t.attach(l4AsHTTP(r, r.Spec.CommonRouteSpec, r.Spec.Hostnames, r.Spec.Rules), byGateway)
	}
	for _, l := range all {
		if l.res != nil {
			l.res.AttachedRoutes = int32(len(l.attached))
		}
		snap.Gateways = append(snap.Gateways, l.gateway)
		if l.l.Protocol == gwv1.TCPProtocolType || l.l.Protocol == gwv1.TLSProtocolType {
			snap.VirtualServices = append(snap.VirtualServices, t.l4VirtualServices(l)...)
			continue
		}
		for _, host := range l.hosts {
			// A request for host is routed by the routes of host first,
			// then by those of the wildcards covering it, the most
			// specific first: a proxy picks one virtual host per request,
			// so each carries the rules of the wider ones after its own.
			type ranked struct {
				hostLen int
				r       *ruleRoute
			}
			var rs []ranked
			for _, h := range l.hosts {
				if h == host || h == "*" || wildcardCovers(h, host) {
					hostLen := len(h)
					if h == host {
						hostLen = math.MaxInt
					}
					for _, r := range l.routes[h] {
						rs = append(rs, ranked{hostLen, r})
					}
				}
			}
			slices.SortStableFunc(rs, func(a, b ranked) int {
				return cmp.Or(-cmp.Compare(a.hostLen, b.hostLen), comparePrecedence(a.r.key, b.r.key))
			})
			vs := &networking.VirtualService{
				Hosts:    []string{host},
				Gateways: []string{l.gateway.Namespace + "/" + l.gateway.Name},
			}
			for _, r := range rs {
				vs.Http = append(vs.Http, r.r.h)
			}
			meta := l.gateway.Meta
			meta.Kind = KindVirtualService
			meta.Name = generatedVirtualServiceName(l.gateway.Name, host)
			snap.VirtualServices = append(snap.VirtualServices, &VirtualService{
				Meta: meta, Spec: vs, Annotations: l.gateway.Annotations,
			})
		}
	}
	snap.VirtualServices = append(snap.VirtualServices, t.meshVirtualServices()...)
	for _, d := range t.diags {
		t.status.found[foundKey(d)] = true
	}
	return t.diags
}

// meshVirtualServices are the VirtualServices of the routes attached to
// Services, as Istio makes them: one per Service host (and per consumer
// namespace), bound to the sidecars (gateway "mesh"), its rules those of
// every route attached to it in the Gateway API's precedence (http from
// HTTPRoutes and GRPCRoutes, tcp from TCPRoutes, tls from TLSRoutes). A
// request to the Service that no rule matches gets 404, as with a
// VirtualService.
func (t *translator) meshVirtualServices() []*VirtualService {
	var written []*VirtualService // VirtualServices of the sidecars, as written
	for _, vs := range t.snap.VirtualServices {
		if vs.Annotations[AnnotationGeneratedFrom] == "" && AppliesToMesh(vs.Spec.GetGateways()) {
			written = append(written, vs)
		}
	}
	var out []*VirtualService
	for _, k := range t.meshOrder {
		mp := t.mesh[k]
		t.reportMeshConflict(k, mp, written)
		rs := slices.Clone(mp.routes)
		slices.SortStableFunc(rs, func(a, b *ruleRoute) int { return comparePrecedence(a.key, b.key) })
		vs := &networking.VirtualService{Hosts: []string{k.host}, Gateways: []string{GatewayMesh}}
		if k.consumer != "" {
			vs.ExportTo = []string{"."}
		}
		for _, r := range rs {
			vs.Http = append(vs.Http, r.h)
		}
		l4 := slices.Clone(mp.l4)
		slices.SortStableFunc(l4, func(a, b meshL4) int { return comparePrecedence(a.key, b.key) })
		for _, r := range l4 {
			if r.tcp != nil {
				vs.Tcp = append(vs.Tcp, r.tcp)
			} else {
				vs.Tls = append(vs.Tls, r.tls)
			}
		}
		meta := mp.first.Meta
		meta.Kind = KindVirtualService
		meta.Name = "mesh." + strings.ReplaceAll(k.host, "*", "wildcard")
		out = append(out, &VirtualService{
			Meta: meta, Spec: vs,
			Annotations: map[string]string{AnnotationGeneratedFrom: mp.first.Meta.String()},
		})
	}
	return out
}

// reportMeshConflict warns when a VirtualService as written routes the
// host of routes attached to a Service for the same sidecars: as two
// VirtualServices for one host, the one seen first is used.
func (t *translator) reportMeshConflict(k meshKey, mp *meshParent, written []*VirtualService) {
	group := "public"
	if k.consumer != "" {
		group = "private/" + k.consumer
	}
	anyNS := func(string) bool { return true } // "reviews.default" names a Service here
	for _, vs := range written {
		if !slices.Contains(visibilityGroups(vs), group) || !slices.ContainsFunc(vs.Spec.GetHosts(), func(h string) bool {
			return registry.ResolveHost(h, vs.Namespace, t.suffix, anyNS) == k.host
		}) {
			continue
		}
		msg := fmt.Sprintf("%s also routes %s for these sidecars and was there first: this route is not used for it (on sidecars one VirtualService routes a host)", where(vs.Meta), k.host)
		if mp.first.Seq != 0 && (vs.Seq == 0 || mp.first.Seq < vs.Seq) {
			msg = fmt.Sprintf("%s also routes %s for these sidecars; this route was there first, so that VirtualService is not used for it (on sidecars one VirtualService routes a host)", where(vs.Meta), k.host)
		}
		t.diags = append(t.diags, resourceDiag(mp.first, SeverityWarning, CodeVirtualServiceConflict, fmt.Sprintf("spec.parentRefs[%d]", mp.ref), msg))
	}
}

// istioNetworkingGroup is the API group of Istio's networking kinds,
// which Istio's Gateway API support takes as parents (ServiceEntry) and
// backends (ServiceEntry, Hostname).
const istioNetworkingGroup = "networking.istio.io"

// istioDestination is the destination of a backend of Istio's kinds: a
// Hostname (any host, as a VirtualService destination names it) or a
// ServiceEntry of the route's namespace (its first host); nil, reported,
// for another kind or a ServiceEntry that does not exist.
func (t *translator) istioDestination(r *HTTPRoute, path string, b gwv1.BackendObjectReference) *networking.Destination {
	var host string
	switch *b.Kind {
	case "Hostname":
		host = string(b.Name)
	case "ServiceEntry":
		ns := r.Namespace
		if b.Namespace != nil && string(*b.Namespace) != "" && string(*b.Namespace) != ns {
			msg := fmt.Sprintf("ServiceEntry %s/%s is in another namespace: Weft routes to ServiceEntries of the route's namespace only; requests for this backend are answered 500", *b.Namespace, b.Name)
			t.diags = append(t.diags, resourceDiag(r, SeverityError, CodeRefNotPermitted, path, msg))
			t.status.refs(r, gwv1.RouteReasonRefNotPermitted, path+": "+msg)
			return nil
		}
		if hosts := t.serviceEntryHosts(ns, string(b.Name)); len(hosts) > 0 {
			host = hosts[0]
		} else {
			msg := fmt.Sprintf("ServiceEntry %s/%s does not exist or has no hosts; requests for this backend are answered 500", ns, b.Name)
			t.diags = append(t.diags, resourceDiag(r, SeverityError, CodeRefNotPermitted, path, msg))
			t.status.refs(r, gwv1.RouteReasonBackendNotFound, path+": "+msg)
			return nil
		}
	default:
		msg := fmt.Sprintf("kind %s of group %s is not a backend Weft routes to (ServiceEntry and Hostname are); requests for this backend are answered 500", *b.Kind, istioNetworkingGroup)
		t.diags = append(t.diags, resourceDiag(r, SeverityError, CodeRefNotPermitted, path, msg))
		t.status.refs(r, gwv1.RouteReasonInvalidKind, path+": "+msg)
		return nil
	}
	d := &networking.Destination{Host: host}
	if b.Port != nil {
		d.Port = &networking.PortSelector{Number: uint32(*b.Port)}
	}
	return d
}

// serviceEntryHosts are the hosts of ServiceEntry ns/name, resolved as
// the ServiceEntry's namespace resolves them; nil when there is none.
func (t *translator) serviceEntryHosts(ns, name string) []string {
	for _, se := range t.snap.ServiceEntries {
		if se.Namespace == ns && se.Name == name {
			var out []string
			for _, h := range se.Spec.GetHosts() {
				out = append(out, registry.ResolveHost(h, ns, t.suffix, nil))
			}
			return out
		}
	}
	return nil
}

// isParentService reports whether Service ns/name is a parent of route r:
// a consumer route may send its Service's traffic on to that Service
// without a ReferenceGrant, as in Istio (the route only applies to its
// own namespace's sidecars, which may call the Service anyway).
func isParentService(r *HTTPRoute, ns, name string) bool {
	return slices.ContainsFunc(r.Spec.ParentRefs, func(ref gwv1.ParentReference) bool {
		pns := r.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			pns = string(*ref.Namespace)
		}
		return isServiceParent(ref) && pns == ns && string(ref.Name) == name
	})
}

// isServiceEntryParent reports whether a parentRef names a ServiceEntry
// (group networking.istio.io): Istio's extension of GAMMA to the hosts
// of a ServiceEntry.
func isServiceEntryParent(ref gwv1.ParentReference) bool {
	return ref.Kind != nil && *ref.Kind == "ServiceEntry" && ref.Group != nil && *ref.Group == istioNetworkingGroup
}

// isServiceParent reports whether a parentRef names a Service (group ""
// or "core", kind Service): the Gateway API for service mesh (GAMMA).
func isServiceParent(ref gwv1.ParentReference) bool {
	return ref.Kind != nil && *ref.Kind == "Service" && ref.Group != nil && (*ref.Group == "" || *ref.Group == "core")
}

// attachMesh binds route r, through its parentRef i, to the sidecars'
// traffic to the Service the parentRef names, as Istio does: a route of
// the Service's namespace (a producer route) applies to every sidecar, a
// route of another namespace (a consumer route) to the sidecars of its
// own namespace; a port limits it to requests to that port of the
// Service. Route hostnames do not apply to a Service.
func (t *translator) attachMesh(r *HTTPRoute, i int, ref gwv1.ParentReference) {
	ns := r.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	hosts := []string{string(ref.Name) + "." + ns + ".svc." + t.suffix}
	if isServiceEntryParent(ref) {
		if hosts = t.serviceEntryHosts(ns, string(ref.Name)); len(hosts) == 0 {
			msg := fmt.Sprintf("ServiceEntry %s/%s does not exist or has no hosts; the route is not attached to it", ns, ref.Name)
			t.diags = append(t.diags, resourceDiag(r, SeverityWarning, CodeRouteNotAttached, fmt.Sprintf("spec.parentRefs[%d]", i), msg))
			t.status.parent(r, i, gwv1.RouteReasonNoMatchingParent, msg)
			return
		}
	}
	if r.Kind == KindTLSRoute && len(r.Spec.Hostnames) > 0 {
		// A VirtualService's SNI matches must be among its hosts (Istio's
		// validation): the route's hostnames pick the parent's hosts it
		// routes, matched by SNI.
		var kept []string
		for _, h := range hosts {
			if slices.ContainsFunc(r.Spec.Hostnames, func(n gwv1.Hostname) bool {
				return string(n) == h || wildcardCovers(string(n), h)
			}) {
				kept = append(kept, h)
			}
		}
		if len(kept) == 0 {
			msg := fmt.Sprintf("none of the route's hostnames is a host of its parent (%s): on the sidecars a TLSRoute routes its parent's hosts by SNI; the route is not attached to it", strings.Join(hosts, ", "))
			t.diags = append(t.diags, resourceDiag(r, SeverityWarning, CodeRouteNotAttached, fmt.Sprintf("spec.parentRefs[%d]", i), msg))
			t.status.parent(r, i, gwv1.RouteReasonNoMatchingParent, msg)
			return
		}
		hosts = kept
	}
	t.status.parent(r, i, "", "") // Weft is the mesh: attached
	for _, host := range hosts {
		t.attachMeshHost(r, i, ref, meshKey{host: host}, ns)
	}
}

// attachMeshHost is attachMesh for one host of the parent, a Service or
// ServiceEntry of namespace ns.
func (t *translator) attachMeshHost(r *HTTPRoute, i int, ref gwv1.ParentReference, k meshKey, ns string) {
	if ns != r.Namespace {
		k.consumer = r.Namespace
	}
	mp := t.mesh[k]
	if mp == nil {
		mp = &meshParent{first: r, ref: i}
		t.mesh[k] = mp
		t.meshOrder = append(t.meshOrder, k)
	}
	var port uint32
	if ref.Port != nil {
		port = uint32(*ref.Port)
	}
	if r.Kind == KindTCPRoute || r.Kind == KindTLSRoute {
		mp.l4 = append(mp.l4, t.meshL4Rules(r, k.host, port)...)
		return
	}
	routes := t.routesOf(r)
	if port != 0 {
		routes = onPort(routes, port)
	}
	mp.routes = append(mp.routes, routes...)
}

// meshL4Rules are the tcp or tls rules of r, a TCPRoute or TLSRoute (as
// l4AsHTTP makes it) attached to the Service host, on port (0: every
// port). A TLSRoute's rules match the host by SNI.
func (t *translator) meshL4Rules(r *HTTPRoute, host string, port uint32) []meshL4 {
	var out []meshL4
	for _, rr := range t.routesOf(r) {
		var dests []*networking.RouteDestination
		for _, d := range rr.h.GetRoute() {
			dests = append(dests, &networking.RouteDestination{Destination: d.Destination, Weight: d.Weight})
		}
		if len(dests) == 0 {
			continue
		}
		if r.Kind == KindTCPRoute {
			tcp := &networking.TCPRoute{Route: dests}
			if port != 0 {
				tcp.Match = []*networking.L4MatchAttributes{{Port: port}}
			}
			out = append(out, meshL4{key: rr.key, tcp: tcp})
			continue
		}
		out = append(out, meshL4{key: rr.key, tls: &networking.TLSRoute{
			Match: []*networking.TLSMatchAttributes{{SniHosts: []string{host}, Port: port}}, Route: dests}})
	}
	return out
}

// onPort returns rs limited to requests to port: each match (or, for a
// route without matches, a new one) also matches the port.
func onPort(rs []*ruleRoute, port uint32) []*ruleRoute {
	out := make([]*ruleRoute, len(rs))
	for i, r := range rs {
		h := proto.Clone(r.h).(*networking.HTTPRoute)
		if len(h.Match) == 0 {
			h.Match = []*networking.HTTPMatchRequest{{}}
		}
		for _, m := range h.Match {
			m.Port = port
		}
		out[i] = &ruleRoute{h: h, key: r.key}
	}
	return out
}

// resourceDiag is a diagnostic about r at path.
func resourceDiag[T any](r *Resource[T], sev Severity, code Code, path, msg string) Diagnostic {
	pos := r.Pos.Lookup(path)
	return Diagnostic{
		Severity: sev, Code: code, File: r.File, Doc: r.Doc, Line: pos.Line, Column: pos.Column,
		Resource: r.Meta.String(), Path: path, Message: msg,
	}
}

// listener translates listener i of gw into an Istio Gateway with one
// server; nil when Weft cannot serve it (reported, and said in res when
// res is not nil).
func (t *translator) listener(gw *KubeGateway, i int, res *ListenerResult) *listener {
	l := &gw.Spec.Listeners[i]
	ours := res
	if res == nil {
		res = &ListenerResult{} // a Gateway of Istio's classes: its status is not Weft's
	}
	refuse := func(sev Severity, code Code, path string, cond gwv1.ListenerConditionType, reason gwv1.ListenerConditionReason, msg string) *listener {
		t.diags = append(t.diags, resourceDiag(gw, sev, code, path, msg))
		res.Condition, res.Reason, res.Message = cond, reason, msg
		return nil
	}
	path := fmt.Sprintf("spec.listeners[%d]", i)
	if reason, msg := listenerConflict(gw, i); reason != "" {
		return refuse(SeverityWarning, CodeInvalidValue, path+".port", gwv1.ListenerConditionConflicted, reason, msg)
	}
	host := "*"
	if l.Hostname != nil {
		host = string(*l.Hostname)
	}
	srv := &networking.Server{
		Port:  &networking.Port{Number: uint32(l.Port), Name: string(l.Name), Protocol: string(l.Protocol)},
		Hosts: []string{"*/" + host},
	}
	switch l.Protocol {
	case gwv1.HTTPProtocolType:
	case gwv1.TCPProtocolType:
		srv.Hosts = []string{"*/*"}
	case gwv1.TLSProtocolType:
		if l.TLS != nil && l.TLS.Mode != nil && *l.TLS.Mode == gwv1.TLSModePassthrough {
			srv.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_PASSTHROUGH}
			break
		}
		// Terminate (the default): TLS with the listener's certificate,
		// then the TLSRoutes' backends get the decrypted stream, as
		// Istio serves it (a TLS server in SIMPLE mode, tcp routes).
		fallthrough
	case gwv1.HTTPSProtocolType:
		var refs []gwv1.SecretObjectReference
		if l.TLS != nil {
			refs = l.TLS.CertificateRefs
		}
		if len(refs) == 0 {
			return refuse(SeverityError, CodeInvalidValue, path+".tls", gwv1.ListenerConditionResolvedRefs, gwv1.ListenerReasonInvalidCertificateRef,
				fmt.Sprintf("an %s listener that terminates TLS needs a certificateRef: Weft does not read tls.options; the listener is not served", l.Protocol))
		}
		ref := refs[0]
		rp := path + ".tls.certificateRefs[0]"
		if (ref.Group != nil && *ref.Group != "" && *ref.Group != "core") || (ref.Kind != nil && *ref.Kind != "Secret") {
			return refuse(SeverityError, CodeInvalidValue, rp, gwv1.ListenerConditionResolvedRefs, gwv1.ListenerReasonInvalidCertificateRef,
				"Weft reads certificates from Secrets (group \"\", kind Secret) only; the listener is not served")
		}
		cred := string(ref.Name)
		if ref.Namespace != nil && string(*ref.Namespace) != gw.Namespace {
			// A Secret of another namespace, when a ReferenceGrant there
			// lets this namespace's Gateways refer to it: named as Istio
			// names it, so the control plane serves it to this Gateway's
			// gateways only (xds/generate, secrets.go).
			ns := string(*ref.Namespace)
			if !t.grantedKind(string(KindGateway), gw.Namespace, ns, "Secret", cred) {
				return refuse(SeverityError, CodeRefNotPermitted, rp+".namespace", gwv1.ListenerConditionResolvedRefs, gwv1.ListenerReasonRefNotPermitted,
					fmt.Sprintf("Secret %s/%s is in another namespace and no ReferenceGrant there permits Gateways of namespace %s to refer to it; the listener is not served", ns, cred, gw.Namespace))
			}
			cred = GatewayCredentialPrefix + ns + "/" + cred
		}
		if len(refs) > 1 {
			t.diags = append(t.diags, resourceDiag(gw, SeverityWarning, CodeInvalidValue, path+".tls.certificateRefs",
				"Weft serves the first certificateRef only"))
		}
		srv.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: cred}
		res.CertificateNamespace, res.CertificateName = gw.Namespace, string(ref.Name)
		if ref.Namespace != nil {
			res.CertificateNamespace = string(*ref.Namespace)
		}
	default:
		return refuse(SeverityWarning, CodeInvalidValue, path+".protocol", gwv1.ListenerConditionAccepted, gwv1.ListenerReasonUnsupportedProtocol,
			fmt.Sprintf("protocol %s listeners are not supported by Weft yet (HTTP, HTTPS, TCP and TLS are); the listener is not served", l.Protocol))
	}
	res.Kinds = routeKinds(l)
	meta := gw.Meta
	meta.Kind = KindGateway
	meta.Name = generatedGatewayName(gw.Name, string(l.Name))
	out := &Gateway{
		Meta: meta,
		Spec: &networking.Gateway{
			Selector: map[string]string{GatewayNameLabel: gw.Name},
			Servers:  []*networking.Server{srv},
		},
		Annotations: map[string]string{AnnotationGeneratedFrom: gw.Meta.String()},
	}
	ls := &listener{gw: gw, l: l, gateway: out, routes: map[string][]*ruleRoute{}, attached: map[*HTTPRoute]bool{}}
	ls.res = ours
	return ls
}

// listenerConflict says why listener i of gw conflicts with one before it
// on the same port, as the Gateway API defines it: listeners may share a
// port only if their protocols go together (HTTP with HTTP; HTTPS and TLS,
// told apart by SNI) and their hostnames differ; a TCP or UDP listener
// has its port alone. The first listener keeps the port.
func listenerConflict(gw *KubeGateway, i int) (gwv1.ListenerConditionReason, string) {
	l := &gw.Spec.Listeners[i]
	family := func(p gwv1.ProtocolType) string {
		switch p {
		case gwv1.HTTPSProtocolType, gwv1.TLSProtocolType:
			return "tls"
		}
		return string(p)
	}
	host := func(h *gwv1.Hostname) string {
		if h == nil {
			return "*"
		}
		return string(*h)
	}
	for j := range i {
		o := &gw.Spec.Listeners[j]
		if o.Port != l.Port {
			continue
		}
		exclusive := l.Protocol == gwv1.TCPProtocolType || l.Protocol == gwv1.UDPProtocolType ||
			o.Protocol == gwv1.TCPProtocolType || o.Protocol == gwv1.UDPProtocolType
		if exclusive || family(o.Protocol) != family(l.Protocol) {
			return gwv1.ListenerReasonProtocolConflict, fmt.Sprintf("port %d is listener %q's (protocol %s), which cannot share it with protocol %s; the listener is not served", l.Port, o.Name, o.Protocol, l.Protocol)
		}
		if host(o.Hostname) == host(l.Hostname) {
			return gwv1.ListenerReasonHostnameConflict, fmt.Sprintf("listener %q has port %d and hostname %s too; the listener is not served", o.Name, l.Port, host(l.Hostname))
		}
	}
	return "", ""
}

// routeKinds are the route kinds an HTTP or HTTPS listener takes: those
// of allowedRoutes.kinds Weft attaches, by default HTTPRoute and
// GRPCRoute.
func routeKinds(l *gwv1.Listener) []gwv1.RouteGroupKind {
	group := gwv1.Group(gatewayAPIGroup)
	var all []gwv1.RouteGroupKind
	for _, k := range listenerKinds[l.Protocol] {
		all = append(all, gwv1.RouteGroupKind{Group: &group, Kind: gwv1.Kind(k)})
	}
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		return all
	}
	var out []gwv1.RouteGroupKind
	for _, k := range l.AllowedRoutes.Kinds {
		if (k.Group == nil || *k.Group == group) && slices.Contains(listenerKinds[l.Protocol], Kind(k.Kind)) {
			out = append(out, gwv1.RouteGroupKind{Group: &group, Kind: k.Kind})
		}
	}
	return out
}

// listenerKinds are the route kinds a listener of each protocol takes.
var listenerKinds = map[gwv1.ProtocolType][]Kind{
	gwv1.HTTPProtocolType:  {KindHTTPRoute, KindGRPCRoute},
	gwv1.HTTPSProtocolType: {KindHTTPRoute, KindGRPCRoute},
	gwv1.TCPProtocolType:   {KindTCPRoute},
	gwv1.TLSProtocolType:   {KindTLSRoute},
}

// attach binds route r to the listeners its parentRefs name and admit
// it, and reports each parentRef that attaches nowhere.
func (t *translator) attach(r *HTTPRoute, byGateway map[string][]*listener) {
	for i, ref := range r.Spec.ParentRefs {
		path := fmt.Sprintf("spec.parentRefs[%d]", i)
		if isServiceParent(ref) || isServiceEntryParent(ref) {
			t.attachMesh(r, i, ref)
			continue
		}
		if (ref.Group != nil && *ref.Group != gatewayAPIGroup) || (ref.Kind != nil && *ref.Kind != "Gateway") {
			t.diags = append(t.diags, resourceDiag(r, SeverityWarning, CodeRouteNotAttached, path,
				"Weft attaches routes to Gateways (group gateway.networking.k8s.io, kind Gateway), Services (group \"\", kind Service) and ServiceEntries (group networking.istio.io) only; this parentRef is ignored"))
			continue
		}
		ns := r.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		key := ns + "/" + string(ref.Name)
		_, weft := t.status.Gateways[key]
		ls, served := byGateway[key]
		if !served {
			if weft {
				t.status.parent(r, i, gwv1.RouteReasonNoMatchingParent, fmt.Sprintf("Gateway %s has no listener Weft serves", key))
			}
			if t.gatewayExists(key) {
				continue // another controller's Gateway, or one with no listener Weft serves (reported there)
			}
			t.diags = append(t.diags, resourceDiag(r, SeverityWarning, CodeRouteNotAttached, path,
				fmt.Sprintf("Gateway %s does not exist; the route is not attached to it", key)))
			continue
		}
		var why []string
		attached := false
		// The reason of the Gateway API a refusal gives: a listener that
		// refuses the route outranks one whose hostname does not match.
		reason := gwv1.RouteReasonNoMatchingParent
		for _, l := range ls {
			if ref.SectionName != nil && *ref.SectionName != l.l.Name {
				continue
			}
			if ref.Port != nil && *ref.Port != l.l.Port {
				continue
			}
			if !slices.Contains(listenerKinds[l.l.Protocol], r.Kind) {
				why = append(why, fmt.Sprintf("listener %q (protocol %s) does not take %ss", l.l.Name, l.l.Protocol, r.Kind))
				reason = gwv1.RouteReasonNotAllowedByListeners
				continue
			}
			if refusal := t.admits(l, r); refusal != "" {
				why = append(why, refusal)
				reason = gwv1.RouteReasonNotAllowedByListeners
				continue
			}
			hosts := intersectHostnames(l.l.Hostname, r.Spec.Hostnames)
			if len(hosts) == 0 {
				why = append(why, fmt.Sprintf("listener %q has hostname %s, which none of the route's hostnames matches", l.l.Name, *l.l.Hostname))
				if reason == gwv1.RouteReasonNoMatchingParent {
					reason = gwv1.RouteReasonNoMatchingListenerHostname
				}
				continue
			}
			attached = true
			if l.attached[r] {
				continue // by another parentRef already
			}
			l.attached[r] = true
			for _, h := range hosts {
				if _, ok := l.routes[h]; !ok {
					l.hosts = append(l.hosts, h)
				}
				l.routes[h] = append(l.routes[h], t.routesOf(r)...)
			}
		}
		if !attached {
			if len(why) == 0 {
				why = append(why, "no listener has that sectionName and port")
			}
			msg := fmt.Sprintf("not attached to Gateway %s: %s", key, strings.Join(why, "; "))
			t.diags = append(t.diags, resourceDiag(r, SeverityWarning, CodeRouteNotAttached, path, msg))
			if weft {
				t.status.parent(r, i, reason, msg)
			}
		} else if weft {
			t.status.parent(r, i, "", "")
		}
	}
}

func (t *translator) gatewayExists(key string) bool {
	return slices.ContainsFunc(t.snap.KubeGateways, func(g *KubeGateway) bool { return g.Namespace+"/"+g.Name == key })
}

// admits returns why listener l refuses route r, or "" when it admits it
// (allowedRoutes: namespaces and kinds). A namespace selector is matched
// against the labels of the route's Namespace (none when Weft has not
// seen it; Kubernetes labels every namespace with its name,
// kubernetes.io/metadata.name, and so does Weft).
func (t *translator) admits(l *listener, r *HTTPRoute) string {
	from := gwv1.NamespacesFromSame
	var kinds []gwv1.RouteGroupKind
	if ar := l.l.AllowedRoutes; ar != nil {
		if ar.Namespaces != nil && ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		kinds = ar.Kinds
	}
	if len(kinds) > 0 && !slices.ContainsFunc(kinds, func(k gwv1.RouteGroupKind) bool {
		return string(k.Kind) == string(r.Kind) && (k.Group == nil || *k.Group == gatewayAPIGroup)
	}) {
		return fmt.Sprintf("listener %q does not admit %ss (allowedRoutes.kinds)", l.l.Name, r.Kind)
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return ""
	case gwv1.NamespacesFromSame:
		if r.Namespace == l.gw.Namespace {
			return ""
		}
		return fmt.Sprintf("listener %q admits routes of namespace %s only (allowedRoutes.namespaces.from: Same)", l.l.Name, l.gw.Namespace)
	case gwv1.NamespacesFromSelector:
		sel, err := metav1.LabelSelectorAsSelector(l.l.AllowedRoutes.Namespaces.Selector)
		if err != nil {
			return fmt.Sprintf("listener %q: allowedRoutes.namespaces.selector: %v", l.l.Name, err)
		}
		if sel.Matches(labels.Set(t.namespaceLabels(r.Namespace))) {
			return ""
		}
		return fmt.Sprintf("listener %q admits routes of namespaces labelled %s only (allowedRoutes.namespaces.selector), and namespace %s is not", l.l.Name, sel, r.Namespace)
	}
	return fmt.Sprintf("listener %q: allowedRoutes.namespaces.from %q is unknown", l.l.Name, from)
}

// namespaceLabels returns the labels of namespace ns: those of its
// Namespace resource, with kubernetes.io/metadata.name, which the API
// server sets on every namespace.
func (t *translator) namespaceLabels(ns string) map[string]string {
	out := map[string]string{"kubernetes.io/metadata.name": ns}
	for _, n := range t.snap.Namespaces {
		if n.Name == ns {
			maps.Copy(out, n.Spec.Labels)
			out["kubernetes.io/metadata.name"] = ns
		}
	}
	return out
}

// intersectHostnames returns the hosts a route with hostnames serves on a
// listener with hostname (nil: any), by the Gateway API's rules: with
// none on either side, the other side's; else each route hostname the
// listener's covers, and the listener's where a route wildcard covers it.
func intersectHostnames(listenerHost *gwv1.Hostname, route []gwv1.Hostname) []string {
	if len(route) == 0 {
		if listenerHost == nil {
			return []string{"*"}
		}
		return []string{string(*listenerHost)}
	}
	var out []string
	add := func(h string) {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	for _, rh := range route {
		r := string(rh)
		switch {
		case listenerHost == nil:
			add(r)
		case r == string(*listenerHost) || wildcardCovers(string(*listenerHost), r):
			add(r)
		case wildcardCovers(r, string(*listenerHost)):
			add(string(*listenerHost))
		}
	}
	return out
}

// wildcardCovers reports whether pattern "*.suffix" covers host, a name
// or a narrower wildcard ("*.example.com" covers "a.b.example.com" and
// "*.b.example.com", not "example.com").
func wildcardCovers(pattern, host string) bool {
	suffix, ok := strings.CutPrefix(pattern, "*")
	return ok && strings.HasSuffix(host, suffix) && len(strings.TrimPrefix(host, "*")) > len(suffix)
}

// routesOf translates the rules of r once.
func (t *translator) routesOf(r *HTTPRoute) []*ruleRoute {
	if rs, ok := t.rules[r]; ok {
		return rs
	}
	var out []*ruleRoute
	for i := range r.Spec.Rules {
		out = append(out, t.rule(r, i)...)
	}
	t.rules[r] = out
	return out
}

// pathPart is one Istio match a Gateway API path match becomes: a
// PathPrefix "/foo" matches "/foo" and below "/foo/", by path elements,
// so it becomes the exact "/foo" and the prefix "/foo/".
type pathPart struct {
	uri *networking.StringMatch
	// prefix is the Gateway API prefix this part matches below (a
	// ReplacePrefixMatch rewrite replaces it), "" for other matches.
	prefix string
	exact  bool
}

// A match without a path matches every path, and ranks after every
// path match (regular expressions included), as in Istio: a rule
// without matches is a catch-all, last.
func pathParts(m *gwv1.HTTPPathMatch) (parts []pathPart, rank, length int) {
	if m == nil {
		// An HTTPRoute's CRD default, PathPrefix "/": it ranks as one (a
		// match of headers alone outranks a bare PathPrefix "/" by its
		// headers, not below it), and matches every path, as no uri does.
		return []pathPart{{}}, 2, 1
	}
	t, v := gwv1.PathMatchPathPrefix, "/"
	if m.Type != nil {
		t = *m.Type
	}
	if m.Value != nil {
		v = *m.Value
	}
	switch t {
	case gwv1.PathMatchExact:
		return []pathPart{{uri: &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}, exact: true}}, 3, len(v)
	case gwv1.PathMatchRegularExpression:
		return []pathPart{{uri: &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: v}}}}, 1, len(v)
	}
	p := strings.TrimRight(v, "/")
	if p == "" {
		return []pathPart{{uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/"}}, prefix: "/"}}, 2, 1
	}
	return []pathPart{
		{uri: &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: p}}, prefix: p, exact: true},
		{uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: p + "/"}}, prefix: p},
	}, 2, len(p)
}

func stringMatch[T ~string](typ *T, value string) *networking.StringMatch {
	if typ != nil && *typ == "RegularExpression" {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: value}}
	}
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: value}}
}

// rule translates rule i of r: one Istio route per match (and per part
// of its path match), each with the rule's action.
func (t *translator) rule(r *HTTPRoute, i int) []*ruleRoute {
	rule := &r.Spec.Rules[i]
	base, prefixRewrite := t.action(r, i)
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []gwv1.HTTPRouteMatch{{}}
	}
	var out []*ruleRoute
	for k, m := range matches {
		path := m.Path
		if path == nil && prefixRewrite != nil {
			path = &gwv1.HTTPPathMatch{} // PathPrefix "/": the prefix a ReplacePrefixMatch replaces
		}
		parts, rank, length := pathParts(path)
		if path == nil && r.Kind == KindGRPCRoute {
			// A GRPCRoute match without a method has no default path:
			// it ranks below every method match, as in Istio (a rule
			// without matches must not hide one of regular expressions).
			rank, length = 0, 0
		}
		for n, part := range parts {
			h := proto.Clone(base).(*networking.HTTPRoute)
			h.Name = fmt.Sprintf("%s.%s.%d.%d", r.Namespace, r.Name, i, k)
			if mr := matchRequest(m, part.uri); proto.Size(mr) > 0 {
				h.Match = []*networking.HTTPMatchRequest{mr}
			}
			if prefixRewrite != nil && part.prefix != "" {
				// "/foo" -> "/bar": "/foo" becomes "/bar", "/foo/x" "/bar/x".
				repl := strings.TrimRight(*prefixRewrite, "/")
				switch {
				case h.Rewrite != nil && part.exact:
					h.Rewrite.Uri = cmp.Or(repl, "/")
				case h.Rewrite != nil:
					h.Rewrite.Uri = repl + "/"
				case h.Redirect != nil && part.exact:
					// A redirect's uri is the whole new path; its
					// prefixRewrite replaces the matched prefix.
					h.Redirect.Uri = cmp.Or(repl, "/")
				case h.Redirect != nil:
					h.Redirect.PrefixRewrite = repl + "/"
				}
			}
			methods := 0
			if m.Method != nil {
				methods = 1
			}
			out = append(out, &ruleRoute{h: h, key: precedence{
				rank: rank, pathLen: length, method: methods, headers: len(m.Headers), query: len(m.QueryParams),
				seq: r.Seq, ns: r.Namespace, name: r.Name, rule: i, match: k, part: n,
			}})
		}
	}
	return out
}

// matchRequest is a Gateway API match with uri for its path.
func matchRequest(m gwv1.HTTPRouteMatch, uri *networking.StringMatch) *networking.HTTPMatchRequest {
	mr := &networking.HTTPMatchRequest{Uri: uri}
	if m.Method != nil {
		mr.Method = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: string(*m.Method)}}
	}
	for _, hm := range m.Headers {
		name := strings.ToLower(string(hm.Name))
		if _, dup := mr.Headers[name]; dup {
			continue // the first match of a name counts, as the Gateway API says
		}
		if mr.Headers == nil {
			mr.Headers = map[string]*networking.StringMatch{}
		}
		mr.Headers[name] = stringMatch(hm.Type, hm.Value)
	}
	for _, qm := range m.QueryParams {
		if _, dup := mr.QueryParams[string(qm.Name)]; dup {
			continue
		}
		if mr.QueryParams == nil {
			mr.QueryParams = map[string]*networking.StringMatch{}
		}
		mr.QueryParams[string(qm.Name)] = stringMatch(qm.Type, qm.Value)
	}
	return mr
}

// action translates what rule i of r does, without its matches: filters,
// backends, timeouts. prefixRewrite is the ReplacePrefixMatch of a
// URLRewrite or a RequestRedirect, which depends on each match's path.
func (t *translator) action(r *HTTPRoute, i int) (base *networking.HTTPRoute, prefixRewrite *string) {
	rule := &r.Spec.Rules[i]
	path := fmt.Sprintf("spec.rules[%d]", i)
	base = &networking.HTTPRoute{}
	fail := false
	for k, f := range rule.Filters {
		fp := fmt.Sprintf("%s.filters[%d]", path, k)
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			base.Headers = withHeaders(base.Headers, f.RequestHeaderModifier, nil)
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			base.Headers = withHeaders(base.Headers, nil, f.ResponseHeaderModifier)
		case gwv1.HTTPRouteFilterRequestRedirect:
			base.Redirect = redirect(f.RequestRedirect)
			if p := f.RequestRedirect.Path; p != nil && p.Type == gwv1.PrefixMatchHTTPPathModifier {
				prefixRewrite = p.ReplacePrefixMatch
			}
		case gwv1.HTTPRouteFilterURLRewrite:
			rw := &networking.HTTPRewrite{}
			if f.URLRewrite.Hostname != nil {
				rw.Authority = string(*f.URLRewrite.Hostname)
			}
			if p := f.URLRewrite.Path; p != nil {
				switch p.Type {
				case gwv1.FullPathHTTPPathModifier:
					rw.UriRegexRewrite = &networking.RegexRewrite{Match: "^/.*$", Rewrite: *p.ReplaceFullPath}
				case gwv1.PrefixMatchHTTPPathModifier:
					prefixRewrite = p.ReplacePrefixMatch
				}
			}
			base.Rewrite = rw
		case gwv1.HTTPRouteFilterRequestMirror:
			if mp := t.mirror(r, fp+".requestMirror", f.RequestMirror); mp != nil {
				base.Mirrors = append(base.Mirrors, mp)
			}
		case gwv1.HTTPRouteFilterCORS:
			base.CorsPolicy = corsPolicy(f.CORS)
		default:
			fail = true // not supported (validation warned): 500, as the Gateway API requires
		}
	}
	if base.Redirect == nil && !fail {
		base.Route = t.destinations(r, path, rule.BackendRefs)
		fail = len(base.Route) == 0
	}
	if fail {
		// No backend to send to (none, all weight 0, none permitted or
		// known) or a filter Weft lacks: the Gateway API answers 500.
		return &networking.HTTPRoute{DirectResponse: &networking.HTTPDirectResponse{Status: 500}}, nil
	}
	if to := rule.Timeouts; to != nil && base.Redirect == nil {
		if to.Request != nil {
			if d, _ := time.ParseDuration(string(*to.Request)); d > 0 {
				base.Timeout = durationpb.New(d)
			}
		}
		if to.BackendRequest != nil && !retries(rule.Retry) {
			if d, _ := time.ParseDuration(string(*to.BackendRequest)); d > 0 && base.Timeout == nil {
				base.Timeout = durationpb.New(d) // no retries: one backend request is the whole request
			}
		}
	}
	if rt := rule.Retry; rt != nil && base.Redirect == nil {
		base.Retries = retryPolicy(rt, rule.Timeouts)
	}
	return base, prefixRewrite
}

// corsPolicy is Istio's translation of a CORS filter: an origin with a
// "*" is a regular expression in which "*" is any text ("*" alone: any
// origin), others exact; maxAge in seconds; preflights from origins it
// does not allow go on to the backend (unmatchedPreflights IGNORE).
func corsPolicy(c *gwv1.HTTPCORSFilter) *networking.CorsPolicy {
	out := &networking.CorsPolicy{UnmatchedPreflights: networking.CorsPolicy_IGNORE}
	if c == nil {
		return out
	}
	for _, o := range c.AllowOrigins {
		switch v := string(o); {
		case v == "*":
			out.AllowOrigins = append(out.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: `^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#]+$`}})
		case strings.Contains(v, "*"):
			re := "^" + strings.ReplaceAll(regexp.QuoteMeta(v), `\*`, ".*") + "$"
			out.AllowOrigins = append(out.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: re}})
		default:
			out.AllowOrigins = append(out.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}})
		}
	}
	for _, m := range c.AllowMethods {
		out.AllowMethods = append(out.AllowMethods, string(m))
	}
	for _, h := range c.AllowHeaders {
		out.AllowHeaders = append(out.AllowHeaders, string(h))
	}
	for _, h := range c.ExposeHeaders {
		out.ExposeHeaders = append(out.ExposeHeaders, string(h))
	}
	if c.AllowCredentials != nil && *c.AllowCredentials {
		out.AllowCredentials = wrapperspb.Bool(true)
	}
	if c.MaxAge > 0 {
		out.MaxAge = durationpb.New(time.Duration(c.MaxAge) * time.Second)
	}
	return out
}

// retries reports whether a rule's retry asks for at least one retry.
func retries(rt *gwv1.HTTPRouteRetry) bool {
	return rt != nil && (rt.Attempts == nil || *rt.Attempts > 0)
}

// retryPolicy is Istio's translation of a rule's retry: attempts (2, the
// mesh's default, when left out; 0 turns retries off), on a failed
// connection, a reset stream, gRPC's unavailable and cancelled, and each
// listed status code; backoff as the base interval; a backendRequest
// timeout as each try's.
func retryPolicy(rt *gwv1.HTTPRouteRetry, to *gwv1.HTTPRouteTimeouts) *networking.HTTPRetry {
	out := &networking.HTTPRetry{Attempts: 2}
	if rt.Attempts != nil {
		out.Attempts = int32(*rt.Attempts)
	}
	if out.Attempts <= 0 {
		return &networking.HTTPRetry{}
	}
	on := []string{"connect-failure", "refused-stream", "unavailable", "cancelled"}
	for _, c := range rt.Codes {
		on = append(on, fmt.Sprint(c))
	}
	out.RetryOn = strings.Join(on, ",")
	if rt.Backoff != nil {
		if d, _ := time.ParseDuration(string(*rt.Backoff)); d > 0 {
			out.Backoff = durationpb.New(d)
		}
	}
	if to != nil && to.BackendRequest != nil {
		if d, _ := time.ParseDuration(string(*to.BackendRequest)); d > 0 {
			out.PerTryTimeout = durationpb.New(d)
		}
	}
	return out
}

// mirror translates a RequestMirror filter at path; nil when its backend
// cannot be used (reported).
func (t *translator) mirror(r *HTTPRoute, path string, f *gwv1.HTTPRequestMirrorFilter) *networking.HTTPMirrorPolicy {
	d := t.destination(r, path+".backendRef", f.BackendRef)
	if d == nil {
		return nil
	}
	mp := &networking.HTTPMirrorPolicy{Destination: d}
	if fr := f.Fraction; fr != nil {
		den := int32(100)
		if fr.Denominator != nil {
			den = *fr.Denominator
		}
		mp.Percentage = &networking.Percent{Value: 100 * float64(fr.Numerator) / float64(den)}
	} else if p := f.Percent; p != nil {
		mp.Percentage = &networking.Percent{Value: float64(*p)}
	}
	return mp
}

// destinations translates a rule's backendRefs (at path) into weighted
// destinations; those of weight 0 and those Weft cannot use (reported)
// are left out.
func (t *translator) destinations(r *HTTPRoute, path string, refs []gwv1.HTTPBackendRef) []*networking.HTTPRouteDestination {
	var out []*networking.HTTPRouteDestination
	for k, b := range refs {
		w := int32(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		if w == 0 {
			continue
		}
		d := t.destination(r, fmt.Sprintf("%s.backendRefs[%d]", path, k), b.BackendObjectReference)
		if d == nil {
			continue
		}
		rd := &networking.HTTPRouteDestination{Destination: d, Weight: w}
		for _, f := range b.Filters {
			switch f.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier:
				rd.Headers = withHeaders(rd.Headers, f.RequestHeaderModifier, nil)
			case gwv1.HTTPRouteFilterResponseHeaderModifier:
				rd.Headers = withHeaders(rd.Headers, nil, f.ResponseHeaderModifier)
			}
		}
		out = append(out, rd)
	}
	if len(out) == 1 {
		out[0].Weight = 0 // the only destination takes everything
	}
	return out
}

// withHeaders adds a request and a response header modifier to h.
func withHeaders(h *networking.Headers, req, resp *gwv1.HTTPHeaderFilter) *networking.Headers {
	if h == nil {
		h = &networking.Headers{}
	}
	conv := func(f *gwv1.HTTPHeaderFilter) *networking.Headers_HeaderOperations {
		op := &networking.Headers_HeaderOperations{Remove: f.Remove}
		for _, s := range f.Set {
			if op.Set == nil {
				op.Set = map[string]string{}
			}
			op.Set[string(s.Name)] = s.Value
		}
		for _, a := range f.Add {
			if op.Add == nil {
				op.Add = map[string]string{}
			}
			op.Add[string(a.Name)] = a.Value
		}
		return op
	}
	if req != nil {
		h.Request = conv(req)
	}
	if resp != nil {
		h.Response = conv(resp)
	}
	return h
}

// redirect translates a RequestRedirect. Without a port, the port is the
// scheme's when a scheme is given, else the request's, as the Gateway API
// says.
func redirect(f *gwv1.HTTPRequestRedirectFilter) *networking.HTTPRedirect {
	rd := &networking.HTTPRedirect{RedirectCode: 302}
	if f.StatusCode != nil {
		rd.RedirectCode = uint32(*f.StatusCode)
	}
	if f.Scheme != nil {
		rd.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		rd.Authority = string(*f.Hostname)
	}
	switch {
	case f.Port != nil:
		rd.RedirectPort = &networking.HTTPRedirect_Port{Port: uint32(*f.Port)}
	case f.Scheme != nil:
		rd.RedirectPort = &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_PROTOCOL_DEFAULT}
	default:
		rd.RedirectPort = &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_REQUEST_PORT}
	}
	if p := f.Path; p != nil && p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil {
		rd.Uri = *p.ReplaceFullPath
	}
	return rd
}

// destination resolves a backend reference of route r to an Istio
// destination: a Service as <name>.<namespace>.svc.<suffix>. It reports
// and returns nil for a reference Weft cannot follow or is not permitted
// to (another namespace without a ReferenceGrant there).
func (t *translator) destination(r *HTTPRoute, path string, b gwv1.BackendObjectReference) *networking.Destination {
	if b.Group != nil && *b.Group == istioNetworkingGroup && b.Kind != nil {
		return t.istioDestination(r, path, b)
	}
	if !isServiceRef(b.Group, b.Kind) {
		msg := "Weft routes to Services, ServiceEntries and hostnames only (group \"\", kind Service; group networking.istio.io, kind ServiceEntry or Hostname); requests for this backend are answered 500"
		t.diags = append(t.diags, resourceDiag(r, SeverityError, CodeRefNotPermitted, path, msg))
		t.status.refs(r, gwv1.RouteReasonInvalidKind, path+": "+msg)
		return nil
	}
	ns := r.Namespace
	if b.Namespace != nil && string(*b.Namespace) != "" {
		ns = string(*b.Namespace)
	}
	if ns != r.Namespace && !t.granted(string(r.Kind), r.Namespace, ns, string(b.Name)) && !isParentService(r, ns, string(b.Name)) {
		msg := fmt.Sprintf("Service %s/%s is in another namespace and no ReferenceGrant there permits %ss of namespace %s to refer to it; requests for this backend are answered 500", ns, b.Name, r.Kind, r.Namespace)
		t.diags = append(t.diags, resourceDiag(r, SeverityError, CodeRefNotPermitted, path, msg))
		t.status.refs(r, gwv1.RouteReasonRefNotPermitted, path+": "+msg)
		return nil
	}
	d := &networking.Destination{Host: fmt.Sprintf("%s.%s.svc.%s", b.Name, ns, t.suffix)}
	if b.Port != nil {
		d.Port = &networking.PortSelector{Number: uint32(*b.Port)}
	}
	if t.knownHost != nil && !t.knownHost(d.Host) && !t.serviceEntryHost(d.Host) {
		// Routed all the same: the Service may come; until it does,
		// its requests are answered 500, as the Gateway API says.
		msg := fmt.Sprintf("Service %s/%s does not exist; requests for this backend are answered 500 until it does", ns, b.Name)
		t.diags = append(t.diags, resourceDiag(r, SeverityWarning, CodeUnknownHost, path, msg))
		t.status.refs(r, gwv1.RouteReasonBackendNotFound, path+": "+msg)
	}
	return d
}

// serviceEntryHost reports whether a ServiceEntry declares host.
func (t *translator) serviceEntryHost(host string) bool {
	for _, se := range t.snap.ServiceEntries {
		for _, h := range se.Spec.GetHosts() {
			if registry.ResolveHost(h, se.Namespace, t.suffix, nil) == host {
				return true
			}
		}
	}
	return false
}

// granted reports whether a ReferenceGrant in namespace to lets routes
// of kind (HTTPRoute, GRPCRoute) of namespace from refer to the Service
// name.
func (t *translator) granted(kind, from, to, name string) bool {
	return t.grantedKind(kind, from, to, "Service", name)
}

// grantedKind reports whether a ReferenceGrant in namespace to lets
// objects of kind (a Gateway API kind) of namespace from refer to the
// core object of kind toKind (Service, Secret) called name.
func (t *translator) grantedKind(kind, from, to, toKind, name string) bool {
	for _, g := range t.snap.ReferenceGrants {
		if g.Namespace != to {
			continue
		}
		okFrom := slices.ContainsFunc(g.Spec.From, func(f gwv1.ReferenceGrantFrom) bool {
			return f.Group == gatewayAPIGroup && string(f.Kind) == kind && string(f.Namespace) == from
		})
		okTo := slices.ContainsFunc(g.Spec.To, func(t gwv1.ReferenceGrantTo) bool {
			return (t.Group == "" || t.Group == "core") && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == name)
		})
		if okFrom && okTo {
			return true
		}
	}
	return false
}

// grpcAsHTTP is a GRPCRoute as the HTTPRoute it means, as Istio
// translates it: a gRPC call is an HTTP/2 POST of /<service>/<method>,
// so a method match is a path match (an exact service and method the
// exact path, a service alone the prefix /<service>/, a method alone or
// regular expressions a regular expression of the path). The result
// keeps the GRPCRoute's kind, name and positions, and its rules, matches
// and filters keep their indexes, so diagnostics name the GRPCRoute's
// own fields.
func grpcAsHTTP(g *GRPCRoute) *HTTPRoute {
	spec := &gwv1.HTTPRouteSpec{CommonRouteSpec: g.Spec.CommonRouteSpec, Hostnames: g.Spec.Hostnames}
	for _, r := range g.Spec.Rules {
		hr := gwv1.HTTPRouteRule{Filters: grpcFilters(r.Filters), SessionPersistence: r.SessionPersistence}
		for _, m := range r.Matches {
			hm := gwv1.HTTPRouteMatch{Path: grpcPath(m.Method)}
			for _, h := range m.Headers {
				var typ *gwv1.HeaderMatchType
				if h.Type != nil {
					t := gwv1.HeaderMatchType(*h.Type)
					typ = &t
				}
				hm.Headers = append(hm.Headers, gwv1.HTTPHeaderMatch{Type: typ, Name: gwv1.HTTPHeaderName(h.Name), Value: h.Value})
			}
			hr.Matches = append(hr.Matches, hm)
		}
		for _, b := range r.BackendRefs {
			hr.BackendRefs = append(hr.BackendRefs, gwv1.HTTPBackendRef{BackendRef: b.BackendRef, Filters: grpcFilters(b.Filters)})
		}
		spec.Rules = append(spec.Rules, hr)
	}
	return &HTTPRoute{Meta: g.Meta, Spec: spec, Annotations: g.Annotations, Pos: g.Pos}
}

// l4Rule is a rule of a TCPRoute or a TLSRoute.
type l4Rule interface {
	gwv1.TCPRouteRule | gwv1.TLSRouteRule
}

// l4AsHTTP is a TCPRoute or TLSRoute as an HTTPRoute whose one rule
// has the route's backends and no match, so that it attaches, resolves
// its backends and reports as any route; l4VirtualServices turns it into
// tcp or tls routes.
func l4AsHTTP[T any, R l4Rule](r *Resource[T], common gwv1.CommonRouteSpec, hostnames []gwv1.Hostname, rules []R) *HTTPRoute {
	spec := &gwv1.HTTPRouteSpec{CommonRouteSpec: common, Hostnames: hostnames}
	for _, rule := range rules {
		var refs []gwv1.BackendRef
		switch x := any(rule).(type) {
		case gwv1.TCPRouteRule:
			refs = x.BackendRefs
		case gwv1.TLSRouteRule:
			refs = x.BackendRefs
		}
		hr := gwv1.HTTPRouteRule{}
		for _, b := range refs {
			hr.BackendRefs = append(hr.BackendRefs, gwv1.HTTPBackendRef{BackendRef: b})
		}
		spec.Rules = append(spec.Rules, hr)
	}
	return &HTTPRoute{Meta: r.Meta, Spec: spec, Annotations: r.Annotations, Pos: r.Pos}
}

// l4VirtualServices are the VirtualServices of a TCP or TLS listener:
// per host, the routes attached to it as tcp routes (matching the
// listener's port) or tls routes (matching the host as SNI), oldest
// route first. A route with no backend Weft may use is left out: a
// connection has no 500 to answer.
func (t *translator) l4VirtualServices(l *listener) []*VirtualService {
	var out []*VirtualService
	for _, host := range l.hosts {
		rs := slices.Clone(l.routes[host])
		slices.SortStableFunc(rs, func(a, b *ruleRoute) int { return comparePrecedence(a.key, b.key) })
		vs := &networking.VirtualService{Hosts: []string{host}, Gateways: []string{l.gateway.Namespace + "/" + l.gateway.Name}}
		for _, r := range rs {
			var dests []*networking.RouteDestination
			for _, d := range r.h.GetRoute() {
				dests = append(dests, &networking.RouteDestination{Destination: d.Destination, Weight: d.Weight})
			}
			if len(dests) == 0 {
				continue
			}
			port := uint32(l.l.Port)
			if l.l.Protocol == gwv1.TCPProtocolType || l.gateway.Spec.Servers[0].GetTls().GetMode() == networking.ServerTLSSettings_SIMPLE {
				// A TCP listener, or a TLS one that terminates: the
				// stream (decrypted) goes along tcp routes.
				vs.Tcp = append(vs.Tcp, &networking.TCPRoute{Match: []*networking.L4MatchAttributes{{Port: port}}, Route: dests})
			} else {
				vs.Tls = append(vs.Tls, &networking.TLSRoute{Match: []*networking.TLSMatchAttributes{{SniHosts: []string{host}, Port: port}}, Route: dests})
			}
		}
		if len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
			continue
		}
		meta := l.gateway.Meta
		meta.Kind = KindVirtualService
		meta.Name = generatedVirtualServiceName(l.gateway.Name, host)
		out = append(out, &VirtualService{Meta: meta, Spec: vs, Annotations: l.gateway.Annotations})
	}
	return out
}

// grpcPath is the path match of a gRPC method match; nil matches every
// call.
func grpcPath(m *gwv1.GRPCMethodMatch) *gwv1.HTTPPathMatch {
	if m == nil || (m.Service == nil && m.Method == nil) {
		return nil
	}
	pm := func(t gwv1.PathMatchType, v string) *gwv1.HTTPPathMatch {
		return &gwv1.HTTPPathMatch{Type: &t, Value: &v}
	}
	service, method := "[^/]+", "[^/]+"
	if m.Type != nil && *m.Type == gwv1.GRPCMethodMatchRegularExpression {
		if m.Service != nil {
			service = *m.Service
		}
		if m.Method != nil {
			method = *m.Method
		}
		return pm(gwv1.PathMatchRegularExpression, "/"+service+"/"+method)
	}
	switch {
	case m.Service != nil && m.Method != nil:
		return pm(gwv1.PathMatchExact, "/"+*m.Service+"/"+*m.Method)
	case m.Service != nil:
		return pm(gwv1.PathMatchPathPrefix, "/"+*m.Service)
	}
	return pm(gwv1.PathMatchRegularExpression, "/"+service+"/"+regexp.QuoteMeta(*m.Method))
}
