package proxytest

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBuilders(t *testing.T) {
	r := Resources(StaticCluster(t, "c", "127.0.0.1:8080"),
		CLA("e", Endpoint{Addr: "10.0.0.1:80"}, Endpoint{Addr: "10.0.0.2:80", Priority: 1}, Endpoint{Addr: "10.0.0.3:80"}),
		RouteConfig("r", VHost("v", []string{"*"}, ToWeighted("w", PrefixMatch("/"), map[string]uint32{"b": 1, "a": 2}))),
		HTTPListener(t, "l", core.TrafficDirection_INBOUND, "r", nil))
	if r.Clusters["c"] == nil || r.Endpoints["e"] == nil || r.Routes["r"] == nil || r.Listeners["l"] == nil {
		t.Fatalf("resources not keyed by name: %v", r)
	}
	if locs := r.Endpoints["e"].GetEndpoints(); len(locs) != 2 || len(locs[0].GetLbEndpoints()) != 2 || locs[1].GetPriority() != 1 {
		t.Errorf("CLA does not group by priority: %v", locs)
	}
	wc := r.Routes["r"].GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].GetName() != "a" || wc[1].GetName() != "b" {
		t.Errorf("weighted clusters not in name order: %v", wc)
	}
}
