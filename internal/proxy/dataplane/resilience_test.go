package dataplane

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/xds/contract"
)

// statusUpstream answers with status (or per request x-status), counts
// hits and echoes the request body.
func statusUpstream(t *testing.T, status int, delay time.Duration, hits *atomic.Int64) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(status)
		w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func faultListener(t *testing.T, rds string) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix:     "out",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: rds}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: faultFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &faultv3.HTTPFault{})}},
			{Name: routerFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}},
		},
	}
	return &listener.Listener{
		Name: "out", Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: hcmFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}}},
	}
}

func withRetry(r *route.Route, p *route.RetryPolicy, timeout time.Duration) *route.Route {
	a := r.GetRoute()
	a.RetryPolicy = p
	if timeout > 0 {
		a.Timeout = durationpb.New(timeout)
	}
	return r
}

func TestRetriesEndToEnd(t *testing.T) {
	var badHits, goodHits, slowHits, allBadHits atomic.Int64
	bad := statusUpstream(t, 503, 0, &badHits)
	good := statusUpstream(t, 200, 0, &goodHits)
	slow := statusUpstream(t, 200, 2*time.Second, &slowHits)
	allBad := statusUpstream(t, 503, 0, &allBadHits)
	prev := []*route.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicateName,
		ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(t, &previoushosts.PreviousHostsPredicate{})}}}
	res := resourcesAny(
		edsCluster(t, "mixed", false, ""), cla("mixed", ep{Addr: bad}, ep{Addr: good}),
		edsCluster(t, "slowfast", false, ""), cla("slowfast", ep{Addr: slow}, ep{Addr: good}),
		edsCluster(t, "allbad", false, ""), cla("allbad", ep{Addr: allBad}),
		edsCluster(t, "slow", false, ""), cla("slow", ep{Addr: slow}),
		edsCluster(t, "refused", false, ""), cla("refused", ep{Addr: closedPort(t)}, ep{Addr: good}),
		routeConfig("r",
			vhost("mixed", []string{"mixed"}, withRetry(toCluster("", prefixMatch("/"), "mixed"),
				&route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1), RetryHostPredicate: prev, HostSelectionRetryMaxAttempts: 5}, 0)),
			vhost("pertry", []string{"pertry"}, withRetry(toCluster("", prefixMatch("/"), "slowfast"),
				&route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: durationpb.New(100 * time.Millisecond), RetryHostPredicate: prev}, 0)),
			vhost("allbad", []string{"allbad"}, withRetry(toCluster("", prefixMatch("/"), "allbad"),
				&route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)}, 0)),
			vhost("timeout", []string{"timeout"}, withRetry(toCluster("", prefixMatch("/"), "slow"), nil, 100*time.Millisecond)),
			vhost("refused", []string{"refused"}, withRetry(toCluster("", prefixMatch("/"), "refused"),
				&route.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(2), RetryHostPredicate: prev, HostSelectionRetryMaxAttempts: 5}, 0)),
		),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	mustApply(t, d, res)
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)

	t.Run("5xx retried on the other endpoint, with the body", func(t *testing.T) {
		for i := range 20 {
			req, _ := http.NewRequest("POST", base+"/", strings.NewReader("payload-"+itoa(i)))
			req.Host = "mixed"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "payload-"+itoa(i) {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}
		if n := badHits.Load(); n < 5 {
			t.Errorf("bad endpoint saw %d requests; round robin should have sent it about half", n)
		}
	})
	t.Run("retries stop at num_retries", func(t *testing.T) {
		allBadHits.Store(0)
		got := do(t, c, "GET", base+"/", "allbad", nil)
		if got.code != 503 || allBadHits.Load() != 4 {
			t.Errorf("got %d after %d attempts, want 503 after 4", got.code, allBadHits.Load())
		}
		if n := counterValue(t, reg, map[string]string{"response_flags": "URX", "response_code": "503"}); n != 1 {
			t.Errorf("istio_requests_total{response_flags=URX} = %v, want 1", n)
		}
	})
	t.Run("per-try timeout moves on", func(t *testing.T) {
		for range 4 {
			start := time.Now()
			got := do(t, c, "GET", base+"/", "pertry", nil)
			if got.code != 200 || time.Since(start) > 1500*time.Millisecond {
				t.Fatalf("got %d after %v", got.code, time.Since(start))
			}
		}
	})
	t.Run("route timeout answers 504 UT", func(t *testing.T) {
		start := time.Now()
		got := do(t, c, "GET", base+"/", "timeout", nil)
		if got.code != 504 || got.body != bodyTimeout || time.Since(start) > 1500*time.Millisecond {
			t.Errorf("got %d %q after %v", got.code, got.body, time.Since(start))
		}
		if n := counterValue(t, reg, map[string]string{"response_flags": "UT", "response_code": "504"}); n != 1 {
			t.Errorf("istio_requests_total{response_flags=UT} = %v, want 1", n)
		}
	})
	t.Run("connect failure retried", func(t *testing.T) {
		for range 10 {
			if got := do(t, c, "GET", base+"/", "refused", nil); got.code != 200 {
				t.Fatalf("got %d %q", got.code, got.body)
			}
		}
	})
	// Every attempt's in-flight count (LEAST_REQUEST) ended with its
	// request, retried or not.
	rt := d.rt.Load()
	for _, name := range []string{"mixed", "slowfast", "allbad", "refused"} {
		cl := rt.clusters[name]
		var seen []*cluster.Endpoint
		for e := cl.Pick(cluster.HashKey{}); e != nil && len(seen) < 4; e = cl.PickExcept(cluster.HashKey{}, 0, seen) {
			if slices.Contains(seen, e) {
				break
			}
			seen = append(seen, e)
			if n := e.InFlight(); n != 0 {
				t.Errorf("cluster %s: an endpoint has %d attempts in flight after every request ended", name, n)
			}
		}
		if len(seen) == 0 {
			t.Errorf("cluster %s: no endpoint picked", name)
		}
	}
	for _, tc := range []struct {
		stat, cluster string
		min, max      float64
	}{
		{"upstream_rq_retry", "mixed", 1, 20},
		{"upstream_rq_retry_success", "mixed", 1, 20},
		{"upstream_rq_timeout", "slow", 1, 1},
		{"upstream_rq_per_try_timeout", "slowfast", 1, 4},
		{"upstream_rq_retry", "allbad", 3, 3},
	} {
		if n := clusterCounter(t, reg, tc.stat, tc.cluster); n < tc.min || n > tc.max {
			t.Errorf("envoy_cluster_%s{envoy_cluster_name=%q} = %v, want [%v, %v]", tc.stat, tc.cluster, n, tc.min, tc.max)
		}
	}
}

// clusterCounter reads envoy_cluster_<stat>{envoy_cluster_name=cluster}.
func clusterCounter(t *testing.T, g prometheus.Gatherer, stat, cluster string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "envoy_cluster_"+stat {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "envoy_cluster_name" && lp.GetValue() == cluster {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestLargeBodyIsNotRetried(t *testing.T) {
	var hits atomic.Int64
	bad := statusUpstream(t, 503, 0, &hits)
	res := resourcesAny(
		edsCluster(t, "bad", false, ""), cla("bad", ep{Addr: bad}),
		routeConfig("r", vhost("bad", []string{"bad"}, withRetry(toCluster("", prefixMatch("/"), "bad"),
			&route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)}, 0))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, newRegistry())
	mustApply(t, d, res)
	c := client(t, false)
	for _, tc := range []struct {
		size     int
		wantHits int64
	}{{100, 4}, {retryBodyBufferLimit + 1, 1}} {
		hits.Store(0)
		req, _ := http.NewRequest("POST", "http://"+d.ListenerAddr("out").String()+"/", bytes.NewReader(make([]byte, tc.size)))
		req.Host = "bad"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || hits.Load() != tc.wantHits {
			t.Errorf("body %d bytes: %d after %d attempts, want 503 after %d", tc.size, resp.StatusCode, hits.Load(), tc.wantHits)
		}
	}
}

func faultRoute(t *testing.T, cluster string, f *faultv3.HTTPFault) *route.Route {
	r := toCluster("", prefixMatch("/"), cluster)
	r.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: mustAny(t, f)}
	return r
}

func TestFaultInjection(t *testing.T) {
	var hits atomic.Int64
	up := statusUpstream(t, 200, 0, &hits)
	all := &typev3.FractionalPercent{Numerator: 100}
	res := resourcesAny(
		edsCluster(t, "up", false, ""), cla("up", ep{Addr: up}),
		routeConfig("r",
			vhost("abort", []string{"abort"}, faultRoute(t, "up", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
				ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: all}})),
			vhost("grpcabort", []string{"grpcabort"}, faultRoute(t, "up", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
				ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 8}, Percentage: all}})),
			vhost("delay", []string{"delay"}, faultRoute(t, "up", &faultv3.HTTPFault{Delay: &faultcommon.FaultDelay{
				FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(150 * time.Millisecond)}, Percentage: all}})),
			vhost("never", []string{"never"}, faultRoute(t, "up", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
				ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}}})), // no percentage: 0%
		),
		faultListener(t, "r"))
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	mustApply(t, d, res)
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)

	if got := do(t, c, "GET", base+"/", "abort", nil); got.code != 418 || got.body != "fault filter abort" {
		t.Errorf("abort: %d %q", got.code, got.body)
	}
	if got := do(t, c, "GET", base+"/", "grpcabort", nil); got.code != 429 {
		t.Errorf("grpc abort of a plain HTTP request: %d, want 429", got.code)
	}
	got := do(t, c, "POST", base+"/", "grpcabort", map[string]string{"Content-Type": "application/grpc"})
	if got.code != 200 || got.header.Get("Grpc-Status") != "8" {
		t.Errorf("grpc abort: %d grpc-status %q", got.code, got.header.Get("Grpc-Status"))
	}
	start := time.Now()
	if got := do(t, c, "GET", base+"/", "delay", nil); got.code != 200 || time.Since(start) < 150*time.Millisecond {
		t.Errorf("delay: %d after %v", got.code, time.Since(start))
	}
	if got := do(t, c, "GET", base+"/", "never", nil); got.code != 200 {
		t.Errorf("abort without percentage: %d, want 200", got.code)
	}
	if hits.Load() != 2 {
		t.Errorf("upstream saw %d requests, want 2 (delay, never)", hits.Load())
	}
	for _, f := range []string{"FI", "DI"} {
		if n := counterValue(t, reg, map[string]string{"response_flags": f}); n < 1 {
			t.Errorf("no istio_requests_total with response_flags=%s", f)
		}
	}

	// Without the fault filter in the HCM the per-route config is inert, as in Envoy.
	res.Listeners["out"] = httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)
	mustApply(t, d, res)
	if got := do(t, c, "GET", "http://"+d.ListenerAddr("out").String()+"/", "abort", nil); got.code != 200 {
		t.Errorf("without the filter: %d, want 200", got.code)
	}
}
