package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// ---- resource builders -------------------------------------------------

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sockAddr(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port}}}}
}

// httpListener builds a listener on 127.0.0.1:0 whose HCM uses RDS rds, or
// the inline route config when inline is non-nil.
func httpListener(t testing.TB, name string, dir core.TrafficDirection, rds string, inline *route.RouteConfiguration) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix: name,
		HttpFilters: []*hcm.HttpFilter{{Name: routerFilterName,
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	}
	if inline != nil {
		m.RouteSpecifier = &hcm.HttpConnectionManager_RouteConfig{RouteConfig: inline}
	} else {
		m.RouteSpecifier = &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: rds}}
	}
	return &listener.Listener{
		Name:             name,
		Address:          sockAddr("127.0.0.1", 0),
		TrafficDirection: dir,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: hcmFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}}},
	}
}

func routeConfig(name string, vhs ...*route.VirtualHost) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: name, VirtualHosts: vhs}
}

func vhost(name string, domains []string, routes ...*route.Route) *route.VirtualHost {
	return &route.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func prefixMatch(p string) *route.RouteMatch {
	return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: p}}
}

func toCluster(name string, m *route.RouteMatch, cluster string) *route.Route {
	return &route.Route{Name: name, Match: m, Action: &route.Route_Route{Route: &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}}}
}

func toWeighted(name string, m *route.RouteMatch, weights map[string]uint32) *route.Route {
	wc := &route.WeightedCluster{}
	for _, c := range sortedKeys(weights) {
		wc.Clusters = append(wc.Clusters, &route.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(weights[c])})
	}
	return &route.Route{Name: name, Match: m, Action: &route.Route_Route{Route: &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: wc}}}}
}

func edsCluster(t testing.TB, name string, h2 bool, svcHost string) *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{ServiceName: name},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
	}
	if h2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttp.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}})}
	}
	if svcHost != "" {
		md, err := structpb.NewStruct(map[string]any{"services": []any{map[string]any{"host": svcHost, "name": "reviews", "namespace": "default"}}})
		if err != nil {
			t.Fatal(err)
		}
		c.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{contract.FilterMetadataIstio: md}}
	}
	return c
}

func staticCluster(t testing.TB, name string, addr string) *cluster.Cluster {
	c := edsCluster(t, name, false, "")
	c.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}
	c.EdsClusterConfig = nil
	c.LoadAssignment = cla(name, ep{addr: addr})
	return c
}

type ep struct {
	addr     string
	weight   uint32
	health   core.HealthStatus
	workload string // "workload;ns;app;version;cluster"
	priority uint32
}

func cla(name string, eps ...ep) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byPrio := map[uint32]*endpointv3.LocalityLbEndpoints{}
	for _, e := range eps {
		host, port, err := net.SplitHostPort(e.addr)
		if err != nil {
			panic(err)
		}
		p, _ := strconv.Atoi(port)
		lbe := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(host, uint32(p))}},
			HealthStatus:   e.health,
		}
		if e.weight > 0 {
			lbe.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		if e.workload != "" {
			lbe.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{contract.FilterMetadataIstio: {
				Fields: map[string]*structpb.Value{contract.MetaEndpointWorkload: structpb.NewStringValue(e.workload)}}}}
		}
		loc := byPrio[e.priority]
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{Priority: e.priority}
			byPrio[e.priority] = loc
			out.Endpoints = append(out.Endpoints, loc)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbe)
	}
	return out
}

// resources assembles a Resources set from loose resources.
func resources(items ...proto.Message) *xdsclient.Resources {
	r := &xdsclient.Resources{
		Listeners: map[string]*listener.Listener{},
		Routes:    map[string]*route.RouteConfiguration{},
		Clusters:  map[string]*cluster.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Versions:  map[string]string{"test": "1"},
	}
	for _, it := range items {
		switch v := it.(type) {
		case *listener.Listener:
			r.Listeners[v.Name] = v
		case *route.RouteConfiguration:
			r.Routes[v.Name] = v
		case *cluster.Cluster:
			r.Clusters[v.Name] = v
		case *endpointv3.ClusterLoadAssignment:
			r.Endpoints[v.ClusterName] = v
		default:
			panic(fmt.Sprintf("unexpected %T", it))
		}
	}
	return r
}

// ---- runtime helpers ----------------------------------------------------

func newDataplane(t testing.TB, id contract.Identity, reg prometheus.Registerer) *Dataplane {
	t.Helper()
	d, err := New(Options{Identity: id, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func mustApply(t testing.TB, d *Dataplane, r *xdsclient.Resources) {
	t.Helper()
	if err := d.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// upstream is a real HTTP server that names itself in X-Upstream and echoes
// what it saw.
func upstream(t testing.TB, name string, h2c bool) string {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Seen-Proto", r.Proto)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Path", r.URL.RequestURI())
		w.Header().Set("X-Seen-Peer", r.Header.Get(contract.HeaderPeerMetadata))
		w.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Seen-Connection", r.Header.Get("Connection")+r.Header.Get("X-Hop"))
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
		s.Config.Protocols.SetHTTP1(true)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// client returns an HTTP client with its own transport, closed at cleanup.
func client(t testing.TB, h2c bool) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type result struct {
	code     int
	upstream string
	body     string
	header   http.Header
	close    bool // the response said Connection: close (net/http moves it out of header)
}

func do(t testing.TB, c *http.Client, method, url, host string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s (host %s): %v", method, url, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, upstream: resp.Header.Get("X-Upstream"), body: string(b), header: resp.Header, close: resp.Close}
}

type (
	xdsResources = xdsclient.Resources
	protoMessage = proto.Message
)

func newPool() *clusterPool { return newClusterPool(false, time.Second) }

type (
	listenerT = listener.Listener
	neturl    = url.URL
)

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }

func itoa(i int) string { return strconv.Itoa(i) }

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// counterValue sums istio_requests_total over the series whose labels
// include want.
func counterValue(t testing.TB, g prometheus.Gatherer, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
