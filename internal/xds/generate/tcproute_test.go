package generate

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// tcpRouteMesh is captureMesh with VirtualService tcp and tls routes:
//
//   - redis (TCP 6379, VIPs 10.96.0.20 and fd00:96::20): a route for
//     other workloads' labels (not this proxy's), one for 10.96.0.0/16
//     (the IPv4 VIP) to v2, then 80/20 over v1/v2 for the rest; its
//     DestinationRule sets connectionPool.tcp;
//   - lines (TCP 9300 and 9301, VIP 10.96.0.50): port 9301 to v2, the
//     rest 80/20;
//   - secure (TLS 443, VIP 10.96.0.40): SNI a.secure.example to v1,
//     b.secure.example and *.wild.example to v2, other names closed;
//   - api.example.com (TLS 443, no VIP): its SNI to the egress service;
//   - mongo (TCP 27017, no VIP): destinationSubnets 192.0.2.0/24 to it;
//   - portal (port 443 undeclared, sniffed, VIP 240.0.0.60): its HTTP
//     chains must not take TLS connections now that the TLS inspector
//     runs on 443.
const tcpRouteMesh = captureMesh + `
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: redis, namespace: bookinfo}
spec:
  host: redis.bookinfo.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 2s, idleTimeout: 30s, maxConnectionDuration: 1h}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redis, namespace: bookinfo}
spec:
  hosts: [redis.bookinfo.svc.cluster.local]
  tcp:
  - match:
    - sourceLabels: {app: ratings}
    route:
    - destination: {host: redis.bookinfo.svc.cluster.local, subset: v1}
  - match:
    - destinationSubnets: [10.96.0.0/16]
    route:
    - destination: {host: redis.bookinfo.svc.cluster.local, subset: v2}
  - route:
    - {destination: {host: redis.bookinfo.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: redis.bookinfo.svc.cluster.local, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lines, namespace: bookinfo}
spec:
  hosts: [lines.bookinfo.svc.cluster.local]
  addresses: [10.96.0.50]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9300, name: tcp-lines, protocol: TCP}
  - {number: 9301, name: tcp-lines-canary, protocol: TCP}
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lines, namespace: bookinfo}
spec:
  host: lines.bookinfo.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash: {useSourceIp: true}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lines, namespace: bookinfo}
spec:
  hosts: [lines.bookinfo.svc.cluster.local]
  tcp:
  - match: [{port: 9301}]
    route:
    - destination: {host: lines.bookinfo.svc.cluster.local, subset: v2, port: {number: 9301}}
  - route:
    - {destination: {host: lines.bookinfo.svc.cluster.local, subset: v1, port: {number: 9300}}, weight: 80}
    - {destination: {host: lines.bookinfo.svc.cluster.local, subset: v2, port: {number: 9300}}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: bookinfo}
spec:
  hosts: [secure.bookinfo.svc.cluster.local]
  addresses: [10.96.0.40]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: bookinfo}
spec:
  host: secure.bookinfo.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: bookinfo}
spec:
  hosts: [secure.bookinfo.svc.cluster.local, a.secure.example, b.secure.example, "*.wild.example"]
  tls:
  - match: [{sniHosts: [a.secure.example]}]
    route:
    - destination: {host: secure.bookinfo.svc.cluster.local, subset: v1}
  - match: [{sniHosts: [b.secure.example, "*.wild.example"]}]
    route:
    - destination: {host: secure.bookinfo.svc.cluster.local, subset: v2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: egress}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints: [{address: 192.0.2.44}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: egress}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{port: 443, sniHosts: [api.example.com]}]
    route:
    - destination: {host: api.example.com, port: {number: 443}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: portal, namespace: egress}
spec:
  hosts: [portal.example.com]
  addresses: [240.0.0.60]
  resolution: STATIC
  ports: [{number: 443, name: portal}]
  endpoints: [{address: 192.0.2.60}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mongo, namespace: egress}
spec:
  hosts: [mongo.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 27017, name: mongo, protocol: MONGO}]
  endpoints: [{address: 192.0.2.27}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo, namespace: egress}
spec:
  hosts: [mongo.example.com]
  tcp:
  - match: [{destinationSubnets: [192.0.2.0/24]}]
    route:
    - destination: {host: mongo.example.com}
`

func tcpRouteCases() []goldenCase {
	return []goldenCase{{
		// The chains of tcpRouteMesh's services on the virtual outbound
		// listener; the TLS inspector runs on port 443 only.
		name:  "capture_tcp_tls_routes",
		mesh:  func() *mesh.Snapshot { return securityMesh(tcpRouteMesh, mesh.Options{}) },
		proxy: capturedProxy(reviewsProxy),
	}}
}

// chainSummary is what a test asserts of one outbound chain.
type chainSummary struct {
	port     uint32
	prefixes string // comma-separated "addr/len"
	names    string // comma-separated server names
	target   string // cluster, or "name=weight,…" for weighted clusters
	idle     time.Duration
	maxDur   time.Duration
}

func summarize(t *testing.T, fc *listener.FilterChain) chainSummary {
	t.Helper()
	m := fc.GetFilterChainMatch()
	var prefixes []string
	for _, r := range m.GetPrefixRanges() {
		prefixes = append(prefixes, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
	}
	var tp tcpproxy.TcpProxy
	if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
		t.Fatalf("chain %s: not a tcp_proxy: %v", fc.GetName(), err)
	}
	target := tp.GetCluster()
	if wc := tp.GetWeightedClusters(); wc != nil {
		var parts []string
		for _, c := range wc.GetClusters() {
			parts = append(parts, fmt.Sprintf("%s=%d", c.GetName(), c.GetWeight()))
		}
		target = strings.Join(parts, ",")
	}
	return chainSummary{
		port: m.GetDestinationPort().GetValue(), prefixes: strings.Join(prefixes, ","),
		names: strings.Join(m.GetServerNames(), ","), target: target, idle: tp.GetIdleTimeout().AsDuration(),
		maxDur: tp.GetMaxDownstreamConnectionDuration().AsDuration(),
	}
}

// outboundChains returns the virtual outbound listener's tcp_proxy
// chains on port, by name.
func outboundChains(t *testing.T, s *mesh.Snapshot, id contract.Identity, port uint32) (*listener.Listener, map[string]chainSummary) {
	t.Helper()
	for _, r := range ForProxy(s, id).Listeners {
		l := r.(*listener.Listener)
		if l.GetName() != contract.ListenerVirtualOutbound {
			continue
		}
		out := map[string]chainSummary{}
		for _, fc := range l.GetFilterChains() {
			if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == port && fc.GetFilters()[0].GetName() == "envoy.filters.network.tcp_proxy" {
				out[fc.GetName()] = summarize(t, fc)
			}
		}
		return l, out
	}
	t.Fatal("no virtual outbound listener")
	return nil, nil
}

// TestTCPRouteChains: what each route of tcpRouteMesh becomes, as
// Istio's per-VIP listeners would decide it.
func TestTCPRouteChains(t *testing.T) {
	s := securityMesh(tcpRouteMesh, mesh.Options{})
	id := capturedProxy(reviewsProxy)
	const (
		redis  = "outbound|6379||redis.bookinfo.svc.cluster.local"
		lines  = "outbound|9300||lines.bookinfo.svc.cluster.local"
		lines1 = "outbound|9301||lines.bookinfo.svc.cluster.local"
		secure = "outbound|443||secure.bookinfo.svc.cluster.local"
	)
	for _, tc := range []struct {
		port uint32
		want map[string]chainSummary
	}{
		{6379, map[string]chainSummary{
			// The sourceLabels route is not this proxy's; the IPv4 VIP is
			// in the subnet; the IPv6 one takes the catch-all split.
			redis + "_tcp_1": {6379, "10.96.0.20/32", "", "outbound|6379|v2|redis.bookinfo.svc.cluster.local", 30 * time.Second, time.Hour},
			redis + "_tcp":   {6379, "fd00:96::20/128", "", "outbound|6379|v1|redis.bookinfo.svc.cluster.local=80,outbound|6379|v2|redis.bookinfo.svc.cluster.local=20", 30 * time.Second, time.Hour},
		}},
		{9300, map[string]chainSummary{
			lines + "_tcp": {9300, "10.96.0.50/32", "", "outbound|9300|v1|lines.bookinfo.svc.cluster.local=80,outbound|9300|v2|lines.bookinfo.svc.cluster.local=20", 0, 0},
		}},
		{9301, map[string]chainSummary{
			lines1 + "_tcp": {9301, "10.96.0.50/32", "", "outbound|9301|v2|lines.bookinfo.svc.cluster.local", 0, 0},
		}},
		{443, map[string]chainSummary{
			secure + "_tls_0_0":                     {443, "10.96.0.40/32", "a.secure.example", "outbound|443|v1|secure.bookinfo.svc.cluster.local", 0, 0},
			secure + "_tls_1_0":                     {443, "10.96.0.40/32", "b.secure.example,*.wild.example", "outbound|443|v2|secure.bookinfo.svc.cluster.local", 0, 0},
			secure + "_blackhole":                   {443, "10.96.0.40/32", "", "BlackHoleCluster", 0, 0},
			"outbound|443||api.example.com_tls_0_0": {443, "", "api.example.com", "outbound|443||api.example.com", 0, 0},
			"outbound|443||portal.example.com":      {443, "240.0.0.60/32", "", "outbound|443||portal.example.com", 0, 0},
		}},
		{27017, map[string]chainSummary{
			"outbound|27017||mongo.example.com_tcp_0": {27017, "192.0.2.0/24", "", "outbound|27017||mongo.example.com", 0, 0},
		}},
	} {
		l, got := outboundChains(t, s, id, tc.port)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("port %d:\n got %+v\nwant %+v", tc.port, got, tc.want)
		}
		if tc.port != 443 {
			continue
		}
		var inspected bool
		for _, lf := range l.GetListenerFilters() {
			if lf.GetName() == "envoy.filters.listener.tls_inspector" {
				inspected = lf.GetFilterDisabled().GetNotMatch().GetDestinationPortRange().GetStart() == 443
			}
		}
		if !inspected {
			t.Errorf("the TLS inspector should run on port 443 only: %v", l.GetListenerFilters())
		}
		for _, fc := range l.GetFilterChains() {
			m := fc.GetFilterChainMatch()
			if m.GetDestinationPort().GetValue() == 443 && len(m.GetApplicationProtocols()) > 0 && m.GetTransportProtocol() != "raw_buffer" {
				t.Errorf("chain %s matches the HTTP inspector's verdict on any transport: a TLS client's ALPN would pick it", fc.GetName())
			}
		}
	}
}

// TestTCPRouteSourceLabels: a match on sourceLabels applies to the
// proxies with those labels only, and proxies that differ only in labels
// get different listeners (the memo keys on labels once a tcp route
// matches on them).
func TestTCPRouteSourceLabels(t *testing.T) {
	s := securityMesh(tcpRouteMesh, mesh.Options{})
	ratings := capturedProxy(reviewsProxy)
	ratings.Labels = map[string]string{"app": "ratings", "version": "v1"}
	_, got := outboundChains(t, s, ratings, 6379)
	want := "outbound|6379|v1|redis.bookinfo.svc.cluster.local"
	if c := got["outbound|6379||redis.bookinfo.svc.cluster.local_tcp"]; c.target != want || c.prefixes != "10.96.0.20/32,fd00:96::20/128" {
		t.Errorf("ratings' sidecar: %+v, want every VIP to %s", got, want)
	}
	_, other := outboundChains(t, s, capturedProxy(reviewsProxy), 6379)
	if slices.Equal(mapKeys(got), mapKeys(other)) {
		t.Errorf("reviews and ratings got the same chains: %v", mapKeys(got))
	}
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
