package route

import (
	"strings"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRetryConditions(t *testing.T) {
	rp, err := compileRetryPolicy(&route.RetryPolicy{
		RetryOn:              "retriable-status-codes, unavailable,cancelled,connect-failure,refused-stream,envoy-ratelimited",
		RetriableStatusCodes: []uint32{503},
		NumRetries:           wrapperspb.UInt32(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := compileRetryPolicy(&route.RetryPolicy{RetryOn: "5xx,retriable-4xx,deadline-exceeded,internal,resource-exhausted"})
	gw, _ := compileRetryPolicy(&route.RetryPolicy{RetryOn: "gateway-error"})
	reset, _ := compileRetryPolicy(&route.RetryPolicy{RetryOn: "reset"})
	beforeReq, _ := compileRetryPolicy(&route.RetryPolicy{RetryOn: "reset-before-request"})
	tests := []struct {
		name string
		rp   *RetryPolicy
		code int
		grpc string
		fail Failure
		want bool
	}{
		{"istio default: 503", rp, 503, "", 0, true},
		{"istio default: 500", rp, 500, "", 0, false},
		{"istio default: grpc unavailable", rp, 200, "14", 0, true},
		{"istio default: grpc cancelled", rp, 200, "1", 0, true},
		{"istio default: grpc internal", rp, 200, "13", 0, false},
		{"istio default: connect failure", rp, 0, "", ConnectFailure, true},
		{"istio default: refused stream", rp, 0, "", RefusedStream, true},
		{"istio default: reset", rp, 0, "", Reset, false},
		{"istio default: per-try timeout", rp, 0, "", PerTryTimeout, false},
		{"5xx: 500", all, 500, "", 0, true},
		{"5xx: reset", all, 0, "", Reset, true},
		{"5xx: per-try timeout", all, 0, "", PerTryTimeout, true},
		{"retriable-4xx: 409", all, 409, "", 0, true},
		{"retriable-4xx: 404", all, 404, "", 0, false},
		{"grpc deadline-exceeded", all, 200, "4", 0, true},
		{"grpc internal", all, 200, "13", 0, true},
		{"grpc resource-exhausted", all, 200, "8", 0, true},
		{"gateway-error: 502", gw, 502, "", 0, true},
		{"gateway-error: 500", gw, 500, "", 0, false},
		{"gateway-error: connect failure", gw, 0, "", ConnectFailure, true},
		{"reset: reset", reset, 0, "", Reset, true},
		{"reset: 503", reset, 503, "", 0, false},
		{"reset-before-request: connect failure", beforeReq, 0, "", ConnectFailure, true},
		{"reset-before-request: reset after the request went out", beforeReq, 0, "", Reset, false},
		{"reset-before-request: refused stream", beforeReq, 0, "", RefusedStream, false},
		{"reset-before-request: 503", beforeReq, 503, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got bool
			if tt.fail == 0 {
				got = tt.rp.RetriableResponse(tt.code, tt.grpc, false)
			} else {
				got = tt.rp.RetriableFailure(tt.fail)
			}
			if got != tt.want {
				t.Errorf("retriable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRetryRateLimited: a response carrying x-envoy-ratelimited (a rate
// limit refused the request) is retried under envoy-ratelimited only,
// whatever its status, as in Envoy.
func TestRetryRateLimited(t *testing.T) {
	limited, _ := compileRetryPolicy(&route.RetryPolicy{RetryOn: "envoy-ratelimited"})
	fiveXX, _ := compileRetryPolicy(&route.RetryPolicy{RetryOn: "5xx,retriable-status-codes", RetriableStatusCodes: []uint32{429}})
	if !limited.RetriableResponse(429, "", true) {
		t.Error("envoy-ratelimited: a rate limit's 429 is not retried")
	}
	if limited.RetriableResponse(429, "", false) {
		t.Error("envoy-ratelimited: an app's 429 is retried")
	}
	if fiveXX.RetriableResponse(503, "", true) || fiveXX.RetriableResponse(429, "", true) {
		t.Error("5xx/retriable-status-codes: a rate limit's answer is retried")
	}
	if !fiveXX.RetriableResponse(429, "", false) {
		t.Error("retriable-status-codes 429: an app's 429 is not retried")
	}
}

func TestCompileRetryPolicy(t *testing.T) {
	rp, err := compileRetryPolicy(&route.RetryPolicy{
		RetryOn:                       "5xx",
		PerTryTimeout:                 durationpb.New(time.Second),
		HostSelectionRetryMaxAttempts: 5,
		RetryHostPredicate: []*route.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicateName,
			ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(t, &previoushosts.PreviousHostsPredicate{})}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rp.NumRetries != 1 || rp.PerTry != time.Second || !rp.OtherHosts || rp.base != 25*time.Millisecond || rp.max != 250*time.Millisecond {
		t.Errorf("policy = %+v", rp)
	}
	for _, bad := range []*route.RetryPolicy{
		{RetriableStatusCodes: []uint32{42}},
		{RetryHostPredicate: []*route.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.omit_canary_hosts"}}},
		{RetryBackOff: &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}},
	} {
		if _, err := compileRetryPolicy(bad); err == nil {
			t.Errorf("compileRetryPolicy(%v): want an error", bad)
		}
	}
}

func TestBackoffIsJitteredAndCapped(t *testing.T) {
	rp := &RetryPolicy{base: 25 * time.Millisecond, max: 250 * time.Millisecond}
	for n := 1; n <= 8; n++ {
		limit := min(rp.base<<(n-1), rp.max)
		for range 200 {
			if b := rp.Backoff(n); b < 0 || b >= limit {
				t.Fatalf("backoff(%d) = %v, want [0, %v)", n, b, limit)
			}
		}
	}
}

func TestCompileRetryPriority(t *testing.T) {
	cases := []struct {
		name    string
		in      *route.RetryPolicy_RetryPriority
		want    int
		wantErr string
	}{
		{"none", nil, 0, ""},
		{"istio", &route.RetryPolicy_RetryPriority{Name: previousPrioritiesName, ConfigType: &route.RetryPolicy_RetryPriority_TypedConfig{
			TypedConfig: mustAny(t, &previouspriorities.PreviousPrioritiesConfig{UpdateFrequency: 2})}}, 2, ""},
		{"zero frequency", &route.RetryPolicy_RetryPriority{Name: previousPrioritiesName, ConfigType: &route.RetryPolicy_RetryPriority_TypedConfig{
			TypedConfig: mustAny(t, &previouspriorities.PreviousPrioritiesConfig{})}}, 0, "update_frequency"},
		{"other", &route.RetryPolicy_RetryPriority{Name: "envoy.retry_priorities.custom"}, 0, "unsupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := compileRetryPriority(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestRetryPoliciesShared: the routes of one table with equal retry
// policies share one compiled policy; a different one gets its own.
func TestRetryPoliciesShared(t *testing.T) {
	policy := func(n uint32) *route.RetryPolicy {
		return &route.RetryPolicy{RetryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
			NumRetries: wrapperspb.UInt32(n), RetriableStatusCodes: []uint32{503}}
	}
	var routes []*route.Route
	for _, n := range []uint32{2, 2, 3} {
		routes = append(routes, &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}, RetryPolicy: policy(n)}}})
	}
	var vhs []*route.VirtualHost
	for i, r := range routes {
		vhs = append(vhs, &route.VirtualHost{Name: string(rune('a' + i)), Domains: []string{string(rune('a' + i))}, Routes: []*route.Route{r}})
	}
	tab, err := Compile(&route.RouteConfiguration{Name: "r", VirtualHosts: vhs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := tab.vhs[0].routes[0].Retry, tab.vhs[1].routes[0].Retry, tab.vhs[2].routes[0].Retry
	if a == nil || a != b || a == c || a.NumRetries != 2 || c.NumRetries != 3 {
		t.Errorf("retry policies %p %p %p (%+v, %+v): want the first two shared, the third its own", a, b, c, a, c)
	}
}
