package mesh

import (
	"slices"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// scopeMesh: shop (frontend, cart), pay (billing, ledger), istio-system
// (telemetry) and an external host; shop's cart routes to billing, and
// billing to ledger.
func scopeMesh(sidecars []*config.Sidecar, def EgressScope, mc ...*meshconfig.MeshConfig) *Snapshot {
	svc := func(host, ns string, ports ...uint32) *registry.Service {
		s := &registry.Service{Hostname: host, Namespace: ns}
		for _, p := range ports {
			s.Ports = append(s.Ports, registry.Port{Number: p, Protocol: registry.HTTP})
		}
		return s
	}
	reg := registry.NewSnapshot([]*registry.Service{
		svc("frontend.shop.svc.cluster.local", "shop", 80),
		svc("cart.shop.svc.cluster.local", "shop", 80, 9090),
		svc("billing.pay.svc.cluster.local", "pay", 80),
		svc("ledger.pay.svc.cluster.local", "pay", 80),
		svc("telemetry.istio-system.svc.cluster.local", "istio-system", 80),
		svc("api.example.com", "ext", 443),
	}, nil)
	route := func(ns, host, dst string) *config.VirtualService {
		return &config.VirtualService{Meta: meta(config.KindVirtualService, ns, host), Spec: &networking.VirtualService{
			Hosts: []string{host},
			Http:  []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: dst}}}}},
		}}
	}
	cfg := &config.Snapshot{
		VirtualServices: []*config.VirtualService{route("shop", "cart", "billing.pay.svc.cluster.local"), route("pay", "billing", "ledger")},
		Sidecars:        sidecars,
	}
	opts := Options{EgressScope: def}
	if len(mc) > 0 {
		opts.MeshConfig = mc[0]
	}
	return Build(cfg, reg, opts)
}

func sidecar(ns, name string, seq uint64, spec *networking.Sidecar) *config.Sidecar {
	m := meta(config.KindSidecar, ns, name)
	m.Seq = seq
	return &config.Sidecar{Meta: m, Spec: spec}
}

func visible(s *Snapshot, v *Visibility) map[string][]uint32 {
	out := map[string][]uint32{}
	for _, svc := range s.Registry.Services() {
		for _, p := range svc.Ports {
			if v.Port(svc, p.Number) {
				out[svc.Hostname] = append(out[svc.Hostname], p.Number)
			}
		}
	}
	return out
}

func TestScopeDefaults(t *testing.T) {
	s := scopeMesh(nil, "")
	if v := s.Scopes.For("shop", nil); v != nil || v.Count() != -1 || v.OutboundTrafficPolicy(s) != AllowAny {
		t.Errorf("no Sidecar, mesh scope: want every service (nil), got %v", visible(s, v))
	}
	s = scopeMesh(nil, EgressScopeNamespace)
	v := s.Scopes.For("shop", nil)
	got := visible(s, v)
	// shop's own, the root namespace's, and billing (cart's route) and
	// ledger (billing's route), transitively; not api.example.com.
	want := []string{"frontend.shop.svc.cluster.local", "cart.shop.svc.cluster.local", "billing.pay.svc.cluster.local",
		"ledger.pay.svc.cluster.local", "telemetry.istio-system.svc.cluster.local"}
	if len(got) != len(want) {
		t.Errorf("namespace scope for shop = %v, want %v", got, want)
	}
	for _, h := range want {
		if got[h] == nil {
			t.Errorf("namespace scope for shop lacks %s: %v", h, got)
		}
	}
	if s.Scopes.For("shop", map[string]string{"app": "x"}) != v {
		t.Error("the scope of one namespace is not cached")
	}
}

func TestScopeSidecar(t *testing.T) {
	root := sidecar("istio-system", "default", 1, &networking.Sidecar{
		Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*", "istio-system/*"}}},
	})
	cart := sidecar("shop", "cart", 2, &networking.Sidecar{
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "cart"}},
		Egress: []*networking.IstioEgressListener{
			{Port: &networking.SidecarPort{Number: 9090}, Hosts: []string{"./cart.shop.svc.cluster.local"}},
			{Hosts: []string{"pay/*", "*/*.example.com"}},
		},
		OutboundTrafficPolicy: &networking.OutboundTrafficPolicy{Mode: networking.OutboundTrafficPolicy_REGISTRY_ONLY},
	})
	none := sidecar("pay", "lockdown", 3, &networking.Sidecar{
		Egress: []*networking.IstioEgressListener{{Hosts: []string{"~/*"}}},
	})
	s := scopeMesh([]*config.Sidecar{root, cart, none}, "")

	// The root default: "." is the proxy's own namespace.
	got := visible(s, s.Scopes.For("shop", map[string]string{"app": "frontend"}))
	if len(got) != 3 || got["frontend.shop.svc.cluster.local"] == nil || got["cart.shop.svc.cluster.local"] == nil || got["telemetry.istio-system.svc.cluster.local"] == nil {
		t.Errorf("root default for a shop proxy = %v, want shop's services and istio-system's", got)
	}
	// The workload's own: port 9090 only for cart, every other port by the
	// catch-all; its policy.
	v := s.Scopes.For("shop", map[string]string{"app": "cart"})
	got = visible(s, v)
	if len(got) != 4 || len(got["cart.shop.svc.cluster.local"]) != 1 || got["cart.shop.svc.cluster.local"][0] != 9090 ||
		got["billing.pay.svc.cluster.local"] == nil || got["ledger.pay.svc.cluster.local"] == nil || got["api.example.com"] == nil {
		t.Errorf("cart's Sidecar = %v, want cart:9090, pay's services, api.example.com", got)
	}
	if v.OutboundTrafficPolicy(s) != RegistryOnly || v.Sidecar != cart {
		t.Errorf("cart's Sidecar policy %s (sidecar %v), want REGISTRY_ONLY from shop/cart", v.OutboundTrafficPolicy(s), v.Sidecar)
	}
	// "~" imports nothing.
	if got := visible(s, s.Scopes.For("pay", nil)); len(got) != 0 {
		t.Errorf("~/* = %v, want nothing", got)
	}
}

// TestScopeExportTo: a service exported to fewer than every namespace is
// sent only to the sidecars of those, under every scope (the mesh
// default, the namespace scope, a Sidecar's egress hosts), and a route
// to it does not pull it in elsewhere.
func TestScopeExportTo(t *testing.T) {
	reg := registry.NewSnapshot([]*registry.Service{
		{Hostname: "billing.pay.svc.cluster.local", Namespace: "pay", ExportTo: []string{"pay", "shop"},
			Ports: []registry.Port{{Number: 80, Protocol: registry.HTTP}}},
		{Hostname: "ledger.pay.svc.cluster.local", Namespace: "pay", ExportTo: []string{"pay"},
			Ports: []registry.Port{{Number: 80, Protocol: registry.HTTP}}},
		{Hostname: "cart.shop.svc.cluster.local", Namespace: "shop",
			Ports: []registry.Port{{Number: 80, Protocol: registry.HTTP}}},
		{Hostname: "secret.ops.svc.cluster.local", Namespace: "ops", ExportTo: []string{},
			Ports: []registry.Port{{Number: 80, Protocol: registry.HTTP}}},
	}, nil)
	cfg := func(sidecars ...*config.Sidecar) *config.Snapshot {
		return &config.Snapshot{Sidecars: sidecars, VirtualServices: []*config.VirtualService{{
			Meta: meta(config.KindVirtualService, "shop", "cart"), Spec: &networking.VirtualService{
				Hosts: []string{"cart"},
				Http:  []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "ledger.pay.svc.cluster.local"}}}}},
			}}}}
	}
	names := func(s *Snapshot, v *Visibility) []string {
		var out []string
		for h := range visible(s, v) {
			out = append(out, h)
		}
		slices.Sort(out)
		return out
	}
	mesh := Build(cfg(), reg, Options{})
	for _, tc := range []struct {
		ns   string
		want []string
	}{
		{"shop", []string{"billing.pay.svc.cluster.local", "cart.shop.svc.cluster.local"}},
		{"pay", []string{"billing.pay.svc.cluster.local", "cart.shop.svc.cluster.local", "ledger.pay.svc.cluster.local"}},
		{"ops", []string{"cart.shop.svc.cluster.local"}},
	} {
		if got := names(mesh, mesh.Scopes.For(tc.ns, nil)); !slices.Equal(got, tc.want) {
			t.Errorf("mesh scope, namespace %s: sees %v, want %v", tc.ns, got, tc.want)
		}
	}
	// The namespace scope follows cart's route to ledger only where ledger is exported.
	ns := Build(cfg(), reg, Options{EgressScope: EgressScopeNamespace})
	if got, want := names(ns, ns.Scopes.For("shop", nil)), []string{"cart.shop.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("namespace scope, shop: sees %v, want %v (ledger is exported to pay only)", got, want)
	}
	// A Sidecar naming every host still cannot see what is not exported to it.
	sc := Build(cfg(sidecar("shop", "all", 1, &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"*/*"}}}})), reg, Options{})
	if got, want := names(sc, sc.Scopes.For("shop", nil)), []string{"billing.pay.svc.cluster.local", "cart.shop.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("Sidecar */*, shop: sees %v, want %v", got, want)
	}
	// Without a restricted service the mesh scope stays nil (sees everything).
	open := Build(&config.Snapshot{}, registry.NewSnapshot([]*registry.Service{{Hostname: "a.x.svc.cluster.local", Namespace: "x"}}, nil), Options{})
	if v := open.Scopes.For("y", nil); v != nil {
		t.Errorf("no exportTo anywhere: visibility %v, want nil (every service)", v)
	}
}

// The mesh config's external authorization providers are seen by every
// scoped proxy, whatever its Sidecar says: its CUSTOM policies call them.
func TestScopeSeesExtAuthzProviders(t *testing.T) {
	mc := config.DefaultMeshConfig()
	mc.ExtensionProviders = append(mc.ExtensionProviders, &meshconfig.MeshConfig_ExtensionProvider{
		Name: "billing-authz",
		Provider: &meshconfig.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc{EnvoyExtAuthzGrpc: &meshconfig.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider{
			Service: "pay/billing.pay.svc.cluster.local", Port: 80,
		}},
	})
	s := scopeMesh([]*config.Sidecar{sidecar("shop", "default", 1, &networking.Sidecar{
		Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*"}}},
	})}, "", mc)
	got := visible(s, s.Scopes.For("shop", nil))
	if len(got["billing.pay.svc.cluster.local"]) != 1 || got["ledger.pay.svc.cluster.local"] != nil || got["cart.shop.svc.cluster.local"] == nil {
		t.Errorf("shop's Sidecar scope with an ext_authz provider in pay: %v, want shop's services and billing:80", got)
	}
}
