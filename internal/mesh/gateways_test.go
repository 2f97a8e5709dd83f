package mesh

import (
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
)

func gw(ns, name string, selector map[string]string, hosts ...string) *config.Gateway {
	return &config.Gateway{Meta: config.Meta{Kind: config.KindGateway, Namespace: ns, Name: name},
		Spec: &networking.Gateway{Selector: selector, Servers: []*networking.Server{{
			Port: &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"}, Hosts: hosts}}}}
}

func boundVS(ns, name string, gateways, hosts, exportTo []string) *config.VirtualService {
	return &config.VirtualService{Meta: config.Meta{Kind: config.KindVirtualService, Namespace: ns, Name: name},
		Spec: &networking.VirtualService{Hosts: hosts, Gateways: gateways, ExportTo: exportTo}}
}

// Which Gateways pick a gateway proxy, which VirtualServices bind to a
// Gateway and are visible to it, and which of their hosts a server
// serves: Istio's rules.
func TestGatewayIndex(t *testing.T) {
	a := gw("team-a", "ingress", map[string]string{"istio": "a"}, "team-a/*.a.example.com")
	all := gw("istio-system", "shared", nil, "*")
	idx := newGatewayIndex([]*config.Gateway{a, all}, []*config.VirtualService{
		boundVS("team-a", "web", []string{"ingress"}, []string{"www.a.example.com"}, nil),
		boundVS("team-b", "intruder", []string{"team-a/ingress"}, []string{"x.a.example.com"}, nil),
		boundVS("team-a", "hidden", []string{"ingress"}, []string{"h.a.example.com"}, []string{"."}),
		boundVS("team-a", "legacy", []string{"ingress.team-a.svc.cluster.local"}, []string{"l.a.example.com"}, nil),
		boundVS("team-a", "mesh-only", []string{"mesh"}, []string{"m.a.example.com"}, nil),
	})
	names := func(gs []*config.Gateway) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.Namespace+"/"+g.Name)
		}
		slices.Sort(out) // all first seen at once: any order
		return out
	}
	if got := names(idx.ForWorkload("istio-system", map[string]string{"istio": "a"})); !slices.Equal(got, []string{"istio-system/shared", "team-a/ingress"}) {
		t.Errorf("gateways for istio=a: %v (an empty selector picks every gateway proxy)", got)
	}
	if got := names(idx.ForWorkload("istio-system", map[string]string{"istio": "b"})); !slices.Equal(got, []string{"istio-system/shared"}) {
		t.Errorf("gateways for istio=b: %v", got)
	}
	var bound []string
	for _, vs := range idx.Bound(a, "istio-system") {
		bound = append(bound, vs.Namespace+"/"+vs.Name)
	}
	slices.Sort(bound)
	if !slices.Equal(bound, []string{"team-a/legacy", "team-a/web", "team-b/intruder"}) {
		t.Errorf("bound to team-a/ingress, seen from istio-system: %v (exportTo . hides team-a/hidden; mesh-only binds no gateway)", bound)
	}
	for _, tc := range []struct {
		vs   *config.VirtualService
		want []string
	}{
		{boundVS("team-a", "web", nil, []string{"www.a.example.com", "www.b.example.com"}, nil), []string{"www.a.example.com"}},
		{boundVS("team-b", "intruder", nil, []string{"x.a.example.com"}, nil), nil}, // the server admits team-a only
		{boundVS("team-a", "wild", nil, []string{"*.example.com"}, nil), []string{"*.a.example.com"}},
		{boundVS("team-a", "star", nil, []string{"*"}, nil), []string{"*.a.example.com"}},
	} {
		if got := ServerHosts(a, a.Spec.GetServers()[0], tc.vs); !slices.Equal(got, tc.want) {
			t.Errorf("ServerHosts(%s %v) = %v, want %v", tc.vs.Name, tc.vs.Spec.GetHosts(), got, tc.want)
		}
	}
	dot := gw("team-a", "dot", nil, "./*")
	if got := ServerHosts(dot, dot.Spec.GetServers()[0], boundVS("team-a", "v", nil, []string{"a.example.com"}, nil)); !slices.Equal(got, []string{"a.example.com"}) {
		t.Errorf("\"./*\" admits its own namespace: %v", got)
	}
	if got := ServerHosts(dot, dot.Spec.GetServers()[0], boundVS("team-b", "v", nil, []string{"a.example.com"}, nil)); got != nil {
		t.Errorf("\"./*\" admits another namespace: %v", got)
	}
	for _, tc := range []struct {
		a, b, want string
		ok         bool
	}{
		{"*", "a.example.com", "a.example.com", true},
		{"*.example.com", "*.a.example.com", "*.a.example.com", true},
		{"a.example.com", "*.example.com", "a.example.com", true},
		{"*.example.com", "example.com", "", false},
		{"a.example.com", "b.example.com", "", false},
	} {
		if got, ok := IntersectHosts(tc.a, tc.b); got != tc.want || ok != tc.ok {
			t.Errorf("IntersectHosts(%q, %q) = %q %v, want %q %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
}
