package generate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// Sharing between proxies.
//
// Most of what a proxy is sent does not depend on the proxy: an outbound
// cluster depends only on whether the proxy speaks mutual TLS, a
// ClusterLoadAssignment only on the proxy's locality (and its labels, for
// failoverPriority), the outbound routes and the virtual outbound listener
// on what the proxy sees (its Sidecar scope), its namespace, and its labels
// only when some VirtualService matches on sourceLabels. Each such resource
// is built once per mesh snapshot and key (mesh.Snapshot.Memo) and the same
// value is handed to every proxy that shares the key: generation cost and
// memory grow with the distinct resources of the mesh, not with proxies ×
// resources. Values handed out this way are shared: nobody may modify a
// resource ForProxy returns.

type clusterKey struct {
	mtls         bool
	gateway      bool // gatewayClusters
	host, subset string
	port         uint32
	// view is drView's Key: "" where the proxy's DestinationRules are
	// most namespaces'.
	view string
	// dns is what of the proxy a cluster resolved by DNS also reads: the
	// lookup family (its addresses) and its locality (withLocalityLB).
	dns string
}

type claKey struct {
	locality     string // "" when the proxy's locality does not matter
	host, subset string
	port         uint32
	view         string // as clusterKey's
}

// outboundKey is what a proxy's outbound routes and virtual outbound
// listener depend on.
type outboundKey struct {
	vis      *mesh.Visibility // interned per Sidecar and namespace
	ns       string
	labels   string // "" unless a VirtualService matches on sourceLabels
	captured bool
	// telemetry names the Telemetry resources that apply (their access
	// logs are in the virtual outbound listener's connection managers).
	telemetry string
	// view is drView's Key: the DestinationRules the routes' hash
	// policies and the TCP proxies' timeouts come from.
	view string
}

type sourceLabelsKey struct{}

type failoverPriorityKey struct{}

// clusterListKey and claListKey key a proxy's whole outbound cluster and
// endpoint lists, sorted by name.
type clusterListKey struct {
	mtls    bool
	gateway bool // gatewayClusters
	vis     *mesh.Visibility
	view    string // as clusterKey's
	// dns is the proxy's DNS lookup family and locality when the mesh has
	// services resolved by DNS (their clusters read them), else "".
	dns string
}

type hasDNSKey struct{}

type claListKey struct {
	vis      *mesh.Visibility
	locality string
	view     string // as clusterKey's
	labels   string // "" unless a DestinationRule uses failoverPriority
}

// sharedOutboundClusters is outboundClusters sorted by name, shared by
// the proxies with the same mTLS capability and scope (and DNS lookup
// family and locality, when some service is resolved by DNS). Read only.
func sharedOutboundClusters(s *mesh.Snapshot, id contract.Identity) []types.Resource {
	k := clusterListKey{mtls: id.MTLS, gateway: gatewayClusters(s, id), vis: scopeOf(s, id), view: drView(s, id).Key}
	if hasDNSServices(s) {
		k.dns = dnsLookupFamily(id.IPs).String() + "\x00" + id.Locality
	}
	return s.Memo(k, func() any {
		cs := outboundClusters(s, id)
		sortByName(cs)
		return cs
	}).([]types.Resource)
}

// sharedOutboundEndpoints is outboundEndpoints sorted by name, shared by
// the proxies with the same scope and locality (and labels, where a
// DestinationRule's failoverPriority reads them). Read only.
func sharedOutboundEndpoints(s *mesh.Snapshot, id contract.Identity) []types.Resource {
	k := claListKey{vis: scopeOf(s, id), locality: id.Locality, view: drView(s, id).Key}
	if id.Locality != "" && usesFailoverPriority(s) {
		k.labels = labelsKey(id.Labels)
	}
	return s.Memo(k, func() any {
		es := outboundEndpoints(s, id)
		sortByName(es)
		return es
	}).([]types.Resource)
}

type clusterLazyListKey struct{ clusterListKey }

// sharedOutboundClustersLazy is sharedOutboundClusters as Lazy
// resources: none of them is built here.
func sharedOutboundClustersLazy(s *mesh.Snapshot, id contract.Identity) []Lazy {
	_, cs := sharedOutboundClustersLazyKeyed(s, id)
	return cs
}

// sharedOutboundClustersLazyKeyed is sharedOutboundClustersLazy with the
// list's key (Parts.LazyKey). After an endpoint change the list is the
// one before with the Keys of the clusters whose endpoints changed
// brought up to date (rekeyLazy), not made anew: at 1,000 services, 3,000
// entries cost ~5 ms a change to list, sort and key.
func sharedOutboundClustersLazyKeyed(s *mesh.Snapshot, id contract.Identity) (any, []Lazy) {
	k := clusterListKey{mtls: id.MTLS, gateway: gatewayClusters(s, id), vis: scopeOf(s, id), view: drView(s, id).Key}
	if hasDNSServices(s) {
		k.dns = dnsLookupFamily(id.IPs).String() + "\x00" + id.Locality
	}
	key := clusterLazyListKey{k}
	return key, s.MemoDerive(key, func(prev any, changed func(string, uint32) bool) any {
		return rekeyLazy(s, prev.([]Lazy), changed)
	}, func() any {
		cs := outboundClustersLazy(s, id)
		slices.SortStableFunc(cs, func(a, b Lazy) int { return strings.Compare(a.Name, b.Name) })
		return cs
	}).([]Lazy)
}

type claLazyListKey struct{ claListKey }

// sharedOutboundEndpointsLazy is sharedOutboundEndpoints as Lazy
// resources: none of them is built here.
func sharedOutboundEndpointsLazy(s *mesh.Snapshot, id contract.Identity) []Lazy {
	_, es := sharedOutboundEndpointsLazyKeyed(s, id)
	return es
}

// sharedOutboundEndpointsLazyKeyed is sharedOutboundEndpointsLazy with
// the list's key, brought up to date over an endpoint change as
// sharedOutboundClustersLazyKeyed's.
func sharedOutboundEndpointsLazyKeyed(s *mesh.Snapshot, id contract.Identity) (any, []Lazy) {
	k := claListKey{vis: scopeOf(s, id), locality: id.Locality, view: drView(s, id).Key}
	if id.Locality != "" && usesFailoverPriority(s) {
		k.labels = labelsKey(id.Labels)
	}
	key := claLazyListKey{k}
	return key, s.MemoDerive(key, func(prev any, changed func(string, uint32) bool) any {
		return rekeyLazy(s, prev.([]Lazy), changed)
	}, func() any {
		es := outboundEndpointsLazy(s, id)
		slices.SortStableFunc(es, func(a, b Lazy) int { return strings.Compare(a.Name, b.Name) })
		return es
	}).([]Lazy)
}

// rekeyLazy brings a list of outbound clusters or load assignments made
// in an earlier snapshot up to date for s, which differs from it in
// endpoints only: the same entries (the services, their ports, scopes
// and subsets are the same), each keyed by its sharing key and the
// digest of its service port's endpoints (lazyClusterKey, lazyCLAKey),
// the digest taken anew where changed says the endpoints changed. The
// builders read the snapshot they are given, so they are kept. prev is
// returned as it is when nothing in it changed.
func rekeyLazy(s *mesh.Snapshot, prev []Lazy, changed func(host string, port uint32) bool) []Lazy {
	var out []Lazy
	for i, l := range prev {
		var key any
		switch k := l.Key.(type) {
		case lazyClusterKey:
			if !changed(k.host, k.port) {
				continue
			}
			k.eps = s.EndpointsDigest(k.host, k.port)
			key = k
		case lazyCLAKey:
			if !changed(k.host, k.port) {
				continue
			}
			k.eps = s.EndpointsDigest(k.host, k.port)
			key = k
		default:
			panic(fmt.Sprintf("generate: rekeyLazy: %s has a key of type %T", l.Name, l.Key))
		}
		if out == nil {
			out = slices.Clone(prev)
		}
		out[i].Key = key
	}
	if out == nil {
		return prev
	}
	return out
}

// hasDNSServices reports whether some service of s is resolved by DNS.
func hasDNSServices(s *mesh.Snapshot) bool {
	return s.Memo(hasDNSKey{}, func() any {
		for _, svc := range s.Registry.Services() {
			if svc.Resolution.ResolvedByDNS() {
				return true
			}
		}
		return false
	}).(bool)
}

// usesFailoverPriority reports whether any DestinationRule of s sets a
// locality failoverPriority, the only way a proxy's labels reach its
// endpoints.
func usesFailoverPriority(s *mesh.Snapshot) bool {
	return s.Memo(failoverPriorityKey{}, func() any {
		for _, dr := range s.Config.DestinationRules {
			tps := []*networking.TrafficPolicy{dr.Spec.GetTrafficPolicy()}
			for _, sub := range dr.Spec.GetSubsets() {
				tps = append(tps, sub.GetTrafficPolicy())
			}
			for _, tp := range tps {
				if len(tp.GetLoadBalancer().GetLocalityLbSetting().GetFailoverPriority()) > 0 {
					return true
				}
				for _, pl := range tp.GetPortLevelSettings() {
					if len(pl.GetLoadBalancer().GetLocalityLbSetting().GetFailoverPriority()) > 0 {
						return true
					}
				}
			}
		}
		return false
	}).(bool)
}

type credentialDRKey struct{}

// gatewayClusters reports whether id's outbound clusters differ from a
// sidecar's of the same scope: a gateway's do when a DestinationRule of
// the mesh names a credentialName (gateways originate TLS with it,
// sidecars do not). Otherwise gateways share the sidecars' lists.
func gatewayClusters(s *mesh.Snapshot, id contract.Identity) bool {
	if !id.Router() {
		return false
	}
	return s.Memo(credentialDRKey{}, func() any {
		uses := func(t *networking.ClientTLSSettings) bool {
			cn := t.GetCredentialName()
			return cn != "" && !strings.HasPrefix(cn, "configmap://")
		}
		for _, dr := range s.Config.DestinationRules {
			tps := []*networking.TrafficPolicy{dr.Spec.GetTrafficPolicy()}
			for _, sub := range dr.Spec.GetSubsets() {
				tps = append(tps, sub.GetTrafficPolicy())
			}
			for _, tp := range tps {
				if uses(tp.GetTls()) {
					return true
				}
				for _, pl := range tp.GetPortLevelSettings() {
					if uses(pl.GetTls()) {
						return true
					}
				}
			}
		}
		return false
	}).(bool)
}

// mergeSorted merges two lists sorted by name into a new one.
func mergeSorted(a, b []types.Resource) []types.Resource {
	out := make([]types.Resource, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if cache.GetResourceName(b[0]) < cache.GetResourceName(a[0]) {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

type outboundSet struct {
	listener *listener.Listener
	routes   []types.Resource
}

// Carrying over between snapshots.
//
// When a snapshot differs from the one before only in endpoints
// (mesh.BuildFrom), what does not read endpoints is carried over as it is
// (the outbound routes and listeners, the service routes), and what does
// is carried over when what it read is unchanged: an outbound cluster
// reads its endpoints' service accounts (the SANs it verifies), a
// ClusterLoadAssignment its endpoints. Clusters and load assignments do
// not read VirtualServices: they are carried over a change of those too
// (MemoCarryRoutes), so a route edit re-encodes the routes, not the
// thousands of clusters beside them. A carried resource keeps its
// identity, so its encoding is carried too (internal/xds/server). An
// endpoint change in a mesh of thousands of services so rebuilds the
// load assignments of one service, not of all of them.

// carriedCluster is a shared cluster, carriedCLA a shared load
// assignment, with the digest of the service port's endpoints they were
// built from (mesh.Snapshot.EndpointsDigest).
type carriedCluster struct {
	c   *cluster.Cluster
	eps uint64
}

type carriedCLA struct {
	cla *endpoint.ClusterLoadAssignment
	eps uint64
}

// clusterKeyOf is what an outbound cluster of the proxy id is shared by.
func clusterKeyOf(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port, subset string) clusterKey {
	k := clusterKey{mtls: id.MTLS, gateway: gatewayClusters(s, id), host: svc.Hostname, port: p.Number, subset: subset, view: drView(s, id).Key}
	if svc.Resolution.ResolvedByDNS() {
		k.dns = dnsLookupFamily(id.IPs).String() + "\x00" + localityKey(s, id, svc.Hostname, p.Number, subset)
	}
	return k
}

func sharedCluster(s *mesh.Snapshot, k clusterKey, build func() *cluster.Cluster) *cluster.Cluster {
	eps := s.EndpointsDigest(k.host, k.port) // the SANs read its endpoints' service accounts
	return s.MemoCarryRoutes(k, func(prev any) bool { return prev.(carriedCluster).eps == eps }, func() any {
		return carriedCluster{c: build(), eps: eps}
	}).(carriedCluster).c
}

// lazyClusterKey is the Key of a lazy outbound cluster, as lazyCLAKey.
type lazyClusterKey struct {
	clusterKey
	eps uint64
}

// claKeyOf is what a load assignment of the proxy id is shared by.
func claKeyOf(s *mesh.Snapshot, id contract.Identity, host string, port uint32, subset string) claKey {
	return claKey{locality: localityKey(s, id, host, port, subset), host: host, port: port, subset: subset, view: drView(s, id).Key}
}

func sharedCLA(s *mesh.Snapshot, k claKey, build func() *endpoint.ClusterLoadAssignment) *endpoint.ClusterLoadAssignment {
	eps := s.EndpointsDigest(k.host, k.port)
	return s.MemoCarryRoutes(k, func(prev any) bool { return prev.(carriedCLA).eps == eps }, func() any {
		return carriedCLA{cla: build(), eps: eps}
	}).(carriedCLA).cla
}

// lazyCLAKey is the Key of a lazy load assignment: the assignment is
// the same as long as its sharing key and the digest of its service
// port's endpoints are (as sharedCLA carries it over), within a mesh
// snapshot and the ones MemoCarryRoutes carries over from it.
type lazyCLAKey struct {
	claKey
	eps uint64
}

// localityKey is what of the proxy withLocalityLB reads for this cluster.
func localityKey(s *mesh.Snapshot, id contract.Identity, host string, port uint32, subset string) string {
	if id.Locality == "" {
		return ""
	}
	policy := mergedTrafficPolicy(s, drView(s, id), host, port, subset)
	l, force := effectiveLocalityLB(s, host, policy.GetLoadBalancer())
	switch {
	case l == nil:
		return ""
	case len(l.GetDistribute()) > 0:
		return id.Locality
	case !force && policy.GetOutlierDetection() == nil:
		return "" // no failover: nothing of the proxy is read
	case len(l.GetFailoverPriority()) > 0:
		// Only the labels failoverPriority names are read (with the
		// locality's), so proxies that differ in others share.
		pl := localityLabels(id.Labels, id.Locality)
		var b strings.Builder
		b.WriteString(id.Locality)
		for _, k := range l.GetFailoverPriority() {
			b.WriteByte(0)
			b.WriteString(pl[k])
		}
		return b.String()
	}
	return id.Locality
}

func keyOf(s *mesh.Snapshot, id contract.Identity) outboundKey {
	k := outboundKey{vis: scopeOf(s, id), ns: id.Namespace, captured: id.Captured(),
		telemetry: s.Telemetry.For(id.Namespace, id.Labels).Key(), view: drView(s, id).Key}
	if usesSourceLabels(s) {
		k.labels = labelsKey(id.Labels)
	}
	return k
}

// sharedVirtualOutbound is virtualOutboundListener, shared.
func sharedVirtualOutbound(s *mesh.Snapshot, id contract.Identity) (*listener.Listener, []types.Resource) {
	set := s.MemoCarry(keyOf(s, id), nil, func() any {
		l, rcs := virtualOutboundListener(s, id)
		return &outboundSet{listener: l, routes: rcs}
	}).(*outboundSet)
	return set.listener, slices.Clone(set.routes)
}

// sharedOutboundRoutes is outboundRoutes, shared.
func sharedOutboundRoutes(s *mesh.Snapshot, id contract.Identity) *route.RouteConfiguration {
	return s.MemoCarry(keyOf(s, id), nil, func() any { return outboundRoutes(s, id) }).(*route.RouteConfiguration)
}

// usesSourceLabels reports whether any VirtualService of s matches on
// sourceLabels, the only way a proxy's labels reach its outbound routes.
func usesSourceLabels(s *mesh.Snapshot) bool {
	return s.Memo(sourceLabelsKey{}, func() any {
		for _, vs := range s.Config.VirtualServices {
			for _, r := range vs.Spec.GetHttp() {
				for _, m := range r.GetMatch() {
					if len(m.GetSourceLabels()) > 0 {
						return true
					}
				}
			}
			for _, r := range vs.Spec.GetTcp() { // tcproute.go
				for _, m := range r.GetMatch() {
					if len(m.GetSourceLabels()) > 0 {
						return true
					}
				}
			}
			for _, r := range vs.Spec.GetTls() {
				for _, m := range r.GetMatch() {
					if len(m.GetSourceLabels()) > 0 {
						return true
					}
				}
			}
		}
		return false
	}).(bool)
}

// labelsKey is labels as one comparable string, in key order.
func labelsKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// serviceRoutesKey keys a service port's outbound routes. ns is set when
// the VirtualService of the host depends on the client's namespace
// (exportTo) or matches on the client, labels only in the second case.
type serviceRoutesKey struct {
	host   string
	port   uint32
	ns     string
	labels string
	view   string // drView's Key
}

type clientMatchKey struct{ host, ns string }

// sharedServiceRoutes is serviceRoutes, built once per snapshot for all
// the proxies whose routes to the service port cannot differ: every proxy,
// unless the VirtualService of the host depends on the client's namespace
// (exportTo: then the proxies of one namespace) or matches on the client
// (sourceNamespace, sourceLabels: then the proxies of one namespace and
// labels). Without it, every namespace's route configuration rebuilt every
// service's routes. Read only.
func sharedServiceRoutes(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port) []*route.Route {
	return s.MemoCarry(serviceRoutesKeyOf(s, id, svc, p), nil, func() any {
		rs := serviceRoutes(s, id, svc, p)
		decorateRoutes(s, svc, p.Number, rs) // tracing.go: span names, when the mesh traces
		return rs
	}).([]*route.Route)
}

// serviceRoutesKeyOf is what the routes of a service port are shared by
// (sharedServiceRoutes).
func serviceRoutesKeyOf(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port) serviceRoutesKey {
	k := serviceRoutesKey{host: svc.Hostname, port: p.Number}
	if s.Routes.DependsOnNamespace(svc.Hostname) {
		k.ns = id.Namespace
	}
	// The DestinationRules whose hash policies the routes carry may
	// differ for this namespace or these labels.
	k.view = drView(s, id).Key
	if routesMatchClient(s, svc.Hostname, k.ns) {
		k.ns, k.labels = id.Namespace, labelsKey(id.Labels)
	}
	return k
}

// Carrying virtual hosts over a route change.
//
// A change to one VirtualService changes the routes of the hosts it
// names, not of the other thousand: every outbound route configuration
// is built again (which virtual hosts a proxy has and their domains may
// change with the VirtualServices, through its scope), but a virtual host
// whose domains and routes are what they were keeps its Key (Lazy), so a
// server that keeps encodings under Keys, carried with MemoCarryRoutes,
// encodes only the changed ones. Without it, a change to one service's
// routes re-encoded ~10,000 virtual hosts at 1,000 services in 10
// namespaces (0.3 CPU-s of a change's ~1).
//
// The routes of a service port read, of what a route change may change,
// only the VirtualService that routes its host for the proxy
// (RouteIndex.ForHostIn); everything else they read (services,
// DestinationRules, tracing, rate limits) is the same in every snapshot
// MemoCarryRoutes carries over from. routesToken stands for them: one
// per serviceRoutesKey and snapshot, carried over while that
// VirtualService is the same.

// routesToken identifies the routes of a service port across the
// snapshots it is carried over: the VirtualServices they were built from
// (namespace and spec; the spec is the store's decoded value, the same
// pointer while its document is unchanged).
type routesToken struct {
	vss []routesFrom
}

type routesFrom struct {
	ns   string
	spec *networking.VirtualService
}

// same reports whether vss are the VirtualServices t was made from.
func (t *routesToken) same(vss []*config.VirtualService) bool {
	if len(vss) != len(t.vss) {
		return false
	}
	for i, vs := range vss {
		f := t.vss[i]
		if vs.Namespace != f.ns || vs.Spec != f.spec && !proto.Equal(vs.Spec, f.spec) {
			return false
		}
	}
	return true
}

type routesTokenKey struct{ serviceRoutesKey }

// serviceRoutesToken is the routesToken of the routes sharedServiceRoutes
// gives the proxy id for svc's port p.
func serviceRoutesToken(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port) *routesToken {
	k := serviceRoutesKeyOf(s, id, svc, p)
	vss := s.Routes.ForHostIn(svc.Hostname, id.Namespace)
	return s.MemoCarryRoutes(routesTokenKey{k}, func(prev any) bool { return prev.(*routesToken).same(vss) }, func() any {
		t := &routesToken{vss: make([]routesFrom, len(vss))}
		for i, vs := range vss {
			t.vss[i] = routesFrom{vs.Namespace, vs.Spec}
		}
		return t
	}).(*routesToken)
}

// vhostKey is the Key of a virtual host a proxy takes by VHDS
// (splitVirtualHosts) when it is an outbound service port's
// (outboundVirtualHosts): its name, its domains and its routes are all
// it holds.
type vhostKey struct {
	name    string // contract.VirtualHostName
	domains string // joined by NUL
	routes  *routesToken
}

// outboundVHostKey is the vhostKey of vh, a virtual host of route
// configuration rc of the proxy id, or nil when vh is not an outbound
// service port's with the routes sharedServiceRoutes gives (then it has
// no Key: it is encoded again in every snapshot).
func outboundVHostKey(s *mesh.Snapshot, id contract.Identity, rc string, vh *route.VirtualHost) any {
	if id.Router() || len(vh.GetRoutes()) == 0 {
		return nil
	}
	i := strings.LastIndexByte(vh.GetName(), ':')
	if i < 0 {
		return nil
	}
	host := vh.GetName()[:i]
	n, err := strconv.ParseUint(vh.GetName()[i+1:], 10, 32)
	if err != nil {
		return nil
	}
	svc := s.Registry.Service(host)
	if svc == nil {
		return nil
	}
	p, found := svc.Port(uint32(n))
	if !found {
		return nil
	}
	rs := sharedServiceRoutes(s, id, svc, p)
	if len(rs) != len(vh.Routes) || &rs[0] != &vh.Routes[0] {
		return nil // not the shared routes: something else made vh
	}
	return vhostKey{
		name:    contract.VirtualHostName(rc, vh.GetName()),
		domains: strings.Join(vh.GetDomains(), "\x00"),
		routes:  serviceRoutesToken(s, id, svc, p),
	}
}

// routesMatchClient reports whether the VirtualService of host for the
// sidecars of ns has a match on the client's namespace or labels (ns ""
// when the VirtualService of host is the same in every namespace).
func routesMatchClient(s *mesh.Snapshot, host, ns string) bool {
	return s.Memo(clientMatchKey{host, ns}, func() any {
		for _, vs := range s.Routes.ForHostIn(host, ns) {
			for _, h := range vs.Spec.GetHttp() {
				for _, m := range h.GetMatch() {
					if m.GetSourceNamespace() != "" || len(m.GetSourceLabels()) > 0 {
						return true
					}
				}
			}
		}
		return false
	}).(bool)
}
