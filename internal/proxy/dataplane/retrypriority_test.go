package dataplane

import (
	"sync/atomic"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// TestRetryRemotePriorities: priority 0 answers 503 everywhere, priority 1
// is healthy. previous_priorities moves a retry to priority 1 once
// update_frequency hosts were attempted; without it the retries stay in
// priority 0 (previous_hosts only moves them to another host there).
func TestRetryRemotePriorities(t *testing.T) {
	var badHits, goodHits atomic.Int64
	bad1, bad2, bad3 := statusUpstream(t, 503, 0, &badHits), statusUpstream(t, 503, 0, &badHits), statusUpstream(t, 503, 0, &badHits)
	good := statusUpstream(t, 200, 0, &goodHits)
	prevHosts := []*route.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicateName,
		ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(t, &previoushosts.PreviousHostsPredicate{})}}}
	prevPrios := func(freq int32) *route.RetryPolicy_RetryPriority {
		return &route.RetryPolicy_RetryPriority{Name: previousPrioritiesName,
			ConfigType: &route.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(t, &previouspriorities.PreviousPrioritiesConfig{UpdateFrequency: freq})}}
	}
	policy := func(retries uint32, prio *route.RetryPolicy_RetryPriority) *route.RetryPolicy {
		return &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(retries), RetryHostPredicate: prevHosts,
			HostSelectionRetryMaxAttempts: 5, RetryPriority: prio}
	}
	cases := []struct {
		name     string
		badP0    int // endpoints of priority 0, all answering 503
		policy   *route.RetryPolicy
		wantCode int
	}{
		{"update_frequency 1: the first retry goes to priority 1", 2, policy(1, prevPrios(1)), 200},
		{"no retry_priority: the retry stays in priority 0", 2, policy(1, nil), 503},
		{"update_frequency 2 (Istio): the first two attempts use the unmodified load", 2, policy(1, prevPrios(2)), 503},
		{"update_frequency 2 (Istio): the third attempt goes to priority 1", 3, policy(2, prevPrios(2)), 200},
		{"no retry_priority, 2 retries: all attempts in priority 0", 3, policy(2, nil), 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eps := []ep{{Addr: bad1}, {Addr: bad2}, {Addr: bad3}}[:tc.badP0]
			eps = append(eps, ep{Addr: good, Priority: 1})
			d := newDataplane(t, contract.Identity{}, nil)
			mustApply(t, d, resourcesAny(edsCluster(t, "svc", false, ""), cla("svc", eps...),
				routeConfig("r", vhost("v", []string{"*"}, withRetry(toCluster("", prefixMatch("/"), "svc"), tc.policy, 0))),
				httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
			base := "http://" + d.ListenerAddr("out").String()
			c := client(t, false)
			badHits.Store(0)
			goodHits.Store(0)
			const n = 20
			for i := range n {
				if got := do(t, c, "GET", base+"/", "svc", nil); got.code != tc.wantCode {
					t.Fatalf("request %d: got %d, want %d", i, got.code, tc.wantCode)
				}
			}
			attempts := int64(n) * int64(tc.policy.GetNumRetries().GetValue()+1)
			if tc.wantCode == 200 {
				if goodHits.Load() != n || badHits.Load() != attempts-n {
					t.Errorf("priority 1 saw %d, priority 0 %d; want %d and %d", goodHits.Load(), badHits.Load(), n, attempts-n)
				}
			} else if goodHits.Load() != 0 || badHits.Load() != attempts {
				t.Errorf("priority 1 saw %d, priority 0 %d; want 0 and %d", goodHits.Load(), badHits.Load(), attempts)
			}
		})
	}
}
