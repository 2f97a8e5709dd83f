package server

import (
	"context"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// deltaServices are the services of deltaMesh, each on a port of its own.
var deltaServices = []string{"reviews", "ratings", "details"}

// deltaMesh has three services with two endpoints each, plus extra
// endpoints for ratings, and a VirtualService for reviews with the given
// timeout.
func deltaMesh(version uint64, extraRatings int, reviewsTimeout time.Duration) *mesh.Snapshot {
	return deltaMeshOf(deltaServices, version, extraRatings, reviewsTimeout)
}

// deltaMeshOf is deltaMesh with the first services of deltaServices only.
func deltaMeshOf(names []string, version uint64, extraRatings int, reviewsTimeout time.Duration) *mesh.Snapshot {
	var svcs []*registry.Service
	var eps []*registry.Endpoint
	for i, name := range names {
		h := name + ".default.svc.cluster.local"
		port := uint32(9080 + i)
		svcs = append(svcs, &registry.Service{Hostname: h, Namespace: "default",
			Ports: []registry.Port{{Name: "http", Number: port, Protocol: registry.HTTP}}})
		n := 2
		if name == "ratings" {
			n += extraRatings
		}
		for j := range n {
			eps = append(eps, &registry.Endpoint{ServiceHostname: h, ServicePort: port,
				Address: net.IPv4(10, byte(i), 0, byte(j+1)).String(), Port: 8080, Labels: map[string]string{"app": name}})
		}
	}
	vs := &config.VirtualService{
		Meta: config.Meta{Kind: config.KindVirtualService, Namespace: "default", Name: "reviews"},
		Spec: &networking.VirtualService{
			Hosts: []string{"reviews.default.svc.cluster.local"},
			Http: []*networking.HTTPRoute{{
				Timeout: durationpb.New(reviewsTimeout),
				Route:   []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews.default.svc.cluster.local"}}},
			}},
		},
	}
	return mesh.New(&config.Snapshot{Version: version, VirtualServices: []*config.VirtualService{vs}},
		registry.NewSnapshot(svcs, eps), "")
}

// deltaClient is a minimal delta ADS client: it subscribes as weft-proxy
// does (wildcard CDS and LDS, EDS and RDS by name), ACKs every response
// and keeps the version of every resource it holds.
type deltaClient struct {
	t        *testing.T
	stream   discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node     *core.Node
	nodeSent bool
	have     map[string]map[string]string // type -> name -> version
}

func dialDelta(t *testing.T, ctx context.Context, addr string, node *core.Node) *deltaClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]map[string]string{}
	for _, typ := range typeOrder {
		have[typ] = map[string]string{}
	}
	return &deltaClient{t: t, stream: stream, node: node, have: have}
}

func (c *deltaClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if !c.nodeSent {
		req.Node, c.nodeSent = c.node, true
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", req.GetTypeUrl(), err)
	}
}

// subscribe opens a type's subscription, announcing the versions held.
func (c *deltaClient) subscribe(typeURL string, names []string, initial map[string]string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names, InitialResourceVersions: initial})
}

// next receives a response, takes it in, ACKs it and returns it.
func (c *deltaClient) next() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	r, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	for _, res := range r.GetResources() {
		c.have[r.GetTypeUrl()][res.GetName()] = res.GetVersion()
	}
	for _, n := range r.GetRemovedResources() {
		delete(c.have[r.GetTypeUrl()], n)
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	return r
}

// expect receives the next response and checks its type and the names it
// carries.
func (c *deltaClient) expect(typeURL string, names ...string) *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	r := c.next()
	var got []string
	for _, res := range r.GetResources() {
		got = append(got, res.GetName())
	}
	slices.Sort(got)
	slices.Sort(names)
	if r.GetTypeUrl() != typeURL || !slices.Equal(got, names) {
		c.t.Fatalf("got a %s response with %q (removed %q), want a %s response with %q",
			r.GetTypeUrl(), got, r.GetRemovedResources(), typeURL, names)
	}
	return r
}

// sync subscribes to everything and takes in the first responses: CDS,
// then EDS for its clusters, LDS, then RDS for the listeners' routes.
func (c *deltaClient) sync() {
	c.t.Helper()
	c.subscribe(resource.ClusterType, []string{"*"}, nil)
	c.subscribe(resource.ListenerType, []string{"*"}, nil)
	for range 2 {
		c.next()
	}
	if len(c.have[resource.ClusterType]) == 0 || len(c.have[resource.ListenerType]) == 0 {
		c.t.Fatalf("first responses were not CDS and LDS: %v", c.have)
	}
	c.subscribe(resource.EndpointType, edsNamesOf(c.t, c.have), nil)
	c.next()
	c.subscribe(resource.RouteType, []string{contract.RouteHTTPProxy}, nil)
	c.next()
	vhds := slices.Contains(c.node.GetClientFeatures(), contract.FeatureVHDS)
	if vhds {
		c.subscribe(resource.VirtualHostType, []string{"*"}, nil)
		c.next()
	}
	for _, typ := range typeOrder {
		if len(c.have[typ]) == 0 && (typ != resource.VirtualHostType || vhds) && typ != resource.SecretType {
			c.t.Fatalf("nothing received of %s", typ)
		}
	}
}

// edsNamesOf is the EDS clusters held; in this mesh every outbound
// service cluster is EDS.
func edsNamesOf(t *testing.T, have map[string]map[string]string) []string {
	t.Helper()
	var out []string
	for n := range have[resource.ClusterType] {
		if strings.HasPrefix(n, "outbound|") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func clusterName(svc string) string {
	port := 9080 + slices.Index(deltaServices, svc)
	return "outbound|" + strconv.Itoa(port) + "||" + svc + ".default.svc.cluster.local"
}

// TestDeltaSendsOnlyWhatChanged: on a delta stream, an endpoint change of
// one service sends only that service's ClusterLoadAssignment, and a
// change to one service's routes only the route configuration holding
// them; nothing else follows (each next response is the one the next
// change causes).
func TestDeltaSendsOnlyWhatChanged(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s.Update(deltaMesh(1, 0, time.Second))
	ctx := withDeadline(t)
	c := dialDelta(t, ctx, addr, client.Node())
	c.sync()
	if n := len(c.have[resource.EndpointType]); n != len(deltaServices) {
		t.Fatalf("%d assignments, want %d", n, len(deltaServices))
	}

	s.Update(deltaMesh(2, 1, time.Second)) // one more ratings endpoint
	eds := c.expect(resource.EndpointType, clusterName("ratings"))
	s.Update(deltaMesh(3, 1, 2*time.Second)) // reviews' timeout
	rds := c.expect(resource.RouteType, contract.RouteHTTPProxy)
	s.Update(deltaMesh(4, 2, 2*time.Second)) // the next response is EDS again: nothing came in between
	c.expect(resource.EndpointType, clusterName("ratings"))
	t.Logf("endpoint change: 1 assignment of %d, %d bytes; route change: 1 route configuration, %d bytes",
		len(deltaServices), proto.Size(eds), proto.Size(rds))
}

// TestDeltaReconnectGetsOnlyDifferences: a proxy reconnecting — to a
// control plane started anew — with initial_resource_versions for what it
// holds is sent only what changed meanwhile: empty CDS and LDS answers
// (the wildcard types always answer a new subscription), the one changed
// assignment, and no route configuration.
func TestDeltaReconnectGetsOnlyDifferences(t *testing.T) {
	ctx := withDeadline(t)
	s1, addr1 := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s1.Update(deltaMesh(1, 0, time.Second))
	sctx, cancel := context.WithCancel(ctx)
	c1 := dialDelta(t, sctx, addr1, client.Node())
	c1.sync()
	held := c1.have
	cancel()

	// Another control plane (a restart, or another replica), whose mesh
	// has one more ratings endpoint.
	s2, addr2 := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s2.Update(deltaMesh(2, 1, time.Second))
	c2 := dialDelta(t, ctx, addr2, client.Node())
	c2.have = map[string]map[string]string{}
	for typ, m := range held {
		c2.have[typ] = maps.Clone(m)
	}
	c2.subscribe(resource.ClusterType, []string{"*"}, maps.Clone(held[resource.ClusterType]))
	c2.subscribe(resource.ListenerType, []string{"*"}, maps.Clone(held[resource.ListenerType]))
	c2.subscribe(resource.EndpointType, edsNamesOf(t, held), maps.Clone(held[resource.EndpointType]))
	c2.subscribe(resource.RouteType, []string{contract.RouteHTTPProxy}, maps.Clone(held[resource.RouteType]))
	got := map[string]int{}
	for range 3 {
		r := c2.next()
		if len(r.GetRemovedResources()) > 0 {
			t.Errorf("%s: removed %q", r.GetTypeUrl(), r.GetRemovedResources())
		}
		got[r.GetTypeUrl()] += len(r.GetResources())
		if r.GetTypeUrl() == resource.EndpointType && (len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != clusterName("ratings")) {
			t.Errorf("EDS after reconnect: %d resources, want only ratings'", len(r.GetResources()))
		}
	}
	want := map[string]int{resource.ClusterType: 0, resource.ListenerType: 0, resource.EndpointType: 1}
	if !maps.Equal(got, want) {
		t.Errorf("resources after reconnect by type = %v, want %v", got, want)
	}
	// Nothing else is pending: the next response is the next change's.
	s2.Update(deltaMesh(3, 1, 3*time.Second))
	c2.expect(resource.RouteType, contract.RouteHTTPProxy)
}

// TestDeltaRemovesWhatIsGone: a service removed from the mesh is named in
// removed_resources of CDS and EDS (to a proxy subscribed to it).
func TestDeltaRemovesWhatIsGone(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s.Update(deltaMesh(1, 0, time.Second))
	ctx := withDeadline(t)
	c := dialDelta(t, ctx, addr, client.Node())
	c.sync()
	s.Update(deltaMeshOf(deltaServices[:2], 2, 0, time.Second)) // without details
	gone := "outbound|9082||details.default.svc.cluster.local"
	// CDS drops the cluster; the route configuration drops its virtual
	// host; EDS drops the assignment. Order: as the cache answers.
	seen := map[string]bool{}
	for !(seen[resource.ClusterType] && seen[resource.EndpointType]) {
		r := c.next()
		if slices.Contains(r.GetRemovedResources(), gone) {
			seen[r.GetTypeUrl()] = true
		}
		if r.GetTypeUrl() == resource.ClusterType && len(r.GetResources()) != 0 {
			t.Errorf("CDS resent %d unchanged clusters", len(r.GetResources()))
		}
	}
	if _, ok := c.have[resource.ClusterType][gone]; ok {
		t.Errorf("cluster %s still held", gone)
	}
}

// TestDeltaVHDSSendsOnlyTheChangedVirtualHost: a proxy that takes virtual
// hosts by VHDS gets http_proxy without them (vhds set) and each service's
// virtual host as a resource "http_proxy/<host>:<port>"; a change to one
// service's routes then sends that virtual host alone — not the route
// configuration — and what it sends is what the whole route
// configuration of a proxy without VHDS holds for the service.
func TestDeltaVHDSSendsOnlyTheChangedVirtualHost(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s.Update(deltaMesh(1, 0, time.Second))
	ctx := withDeadline(t)
	id := client
	id.VHDS = true
	c := dialDelta(t, ctx, addr, id.Node())
	c.sync()
	reviews := contract.VirtualHostName(contract.RouteHTTPProxy, "reviews.default.svc.cluster.local:9080")
	if n := len(c.have[resource.VirtualHostType]); n != len(deltaServices) {
		t.Fatalf("%d virtual hosts %v, want %d", n, slices.Collect(maps.Keys(c.have[resource.VirtualHostType])), len(deltaServices))
	}
	if _, ok := c.have[resource.VirtualHostType][reviews]; !ok {
		t.Fatalf("no virtual host %q among %v", reviews, slices.Collect(maps.Keys(c.have[resource.VirtualHostType])))
	}

	s.Update(deltaMesh(2, 0, 2*time.Second)) // reviews' timeout
	r := c.expect(resource.VirtualHostType, reviews)
	var vh route.VirtualHost
	if err := r.GetResources()[0].GetResource().UnmarshalTo(&vh); err != nil {
		t.Fatal(err)
	}
	// The same virtual host as in a whole route configuration.
	whole := generate.ForProxy(deltaMesh(2, 0, 2*time.Second), client)
	var want *route.VirtualHost
	for _, vh := range whole.Routes[0].(*route.RouteConfiguration).GetVirtualHosts() {
		if contract.VirtualHostName(contract.RouteHTTPProxy, vh.GetName()) == reviews {
			want = proto.Clone(vh).(*route.VirtualHost)
		}
	}
	if want == nil {
		t.Fatal("no reviews virtual host in the whole route configuration")
	}
	want.Name = reviews
	if !proto.Equal(&vh, want) {
		t.Errorf("virtual host sent:\n%v\nwant:\n%v", &vh, want)
	}
	s.Update(deltaMesh(3, 1, 2*time.Second)) // the next response is EDS: neither RDS nor VHDS came in between
	c.expect(resource.EndpointType, clusterName("ratings"))
	t.Logf("route change: 1 virtual host of %d, %d bytes", len(deltaServices), proto.Size(r))
}

// TestDeltaVHDSVirtualHostsBeforeTheirListener: when a captured sidecar's
// mesh gains an HTTP port, the virtual hosts of the port's new route
// configuration reach the proxy before the listener that names it — and
// so before the proxy can ask for the route configuration — so the proxy
// never holds the new route configuration without them.
func TestDeltaVHDSVirtualHostsBeforeTheirListener(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s.Update(deltaMeshOf(deltaServices[:1], 1, 0, time.Second))
	ctx := withDeadline(t)
	id := client
	id.VHDS, id.InterceptionMode = true, contract.InterceptionRedirect
	c := dialDelta(t, ctx, addr, id.Node())
	for _, typ := range []string{resource.ClusterType, resource.ListenerType, resource.VirtualHostType} {
		c.subscribe(typ, []string{"*"}, nil)
		c.next()
	}
	reviews := contract.OutboundRouteName(9080)
	c.subscribe(resource.RouteType, []string{reviews}, nil)
	c.expect(resource.RouteType, reviews)

	s.Update(deltaMeshOf(deltaServices[:2], 2, 0, time.Second)) // ratings, on 9081
	ratings := contract.OutboundRouteName(9081)
	vhost := contract.VirtualHostName(ratings, "ratings.default.svc.cluster.local:9081")
	var order []string
	for {
		r := c.next()
		order = append(order, strings.TrimPrefix(r.GetTypeUrl(), "type.googleapis.com/envoy.config."))
		if r.GetTypeUrl() == resource.ListenerType {
			break
		}
	}
	if _, ok := c.have[resource.VirtualHostType][vhost]; !ok {
		t.Fatalf("the listener of port 9081 came before its virtual host %q (responses: %v)", vhost, order)
	}
	c.subscribe(resource.RouteType, []string{reviews, ratings}, nil)
	c.expect(resource.RouteType, ratings)
	t.Logf("responses of the change: %v", order)
}
