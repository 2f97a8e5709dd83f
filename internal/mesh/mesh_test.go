package mesh

import (
	"net/netip"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

func meta(kind config.Kind, ns, name string) config.Meta {
	return config.Meta{Kind: kind, Namespace: ns, Name: name}
}

func TestIndexes(t *testing.T) {
	reviews := "reviews.default.svc.cluster.local"
	reg := registry.NewSnapshot([]*registry.Service{
		{Hostname: reviews, Namespace: "default"},
		{Hostname: "api.example.com", Namespace: "ext"},
	}, nil)
	cfg := &config.Snapshot{
		Version: 7,
		VirtualServices: []*config.VirtualService{
			{Meta: meta(config.KindVirtualService, "default", "b"), Spec: &networking.VirtualService{Hosts: []string{"reviews"}}},
			{Meta: meta(config.KindVirtualService, "default", "a"), Spec: &networking.VirtualService{Hosts: []string{"reviews.default.svc.cluster.local", "reviews"}}},
			{Meta: meta(config.KindVirtualService, "default", "gw"), Spec: &networking.VirtualService{Hosts: []string{"reviews"}, Gateways: []string{"ingress"}}},
			{Meta: meta(config.KindVirtualService, "other", "wild"), Spec: &networking.VirtualService{Hosts: []string{"*.example.com"}}},
		},
		DestinationRules: []*config.DestinationRule{
			{Meta: meta(config.KindDestinationRule, "aaa", "first"), Spec: &networking.DestinationRule{Host: reviews, Subsets: []*networking.Subset{{Name: "x"}}}},
			{Meta: meta(config.KindDestinationRule, "default", "own"), Spec: &networking.DestinationRule{Host: "reviews", Subsets: []*networking.Subset{{Name: "v1"}}}},
			{Meta: meta(config.KindDestinationRule, "zzz", "later"), Spec: &networking.DestinationRule{Host: "api.example.com"}},
			{Meta: meta(config.KindDestinationRule, "aaa", "earlier"), Spec: &networking.DestinationRule{Host: "api.example.com"}},
		},
	}
	s := New(cfg, reg, "")

	var names []string
	for _, vs := range s.Routes.ForHost(reviews) {
		names = append(names, vs.Name)
	}
	if len(names) != 1 || names[0] != "a" {
		t.Errorf("VirtualServices for reviews = %v, want [a] (one per host: the first seen, here by namespace/name; gateway-only left out)", names)
	}
	if got := s.Routes.ForHost("api.example.com"); len(got) != 1 || got[0].Name != "wild" {
		t.Errorf("wildcard VirtualService not indexed for api.example.com: %v", got)
	}
	if dr := s.Subsets.ForHost(reviews); dr == nil || dr.Name != "own" {
		t.Errorf("DestinationRule for reviews = %v, want the one in its own namespace", dr)
	}
	if _, ok := s.Subsets.Subset(reviews, "v1"); !ok {
		t.Error("subset v1 not found")
	}
	if dr := s.Subsets.ForHost("api.example.com"); dr == nil || dr.Name != "earlier" {
		t.Errorf("DestinationRule for api.example.com = %v, want the first by namespace/name", dr)
	}

	// Version follows config and registry content.
	same := New(cfg, registry.NewSnapshot([]*registry.Service{{Hostname: reviews, Namespace: "default"}, {Hostname: "api.example.com", Namespace: "ext"}}, nil), "")
	if same.Version != s.Version {
		t.Errorf("equal inputs, versions %q and %q", s.Version, same.Version)
	}
	moreEPs := New(cfg, registry.NewSnapshot(reg.Services(), []*registry.Endpoint{{ServiceHostname: reviews, ServicePort: 80, Address: "10.0.0.1", Port: 80}}), "")
	if moreEPs.Version == s.Version {
		t.Error("an endpoint change did not change the version")
	}
	vip := func(a string) *Snapshot {
		return New(cfg, registry.NewSnapshot([]*registry.Service{{Hostname: reviews, Namespace: "default", Addresses: []netip.Addr{netip.MustParseAddr(a)}}, {Hostname: "api.example.com", Namespace: "ext"}}, nil), "")
	}
	if v1, v2 := vip("10.96.0.10"), vip("10.96.0.11"); v1.Version == s.Version || v1.Version == v2.Version || v1.Version != vip("10.96.0.10").Version {
		t.Errorf("a VIP change must change the version, equal VIPs must not: %q %q %q", s.Version, v1.Version, v2.Version)
	}
	if empty := New(nil, nil, ""); empty.Routes.ForHost(reviews) != nil || empty.DomainSuffix != registry.DefaultDomainSuffix {
		t.Error("New(nil, nil) is not an empty snapshot")
	}
}

func TestOutboundTrafficPolicy(t *testing.T) {
	if got := New(nil, nil, "").OutboundTrafficPolicy; got != AllowAny {
		t.Errorf("default outbound traffic policy = %q, want %q (Istio's)", got, AllowAny)
	}
	if got := Build(nil, nil, Options{OutboundTrafficPolicy: RegistryOnly}).OutboundTrafficPolicy; got != RegistryOnly {
		t.Errorf("outbound traffic policy = %q, want %q", got, RegistryOnly)
	}
	for in, want := range map[string]OutboundTrafficPolicy{"ALLOW_ANY": AllowAny, "REGISTRY_ONLY": RegistryOnly} {
		if got, err := ParseOutboundTrafficPolicy(in); got != want || err != nil {
			t.Errorf("ParseOutboundTrafficPolicy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseOutboundTrafficPolicy("allow_any"); err == nil || err.Error() != `outbound traffic policy "allow_any": want ALLOW_ANY or REGISTRY_ONLY` {
		t.Errorf("lower case: error = %v", err)
	}
}

// A Gateway translated from the Gateway API picks gateway proxies of its
// own namespace only: two teams may both name their Gateway "public".
// An Istio Gateway picks proxies of any namespace, as in Istio.
func TestGatewaysTranslatedFromGatewayAPIStayInTheirNamespace(t *testing.T) {
	label := map[string]string{config.GatewayNameLabel: "public"}
	translated := func(ns string) *config.Gateway {
		return &config.Gateway{
			Meta:        meta(config.KindGateway, ns, "public-gwapi-http"),
			Spec:        &networking.Gateway{Selector: label},
			Annotations: map[string]string{config.AnnotationGeneratedFrom: "Gateway.gateway.networking.k8s.io " + ns + "/public"},
		}
	}
	istio := &config.Gateway{Meta: meta(config.KindGateway, "istio-system", "ingress"), Spec: &networking.Gateway{Selector: label}}
	s := New(&config.Snapshot{Gateways: []*config.Gateway{translated("team-a"), translated("team-b"), istio}}, nil, "")
	for ns, want := range map[string][]string{
		"team-a": {"team-a/public-gwapi-http", "istio-system/ingress"},
		"team-b": {"team-b/public-gwapi-http", "istio-system/ingress"},
		"team-c": {"istio-system/ingress"},
	} {
		var got []string
		for _, gw := range s.Gateways.ForWorkload(ns, label) {
			got = append(got, gw.Namespace+"/"+gw.Name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("proxy in %s: gateways %v, want %v", ns, got, want)
		}
	}
}
