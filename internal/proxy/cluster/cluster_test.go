package cluster

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestBuildCarriesState: an identical update keeps the cluster's state and
// its endpoints; an endpoint-only update keeps the state and replaces the
// endpoints; a changed Cluster gets new state.
func TestBuildCarriesState(t *testing.T) {
	b := testBuilder(t)
	mk := func(addr string, timeout time.Duration) (*clusterv3.Cluster, map[string]*endpointv3.ClusterLoadAssignment) {
		c := edsCluster(t, "svc", false, "")
		c.ConnectTimeout = durationpb.New(timeout)
		return c, map[string]*endpointv3.ClusterLoadAssignment{"svc": cla("svc", ep{Addr: addr})}
	}
	build := func(prev *Cluster, addr string, timeout time.Duration) *Cluster {
		t.Helper()
		c, eps := mk(addr, timeout)
		ct, err := b.Build(c, eps, prev)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ct.CloseIdle)
		return ct
	}
	first := build(nil, "10.0.0.1:80", time.Second)
	same := build(first, "10.0.0.1:80", time.Second)
	if !same.SharesState(first) || same.picker != first.picker {
		t.Errorf("identical update replaced state or endpoints")
	}
	moved := build(same, "10.0.0.2:80", time.Second)
	if !moved.SharesState(first) || moved.picker == first.picker {
		t.Errorf("endpoint-only update: state kept=%v endpoints replaced=%v", moved.SharesState(first), moved.picker != first.picker)
	}
	if e := moved.Pick(HashKey{}); e == nil || e.Addr() != "10.0.0.2:80" || e.Conns() == nil {
		t.Errorf("picked %v, want the new endpoint with its connections", e)
	}
	changed := build(moved, "10.0.0.2:80", 2*time.Second)
	if changed.SharesState(moved) {
		t.Errorf("changed cluster kept its state")
	}
}

func TestBuildErrors(t *testing.T) {
	b := testBuilder(t)
	for _, tc := range []struct {
		name string
		mod  func(c *clusterv3.Cluster)
		want string
	}{
		{"original dst", func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		}, "type: ORIGINAL_DST is unsupported"},
		{"lb policy", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }, "lb_policy"},
		{"connect timeout", func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(0) }, "connect_timeout"},
		{"retry budget", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}}}
		}, "circuit_breakers.thresholds[0].retry_budget: unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster(t, "svc", false, "")
			tc.mod(c)
			ct, err := b.Build(c, nil, nil)
			if err == nil {
				ct.CloseIdle()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
}
