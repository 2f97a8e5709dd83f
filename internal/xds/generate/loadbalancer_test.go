package generate

import (
	"fmt"
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// loadBalancerCases: a top-level cookie hash (ring), a subset with maglev
// on a header, a port-level LEAST_REQUEST with warmup, and locality
// failover with outlier detection for a proxy in us-east/1a.
func loadBalancerCases() []goldenCase {
	return []goldenCase{{
		name: "load_balancer_hash_locality",
		mesh: func() *mesh.Snapshot {
			eps := []*registry.Endpoint{
				reviewsEndpoint("10.0.0.1", "v1", 9080),
				reviewsEndpoint("10.0.0.2", "v1", 9080),
				reviewsEndpoint("10.0.0.3", "v2", 9080),
				reviewsEndpoint("10.0.0.4", "v2", 9080),
			}
			eps[0].Locality = "us-east/us-east-1a"
			eps[1].Locality = "us-east/us-east-1b"
			eps[2].Locality = "us-west/us-west-1a"
			eps[3].Locality = "eu-west/eu-west-1a"
			reg := registry.NewSnapshot([]*registry.Service{reviewsService(
				registry.Port{Name: "http", Number: 9080, Protocol: registry.HTTP},
				registry.Port{Name: "admin", Number: 9090, Protocol: registry.HTTP},
			)}, eps)
			cfg := &config.Snapshot{Version: 1,
				VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
					Hosts: []string{"reviews"},
					Http: []*networking.HTTPRoute{{Name: "split", Route: []*networking.HTTPRouteDestination{
						dest("reviews", "v1", 80), dest("reviews", "v2", 20),
					}}},
				})},
				DestinationRules: []*config.DestinationRule{dr("reviews", &networking.DestinationRule{
					Host: "reviews",
					TrafficPolicy: &networking.TrafficPolicy{
						LoadBalancer: &networking.LoadBalancerSettings{
							LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
								HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &networking.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{
									Name: "user", Path: "/", Ttl: durationpb.New(3600e9),
								}},
							}},
							LocalityLbSetting: &networking.LocalityLoadBalancerSetting{
								Failover: []*networking.LocalityLoadBalancerSetting_Failover{{From: "us-east", To: "us-west"}},
							},
						},
						OutlierDetection: &networking.OutlierDetection{BaseEjectionTime: durationpb.New(30e9)},
						PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
							Port: &networking.PortSelector{Number: 9090},
							LoadBalancer: &networking.LoadBalancerSettings{
								LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_LEAST_REQUEST},
								Warmup:   &networking.WarmupConfiguration{Duration: durationpb.New(60e9)},
							},
						}},
					},
					Subsets: []*networking.Subset{
						{Name: "v1", Labels: map[string]string{"version": "v1"}},
						{Name: "v2", Labels: map[string]string{"version": "v2"}, TrafficPolicy: &networking.TrafficPolicy{
							LoadBalancer: &networking.LoadBalancerSettings{
								LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
									HashKey:       &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"},
									HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networking.LoadBalancerSettings_ConsistentHashLB_MagLev{TableSize: 1021}},
								}},
							},
						}},
					},
				})},
			}
			return mesh.New(cfg, reg, "")
		},
		proxy: func() contract.Identity {
			id := productpage
			id.Locality = "us-east/us-east-1a"
			return id
		}(),
	}}
}

func TestApplyLoadBalancer(t *testing.T) {
	ch := func(c *networking.LoadBalancerSettings_ConsistentHashLB) *networking.LoadBalancerSettings {
		c.HashKey = &networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp{UseSourceIp: true}
		return &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: c}}
	}
	simple := func(s networking.LoadBalancerSettings_SimpleLB) *networking.LoadBalancerSettings {
		return &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: s}}
	}
	for _, tc := range []struct {
		name   string
		lb     *networking.LoadBalancerSettings
		policy cluster.Cluster_LbPolicy
		config string
	}{
		{"none", nil, cluster.Cluster_ROUND_ROBIN, "<nil>"},
		{"round robin", simple(networking.LoadBalancerSettings_ROUND_ROBIN), cluster.Cluster_ROUND_ROBIN, "<nil>"},
		{"random", simple(networking.LoadBalancerSettings_RANDOM), cluster.Cluster_RANDOM, "<nil>"},
		{"least conn is least request", simple(networking.LoadBalancerSettings_LEAST_CONN), cluster.Cluster_LEAST_REQUEST, "<nil>"},
		{"warmup secs", &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_ROUND_ROBIN}, WarmupDurationSecs: durationpb.New(30e9)},
			cluster.Cluster_ROUND_ROBIN, "&{slow_start_config:{slow_start_window:{seconds:30}}}"},
		{"default hash is a 1024 ring", ch(&networking.LoadBalancerSettings_ConsistentHashLB{}), cluster.Cluster_RING_HASH, "&{minimum_ring_size:{value:1024}}"},
		{"ring size", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_RingHash_{RingHash: &networking.LoadBalancerSettings_ConsistentHashLB_RingHash{MinimumRingSize: 64}}}),
			cluster.Cluster_RING_HASH, "&{minimum_ring_size:{value:64}}"},
		{"maglev default", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networking.LoadBalancerSettings_ConsistentHashLB_MagLev{}}}),
			cluster.Cluster_MAGLEV, "<nil>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cluster.Cluster{}
			applyLoadBalancer(c, tc.lb)
			cfg := "<nil>"
			if c.LbConfig != nil {
				cfg = fmt.Sprint(c.LbConfig)
			}
			if c.LbPolicy != tc.policy || compact(cfg) != compact(tc.config) {
				t.Errorf("got %s %s, want %s %s", c.LbPolicy, cfg, tc.policy, tc.config)
			}
		})
	}
}

func compact(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r != ' ' && r != '\u00a0' {
			out = append(out, r)
		}
	}
	return string(out)
}

func TestLocalityPriorities(t *testing.T) {
	loc := func(s string) *endpoint.LocalityLbEndpoints {
		return &endpoint.LocalityLbEndpoints{Locality: contract.NodeLocality(s), LbEndpoints: []*endpoint.LbEndpoint{{}}}
	}
	proxy := &core.Locality{Region: "r1", Zone: "z1", SubZone: "s1"}
	for _, tc := range []struct {
		name     string
		locs     []string
		failover []*networking.LocalityLoadBalancerSetting_Failover
		want     string
	}{
		{"proximity", []string{"r1/z1/s1", "r1/z1/s2", "r1/z2", "r2/z1"}, nil, "[0 1 2 3]"},
		{"no gaps", []string{"r2/z9", "r1/z1/s1"}, nil, "[1 0]"},
		{"failover target before other regions", []string{"r3/a", "r2/a", "r1/z2"},
			[]*networking.LocalityLoadBalancerSetting_Failover{{From: "r1", To: "r2"}}, "[2 1 0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cla := &endpoint.ClusterLoadAssignment{}
			for _, l := range tc.locs {
				cla.Endpoints = append(cla.Endpoints, loc(l))
			}
			applyLocalityFailover(proxy, cla, tc.failover)
			var got []uint32
			for _, e := range cla.Endpoints {
				got = append(got, e.Priority)
			}
			if fmt.Sprint(got) != tc.want {
				t.Errorf("priorities %v, want %s", got, tc.want)
			}
		})
	}
}

func TestFailoverPriorityAndDistribute(t *testing.T) {
	eps := []*registry.Endpoint{
		{Address: "a", Locality: "r1/z1", Labels: map[string]string{"net": "n1", "tier": "x"}},
		{Address: "b", Locality: "r1/z1", Labels: map[string]string{"net": "n1", "tier": "y"}},
		{Address: "c", Locality: "r1/z1", Labels: map[string]string{"net": "n2", "tier": "x"}},
	}
	cla := loadAssignment("c", eps, nil)
	applyFailoverPriorities(cla, eps, map[string]string{"net": "n1", "tier": "x"}, []string{"net", "tier"})
	var got []string
	for _, le := range cla.Endpoints {
		for range le.LbEndpoints {
			got = append(got, fmt.Sprint(le.Priority))
		}
	}
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Errorf("failoverPriority priorities %v, want [0 1 2] (all match, net only, none)", got)
	}
	// As Istio: a label neither the proxy nor the endpoint has matches;
	// a first network label that differs ranks the endpoint by the rest,
	// below the proxy's network.
	for _, tc := range []struct {
		labels []string
		want   string
	}{
		{[]string{"absent", "tier"}, "[0 1 0]"},
		{[]string{topologyNetworkLabel, "tier"}, "[0 1 2]"},
	} {
		eps := []*registry.Endpoint{
			{Address: "a", Locality: "r1/z1", Labels: map[string]string{topologyNetworkLabel: "n1", "tier": "x"}},
			{Address: "b", Locality: "r1/z1", Labels: map[string]string{topologyNetworkLabel: "n1", "tier": "y"}},
			{Address: "c", Locality: "r1/z1", Labels: map[string]string{topologyNetworkLabel: "n2", "tier": "x"}},
		}
		cla := loadAssignment("c", eps, nil)
		applyFailoverPriorities(cla, eps, map[string]string{topologyNetworkLabel: "n1", "tier": "x"}, tc.labels)
		got := map[string]uint32{}
		for _, le := range cla.Endpoints {
			for _, e := range le.LbEndpoints {
				got[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = le.Priority
			}
		}
		if s := fmt.Sprint([]uint32{got["a"], got["b"], got["c"]}); s != tc.want {
			t.Errorf("failoverPriority %v: priorities of a, b, c %s, want %s", tc.labels, s, tc.want)
		}
	}

	cla = loadAssignment("c", []*registry.Endpoint{
		{Address: "a", Locality: "r1/z1"}, {Address: "b", Locality: "r1/z1"}, {Address: "c", Locality: "r1/z2"}, {Address: "d", Locality: "r2/z1"},
	}, nil)
	for _, le := range cla.Endpoints {
		le.LoadBalancingWeight = nil
	}
	applyLocalityWeights(&core.Locality{Region: "r1", Zone: "z1"}, cla, []*networking.LocalityLoadBalancerSetting_Distribute{
		{From: "r1/z1/*", To: map[string]uint32{"r1/z1/*": 80, "r1/z2/*": 20}},
	})
	var w []string
	for _, le := range cla.Endpoints {
		w = append(w, fmt.Sprintf("%s=%d/%d", contract.LocalityString(le.Locality), le.GetLoadBalancingWeight().GetValue(), len(le.LbEndpoints)))
	}
	if fmt.Sprint(w) != "[r1/z1=80/2 r1/z2=20/1 r2/z1=0/0]" {
		t.Errorf("distribute: %v", w)
	}
}

// A proxy without a locality still gets locality weights (the cluster has
// locality_weighted_lb_config) but no priorities.
func TestLocalityLBWithoutProxyLocality(t *testing.T) {
	s := loadBalancerCases()[0].mesh()
	for _, r := range ForProxy(s, productpage).Endpoints {
		cla := r.(*endpoint.ClusterLoadAssignment)
		if cla.GetClusterName() != contract.ClusterName(contract.Outbound, 9080, "", reviews) {
			continue
		}
		for _, le := range cla.GetEndpoints() {
			if le.GetPriority() != 0 || le.GetLoadBalancingWeight().GetValue() != 1 {
				t.Errorf("%v: priority %d weight %v, want 0 and 1", le.GetLocality(), le.GetPriority(), le.GetLoadBalancingWeight())
			}
		}
		return
	}
	t.Fatal("no assignment for the reviews cluster")
}

// zonalReviews are three reviews endpoints on 9080, in us-east-1a,
// us-east-1b and us-west-1a.
func zonalReviews() []*registry.Endpoint {
	eps := []*registry.Endpoint{
		reviewsEndpoint("10.0.0.1", "v1", 9080),
		reviewsEndpoint("10.0.0.2", "v1", 9080),
		reviewsEndpoint("10.0.0.3", "v1", 9080),
	}
	eps[0].Locality, eps[1].Locality, eps[2].Locality = "us-east/us-east-1a", "us-east/us-east-1b", "us-west/us-west-1a"
	return eps
}

// TestMeshLocalityDefault: as in Istio, locality load balancing is on
// mesh-wide by default (mesh config localityLbSetting {enabled: true}), so
// a DestinationRule with outlier detection and no localityLbSetting gives
// a proxy's assignment priorities by proximity (its zone first, its
// region next, then the rest), without locality_weighted_lb_config; a
// mesh config that disables it, a rule that disables it, or a rule
// without outlier detection leaves every endpoint at priority 0, and
// then the assignment is the same for proxies of every locality.
func TestMeshLocalityDefault(t *testing.T) {
	eps := zonalReviews()
	reg := registry.NewSnapshot([]*registry.Service{reviewsService(registry.Port{Name: "http", Number: 9080, Protocol: registry.HTTP})}, eps)
	build := func(tp *networking.TrafficPolicy, mc *meshconfig.MeshConfig) *mesh.Snapshot {
		cfg := &config.Snapshot{Version: 1, DestinationRules: []*config.DestinationRule{dr("reviews", &networking.DestinationRule{Host: "reviews", TrafficPolicy: tp})}}
		return mesh.Build(cfg, reg, mesh.Options{MeshConfig: mc})
	}
	outlier := &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(1), BaseEjectionTime: durationpb.New(30e9)}
	proxy := productpage
	proxy.Locality = "us-east/us-east-1a"
	name := contract.ClusterName(contract.Outbound, 9080, "", reviews)
	priorities := func(s *mesh.Snapshot, id contract.Identity) string {
		t.Helper()
		res := ForProxy(s, id)
		for _, r := range res.Clusters {
			if c := r.(*cluster.Cluster); c.GetName() == name && c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil {
				t.Errorf("%s has locality_weighted_lb_config; Istio sets it only to distribute or fail over by region or labels", name)
			}
		}
		for _, r := range res.Endpoints {
			if cla := r.(*endpoint.ClusterLoadAssignment); cla.GetClusterName() == name {
				got := map[string]uint32{}
				for _, le := range cla.GetEndpoints() {
					got[le.GetLocality().GetZone()] = le.GetPriority()
				}
				return fmt.Sprint(got)
			}
		}
		t.Fatalf("no assignment for %s", name)
		return ""
	}
	off := &meshconfig.MeshConfig{LocalityLbSetting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(false)}}
	for _, tc := range []struct {
		name string
		tp   *networking.TrafficPolicy
		mc   *meshconfig.MeshConfig
		want string
	}{
		{"outlier detection, the mesh default", &networking.TrafficPolicy{OutlierDetection: outlier}, nil, "map[us-east-1a:0 us-east-1b:1 us-west-1a:2]"},
		{"the mesh config disables it", &networking.TrafficPolicy{OutlierDetection: outlier}, off, "map[us-east-1a:0 us-east-1b:0 us-west-1a:0]"},
		{"the rule enables it over the mesh config", &networking.TrafficPolicy{OutlierDetection: outlier, LoadBalancer: &networking.LoadBalancerSettings{
			LocalityLbSetting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)}}}, off, "map[us-east-1a:0 us-east-1b:1 us-west-1a:2]"},
		{"the rule disables it", &networking.TrafficPolicy{OutlierDetection: outlier, LoadBalancer: &networking.LoadBalancerSettings{
			LocalityLbSetting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(false)}}}, nil, "map[us-east-1a:0 us-east-1b:0 us-west-1a:0]"},
		{"no outlier detection: no failover", &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{
			LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_ROUND_ROBIN}}}, nil, "map[us-east-1a:0 us-east-1b:0 us-west-1a:0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := build(tc.tp, tc.mc)
			if got := priorities(s, proxy); got != tc.want {
				t.Errorf("priorities by zone %s, want %s", got, tc.want)
			}
			// The assignment depends on the proxy's locality only where
			// it fails over: elsewhere proxies of every locality share it.
			west := proxy
			west.Locality = "us-west/us-west-1a"
			shared := claKeyOf(s, proxy, reviews, 9080, "") == claKeyOf(s, west, reviews, 9080, "")
			if failsOver := strings.Contains(tc.want, ":1"); shared == failsOver {
				t.Errorf("proxies of two localities share the assignment: %v, want %v", shared, !failsOver)
			}
		})
	}
}

// TestTrafficDistribution: a service's trafficDistribution (Kubernetes'
// PreferClose / PreferSameZone) keeps a proxy's traffic in its zone, then
// its region, without outlier detection, as in Istio (failoverPriority
// network, region, zone, forced); a DestinationRule's localityLbSetting
// still wins. Proxies of one zone that differ in other labels share the
// assignment.
func TestTrafficDistribution(t *testing.T) {
	eps := zonalReviews()
	svc := reviewsService(registry.Port{Name: "http", Number: 9080, Protocol: registry.HTTP})
	svc.TrafficDistribution = registry.ParseTrafficDistribution("PreferClose")
	reg := registry.NewSnapshot([]*registry.Service{svc}, eps)
	name := contract.ClusterName(contract.Outbound, 9080, "", reviews)
	proxy := productpage
	proxy.Locality = "us-east/us-east-1a"
	check := func(s *mesh.Snapshot, want string, weighted bool) {
		t.Helper()
		res := ForProxy(s, proxy)
		for _, r := range res.Clusters {
			if c := r.(*cluster.Cluster); c.GetName() == name && (c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil) != weighted {
				t.Errorf("locality_weighted_lb_config set: %v, want %v", !weighted, weighted)
			}
		}
		for _, r := range res.Endpoints {
			if cla := r.(*endpoint.ClusterLoadAssignment); cla.GetClusterName() == name {
				got := map[string]uint32{}
				for _, le := range cla.GetEndpoints() {
					got[le.GetLocality().GetZone()] = le.GetPriority()
				}
				if fmt.Sprint(got) != want {
					t.Errorf("priorities by zone %v, want %s", got, want)
				}
				return
			}
		}
		t.Fatalf("no assignment for %s", name)
	}
	s := mesh.Build(&config.Snapshot{Version: 1}, reg, mesh.Options{})
	check(s, "map[us-east-1a:0 us-east-1b:1 us-west-1a:2]", true)
	other := proxy
	other.Labels = map[string]string{"app": "productpage", "version": "v2", "pod-template-hash": "x"}
	west := proxy
	west.Locality = "us-west/us-west-1a"
	if claKeyOf(s, proxy, reviews, 9080, "") != claKeyOf(s, other, reviews, 9080, "") || claKeyOf(s, proxy, reviews, 9080, "") == claKeyOf(s, west, reviews, 9080, "") {
		t.Error("assignments should be shared by the proxies of a zone, and differ between zones")
	}

	off := &config.Snapshot{Version: 1, DestinationRules: []*config.DestinationRule{dr("reviews", &networking.DestinationRule{Host: "reviews",
		TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{
			LocalityLbSetting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(false)}}}})}}
	check(mesh.Build(off, reg, mesh.Options{}), "map[us-east-1a:0 us-east-1b:0 us-west-1a:0]", false)

	for v, want := range map[string]string{"PreferClose": registry.TrafficPreferSameZone, "prefersamezone": registry.TrafficPreferSameZone,
		"PreferSameNode": registry.TrafficPreferSameNode, "Anywhere": "", "": ""} {
		if got := registry.ParseTrafficDistribution(v); got != want {
			t.Errorf("ParseTrafficDistribution(%q) = %q, want %q", v, got, want)
		}
	}
}
