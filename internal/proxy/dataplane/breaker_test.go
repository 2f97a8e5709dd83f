package dataplane

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

func testStats(t *testing.T, name string) *clusterStats {
	t.Helper()
	v, err := newClusterStatVecs(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return v.stats(name)
}

func thresholds(conns, pending, requests, retries uint32) *cluster.Cluster {
	return &cluster.Cluster{CircuitBreakers: &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(conns), MaxPendingRequests: wrapperspb.UInt32(pending),
		MaxRequests: wrapperspb.UInt32(requests), MaxRetries: wrapperspb.UInt32(retries),
	}}}}
}

func TestBreakerHTTP1ConnectionsAndPending(t *testing.T) {
	st := testStats(t, "c")
	b, err := newBreaker(thresholds(1, 1, 100, 3), false, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := b.admit(ctx)
	if err != nil {
		t.Fatalf("first: %v", err)
	}
	queued := make(chan error, 1)
	var second admission
	go func() {
		var err error
		second, err = b.admit(ctx)
		queued <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.pending.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := b.admit(ctx); !errors.Is(err, errOverflow) {
		t.Fatalf("third: got %v, want overflow", err)
	}
	if got := metricValue(st.rqPendingOverflow); got != 1 {
		t.Errorf("upstream_rq_pending_overflow = %v, want 1", got)
	}
	if got := metricValue(st.cxOverflow); got != 2 {
		t.Errorf("upstream_cx_overflow = %v, want 2", got)
	}
	first.release()
	first.release() // idempotent
	if err := <-queued; err != nil {
		t.Fatalf("queued: %v", err)
	}
	if got := metricValue(st.rqActive); got != 1 {
		t.Errorf("upstream_rq_active = %v, want 1", got)
	}
	second.release()
	if b.active.Load() != 0 || len(b.slots) != 0 || b.pending.Load() != 0 {
		t.Errorf("not back to zero: active %d slots %d pending %d", b.active.Load(), len(b.slots), b.pending.Load())
	}
}

func TestBreakerPendingHonoursContext(t *testing.T) {
	b, _ := newBreaker(thresholds(1, 5, 100, 3), false, testStats(t, "c"))
	first, _ := b.admit(context.Background())
	defer first.release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.admit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if b.active.Load() != 1 || b.pending.Load() != 0 {
		t.Errorf("active %d pending %d, want 1 0", b.active.Load(), b.pending.Load())
	}
}

func TestBreakerLimits(t *testing.T) {
	tests := []struct {
		name     string
		c        *cluster.Cluster
		h2       bool
		admitted int // of 10 concurrent attempts that never finish
	}{
		{"h2 max_requests", thresholds(1, 1, 3, 3), true, 3},
		{"h1 max_requests below connections", thresholds(100, 100, 4, 3), false, 4},
		{"istio defaults are unlimited", thresholds(1<<32-1, 1<<32-1, 1<<32-1, 1<<32-1), false, 10},
		{"envoy defaults", &cluster.Cluster{}, false, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := newBreaker(tc.c, tc.h2, testStats(t, "c"))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			var held []admission
			for range 10 {
				a, err := b.admit(context.Background())
				if err == nil {
					n++
					held = append(held, a)
				}
			}
			for i := range held {
				held[i].release()
			}
			if n != tc.admitted {
				t.Errorf("admitted %d, want %d", n, tc.admitted)
			}
		})
	}
}

func TestBreakerRetries(t *testing.T) {
	st := testStats(t, "c")
	b, _ := newBreaker(thresholds(10, 10, 10, 2), false, st)
	var a, c retryTokens
	if !a.take(b) || !a.take(b) {
		t.Fatal("first two retries refused")
	}
	if c.take(b) {
		t.Fatal("third concurrent retry admitted")
	}
	if got := metricValue(st.rqRetryOverflow); got != 1 {
		t.Errorf("upstream_rq_retry_overflow = %v, want 1", got)
	}
	a.release()
	if !c.take(b) {
		t.Fatal("retry refused after release")
	}
	c.release()
	if b.retries.Load() != 0 {
		t.Errorf("retries = %d, want 0", b.retries.Load())
	}
}

// metricValue reads one counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
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

// TestMaxRequestsPerConnection: common_http_protocol_options
// .max_requests_per_connection closes an upstream HTTP/1.1 connection after
// that many requests.
func TestMaxRequestsPerConnection(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	d := newDataplane(t, contract.Identity{}, nil)
	c := staticCluster(t, "inbound|8080||", srv.Listener.Addr().String())
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttp.HttpProtocolOptions{
		CommonHttpProtocolOptions: &core.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)},
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}}}}})}
	mustApply(t, d, resources(c, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))))
	cl := client(t, false)
	for range 6 {
		if r := do(t, cl, "GET", "http://"+d.ListenerAddr("in").String()+"/", "x", nil); r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
	}
	if got := conns.Load(); got != 3 {
		t.Errorf("upstream connections = %d for 6 requests, want 3 (2 requests each)", got)
	}
}
