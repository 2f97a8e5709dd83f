package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// TestUnknownDestinationMetrics: a captured sidecar's traffic to
// destinations outside the mesh — HTTP on a mesh HTTP port to an unknown
// Host (the allow_any or block_all route), and TCP that matches no chain
// (the default chain to PassthroughCluster or BlackHoleCluster) — is
// counted as Istio counts it, on real sockets: reporter="source",
// destination_service_name PassthroughCluster (ALLOW_ANY) or
// BlackHoleCluster (REGISTRY_ONLY), destination_service the Host for HTTP
// and unknown for TCP; a blocked request is a 502, a blocked connection
// UH; and Envoy's cluster statistics upstream_cx_total and
// upstream_cx_none_healthy.
func TestUnknownDestinationMetrics(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		unknown string // the default chain's cluster
		last    *route.Route
		code    int    // of the HTTP request
		flags   string // of the TCP connection
	}{
		{"ALLOW_ANY", contract.ClusterPassthrough, &route.Route{
			Name:  contract.RouteAllowAny,
			Match: prefixMatch("/"),
			Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier: &route.RouteAction_Cluster{Cluster: contract.ClusterPassthrough},
				Timeout:          durationpb.New(0),
			}},
		}, 200, "-"},
		{"REGISTRY_ONLY", contract.ClusterBlackHole, &route.Route{
			Name:   contract.RouteBlockAll,
			Match:  prefixMatch("/"),
			Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{Status: 502}},
		}, 502, "UH"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			reg := newRegistry()
			f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
			d, err := New(Options{Identity: contract.Identity{WorkloadName: "client", Namespace: "shop", Labels: map[string]string{"app": "client"}},
				OriginalDst: f.lookup, Metrics: reg})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeDataplane(t, d) })

			// The "outside" servers: HTTP on a port the mesh declares
			// HTTP (its chain matches that port on any address), TCP.
			httpOut := echoUpstream(t, "outside-http", false)
			tcpOut := tcpNamed(t, "outside-tcp")
			httpPort := netip.MustParseAddrPort(httpOut).Port()
			known := staticCluster(t, "outbound|8080||known.shop.svc.cluster.local", echoUpstream(t, "known", false))
			rc := routeConfig(fmt.Sprint(httpPort),
				vhost("known.shop.svc.cluster.local:8080", []string{"known.shop.svc.cluster.local"}, toCluster("known", prefixMatch("/"), known.GetName())),
				&route.VirtualHost{Name: tc.last.GetName(), Domains: []string{"*"}, Routes: []*route.Route{tc.last}})
			l := proxytest.VirtualListener(t, contract.ListenerVirtualOutbound, core.TrafficDirection_OUTBOUND,
				proxytest.TCPProxyChain(t, nil, tc.unknown),
				proxytest.HTTPChain(t, proxytest.Match(uint32(httpPort), nil), rc))
			mustApply(t, d, resources(l, known,
				proxytest.OriginalDstCluster(contract.ClusterPassthrough, ""),
				proxytest.BlackHoleCluster(contract.ClusterBlackHole)))
			addr := d.ListenerAddr(contract.ListenerVirtualOutbound).String()

			// HTTP: the client dialled the outside server's address with
			// a Host the mesh does not know.
			f.set("127.0.0.81", netip.MustParseAddrPort(httpOut))
			tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.81")}}
				return d.DialContext(ctx, "tcp", addr)
			}}
			t.Cleanup(tr.CloseIdleConnections)
			r := do(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", "http://"+httpOut+"/", "example.com:8080", nil)
			if r.code != tc.code {
				t.Fatalf("HTTP to an unknown Host: %d from %q, want %d", r.code, r.upstream, tc.code)
			}
			if tc.code == 200 && r.upstream != "outside-http" {
				t.Fatalf("passed through to %q, want the original destination", r.upstream)
			}

			// TCP to a destination no chain matches.
			f.set("127.0.0.82", netip.MustParseAddrPort(tcpOut))
			tc1 := dialFrom(t, "127.0.0.82", addr)
			if tc.flags == "-" {
				if got := exchange(t, tc1, "ping"); got != "outside-tcp:ping" {
					t.Fatalf("TCP to an unknown destination: got %q, want it passed through", got)
				}
			} else {
				// Black-holed: closed at once, perhaps before the write.
				io.WriteString(tc1, "ping")
				if b, err := io.ReadAll(tc1); len(b) != 0 || (err != nil && !isReset(err)) {
					t.Fatalf("TCP to an unknown destination: read %q, %v; want the connection closed", b, err)
				}
			}

			dst := map[string]string{
				"reporter": "source", "source_workload": "client", "source_workload_namespace": "shop",
				"source_app": "client", "source_version": "unknown",
				"source_canonical_service": "client", "source_canonical_revision": "latest", "source_cluster": "unknown",
				"destination_canonical_service": "unknown", "destination_canonical_revision": "unknown", "destination_cluster": "unknown",
				"destination_service_name": tc.unknown, "destination_service_namespace": "unknown",
				"destination_workload": "unknown", "destination_workload_namespace": "unknown",
				"destination_app": "unknown", "destination_version": "unknown",
				"connection_security_policy": "unknown", "source_principal": "unknown", "destination_principal": "unknown",
			}
			request := maps(dst, map[string]string{"destination_service": "example.com:8080", "request_protocol": "http",
				"response_code": fmt.Sprint(tc.code), "grpc_response_status": "", "response_flags": "-"})
			assertSeries(t, reg, request)
			conn := maps(dst, map[string]string{"destination_service": "unknown", "request_protocol": "tcp", "response_flags": tc.flags})
			stat := map[string]string{cluster.NameLabel: tc.unknown}
			want := map[string]float64{
				"istio_tcp_connections_opened_total": 1,
				"istio_tcp_connections_closed_total": 1,
			}
			wantStats := map[string]float64{ // ALLOW_ANY: one HTTP and one TCP connection out
				"envoy_cluster_upstream_cx_total":        2,
				"envoy_cluster_upstream_rq_total":        1,
				"envoy_cluster_upstream_cx_none_healthy": 0,
			}
			if tc.flags == "UH" { // REGISTRY_ONLY: nothing leaves; the TCP connection found no endpoint
				wantStats = map[string]float64{
					"envoy_cluster_upstream_cx_total":        0,
					"envoy_cluster_upstream_rq_total":        0,
					"envoy_cluster_upstream_cx_none_healthy": 1,
				}
			}
			var problem string
			for range 200 { // the relay counts the closed connection as it ends
				problem = ""
				for name, n := range want {
					if v := metricSum(t, reg, name, conn); v != n {
						problem += fmt.Sprintf("%s%v = %v, want %v\n", name, conn, v, n)
					}
				}
				for name, n := range wantStats {
					if v := metricSum(t, reg, name, stat); v != n {
						problem += fmt.Sprintf("%s%v = %v, want %v\n", name, stat, v, n)
					}
				}
				if problem == "" {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if problem != "" {
				t.Error(problem)
			}
		})
	}
}

// metricSum adds up the counters of family name whose labels include want.
func metricSum(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func closeDataplane(t *testing.T, d *Dataplane) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestSilentClientWithoutHTTPChain: on a port no HTTP chain matches, the
// HTTP inspector does not wait for the client's first bytes (its verdict
// could not change the chain): a server-first protocol passes through at
// once, and a client that only listens is black-holed at once and
// counted (UH) — with a listener filter timeout of an hour and no
// continue_on_listener_filters_timeout, either would otherwise hang.
func TestSilentClientWithoutHTTPChain(t *testing.T) {
	for _, unknown := range []string{contract.ClusterPassthrough, contract.ClusterBlackHole} {
		t.Run(unknown, func(t *testing.T) {
			reg := newRegistry()
			f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
			d, err := New(Options{Identity: contract.Identity{WorkloadName: "client", Namespace: "shop"}, OriginalDst: f.lookup, Metrics: reg})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeDataplane(t, d) })
			http := echoUpstream(t, "http", false)
			rc := routeConfig("80", vhost("any", []string{"*"}, toCluster("r", prefixMatch("/"), "http")))
			l := proxytest.VirtualListener(t, contract.ListenerVirtualOutbound, core.TrafficDirection_OUTBOUND,
				proxytest.TCPProxyChain(t, nil, unknown),
				proxytest.HTTPChain(t, proxytest.Match(80, nil, "http/1.1", "h2c"), rc))
			l.ListenerFiltersTimeout = durationpb.New(time.Hour)
			mustApply(t, d, resources(l, staticCluster(t, "http", http),
				proxytest.OriginalDstCluster(contract.ClusterPassthrough, ""),
				proxytest.BlackHoleCluster(contract.ClusterBlackHole)))

			server := tcpNamed(t, "banner") // speaks first
			f.set("127.0.0.83", netip.MustParseAddrPort(server))
			c := dialFrom(t, "127.0.0.83", d.ListenerAddr(contract.ListenerVirtualOutbound).String())
			buf := make([]byte, len("banner:"))
			n, err := io.ReadFull(c, buf)
			if unknown == contract.ClusterPassthrough {
				if err != nil || string(buf) != "banner:" {
					t.Fatalf("server-first protocol through the passthrough: read %q, %v", buf[:n], err)
				}
				return
			}
			if n != 0 || (err != io.EOF && err != io.ErrUnexpectedEOF && !isReset(err)) {
				t.Fatalf("black-holed silent client: read %q, %v; want the connection closed", buf[:n], err)
			}
			conn := map[string]string{"reporter": "source", "destination_service_name": contract.ClusterBlackHole, "response_flags": "UH"}
			if v := metricSum(t, reg, "istio_tcp_connections_closed_total", conn); v != 1 {
				t.Errorf("istio_tcp_connections_closed_total%v = %v, want 1", conn, v)
			}
		})
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
