package dataplane

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkResilienceOverhead measures what the resilience features cost a
// request that needs none of them: one hop over loopback sockets with plain
// routing (no retry policy, no circuit breaker limits, no outlier
// detection) against the same hop with Istio's default retry policy,
// finite circuit breaker limits and outlier detection, and that plus a
// route timeout (Istio's default is none). Compare with benchstat:
//
//	go test -run '^$' -bench ResilienceOverhead -count 10 ./internal/proxy/dataplane/ | tee /tmp/r.txt
//	benchstat -col /config /tmp/r.txt
func BenchmarkResilienceOverhead(b *testing.B) {
	upstream := benchUpstream(b)
	configs := []struct {
		name  string
		route func(*route.RouteAction)
		clus  func(*cluster.Cluster)
	}{
		{"config=plain", func(*route.RouteAction) {}, func(*cluster.Cluster) {}},
		{"config=resilient", withRetries, withBreakerAndOutlier},
		{"config=resilient+timeout", func(a *route.RouteAction) {
			withRetries(a)
			a.Timeout = durationpb.New(15 * time.Second)
		}, withBreakerAndOutlier},
	}
	for _, cfg := range configs {
		b.Run(cfg.name, func(b *testing.B) {
			c := staticCluster(b, "inbound|8080||", upstream)
			cfg.clus(c)
			r := toCluster("default", prefixMatch("/"), "inbound|8080||")
			cfg.route(r.GetRoute())
			benchHop(b, c, r)
		})
	}
}

// benchUpstream serves 1 KiB bodies on loopback until the benchmark ends.
func benchUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("x", 1024)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	b.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String()
}

// benchHop runs GET requests, 8 in parallel over keep-alive connections,
// through an inbound listener whose one route r leads to cluster c.
func benchHop(b *testing.B, c *cluster.Cluster, r *route.Route) {
	d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
	mustApply(b, d, resources(c, httpListener(b, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, r)))))
	url := "http://" + d.ListenerAddr("in").String() + "/"
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", url, nil)
		for pb.Next() {
			resp, err := cl.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// withRetries sets Istio's default retry policy.
func withRetries(a *route.RouteAction) {
	a.RetryPolicy = &route.RetryPolicy{
		RetryOn:                       "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries:                    wrapperspb.UInt32(2),
		RetriableStatusCodes:          []uint32{503},
		HostSelectionRetryMaxAttempts: 5,
		RetryHostPredicate: []*route.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicateName,
			ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAnyPreviousHosts()}}},
	}
}

// withBreakerAndOutlier sets finite circuit breaker limits and Istio-style
// outlier detection.
func withBreakerAndOutlier(c *cluster.Cluster) {
	c.CircuitBreakers = thresholds(1000, 1000, 1000, 10).CircuitBreakers
	c.OutlierDetection = istioOD(5, 50)
}

func mustAnyPreviousHosts() *anypb.Any {
	a, err := anypb.New(&previoushosts.PreviousHostsPredicate{})
	if err != nil {
		panic(err)
	}
	return a
}

// BenchmarkForwardBreakerOutlier is BenchmarkForwardHTTP1's hop with the
// cluster's circuit breakers and outlier detection in their three shapes:
// Istio's unlimited defaults (what every cluster gets), finite limits with
// outlier detection (a DestinationRule with connectionPool and
// outlierDetection), and no circuit_breakers at all (Envoy's defaults).
func BenchmarkForwardBreakerOutlier(b *testing.B) {
	upstream := benchUpstream(b)
	shapes := []struct {
		name string
		set  func(c *cluster.Cluster)
	}{
		{"istio-defaults", func(c *cluster.Cluster) {
			c.CircuitBreakers = thresholds(1<<32-1, 1<<32-1, 1<<32-1, 1<<32-1).CircuitBreakers
		}},
		{"limits+outlier", withBreakerAndOutlier},
		{"envoy-defaults", func(c *cluster.Cluster) {}},
	}
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			c := staticCluster(b, "inbound|8080||", upstream)
			sh.set(c)
			benchHop(b, c, toCluster("default", prefixMatch("/"), "inbound|8080||"))
		})
	}
}
