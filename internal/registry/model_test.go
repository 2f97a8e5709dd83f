package registry_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"weft.dev/weft/internal/registry"
)

func TestParseProtocol(t *testing.T) {
	tests := []struct {
		in     string
		want   registry.Protocol
		wantOK bool
	}{
		{"HTTP", registry.HTTP, true},
		{"http", registry.HTTP, true},
		{"Http2", registry.HTTP2, true},
		{"GRPC", registry.GRPC, true},
		{"grpc-web", registry.GRPC, true},
		{"GRPC-Web", registry.GRPC, true},
		{"HTTPS", registry.HTTPS, true},
		{"TLS", registry.TLS, true},
		{"TCP", registry.TCP, true},
		{"Mongo", registry.TCP, true},
		{"MYSQL", registry.TCP, true},
		{"redis", registry.TCP, true},
		{"", registry.TCP, false},
		{"UDP", registry.TCP, false},
		{"HTTP/1.1", registry.TCP, false},
	}
	for _, tt := range tests {
		got, ok := registry.ParseProtocol(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseProtocol(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestProtocolClasses(t *testing.T) {
	tests := []struct {
		p           registry.Protocol
		http, http2 bool
		note        string
	}{
		{registry.HTTP, true, false, "HTTP/1.1 upstream"},
		{registry.HTTP2, true, true, "h2c upstream"},
		{registry.GRPC, true, true, "h2c upstream"},
		{registry.HTTPS, false, false, "not HTTP to the proxy"},
		{registry.TLS, false, false, "not HTTP to the proxy"},
		{registry.TCP, false, false, "not HTTP to the proxy"},
		{registry.Auto, false, false, "HTTP only when a captured sidecar detects it"},
	}
	for _, tt := range tests {
		if got := tt.p.IsHTTP(); got != tt.http {
			t.Errorf("%s.IsHTTP() = %v, want %v (%s)", tt.p, got, tt.http, tt.note)
		}
		if got := tt.p.IsHTTP2(); got != tt.http2 {
			t.Errorf("%s.IsHTTP2() = %v, want %v (%s)", tt.p, got, tt.http2, tt.note)
		}
	}
}

func TestServicePort(t *testing.T) {
	svc := &registry.Service{Hostname: "reviews.default.svc.cluster.local", Ports: []registry.Port{
		{Name: "http", Number: 9080, Protocol: registry.HTTP},
		{Name: "grpc", Number: 9090, Protocol: registry.GRPC, TargetPort: 19090},
	}}
	if p, ok := svc.Port(9090); !ok || p.Name != "grpc" || p.TargetPort != 19090 {
		t.Errorf("Port(9090) = %+v, %v; want the grpc port", p, ok)
	}
	if p, ok := svc.Port(80); ok || p != (registry.Port{}) {
		t.Errorf("Port(80) = %+v, %v; want zero, false", p, ok)
	}
}

// ep builds an endpoint of service host on servicePort at addr:port.
func ep(host string, svcPort uint32, addr string, port uint32) *registry.Endpoint {
	return &registry.Endpoint{ServiceHostname: host, ServicePort: svcPort, Address: addr, Port: port}
}

// epIDs renders endpoints as "host:servicePort@address:port".
func epIDs(eps []*registry.Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, fmt.Sprintf("%s:%d@%s:%d", e.ServiceHostname, e.ServicePort, e.Address, e.Port))
	}
	return out
}

func hostnames(svcs []*registry.Service) []string {
	out := []string{}
	for _, s := range svcs {
		out = append(out, s.Hostname)
	}
	return out
}

const (
	reviews = "reviews.default.svc.cluster.local"
	ratings = "ratings.default.svc.cluster.local"
	ghost   = "ghost.default.svc.cluster.local" // endpoints but no service
)

func testSnapshot() (*registry.Snapshot, []*registry.Endpoint) {
	first := &registry.Service{Hostname: reviews, Namespace: "default", Source: "first"}
	services := []*registry.Service{
		first,
		{Hostname: ratings, Namespace: "default"},
		{Hostname: reviews, Namespace: "other", Source: "second"}, // duplicate: ignored
		{Hostname: "api.example.com"},
	}
	endpoints := []*registry.Endpoint{
		ep(reviews, 9090, "10.0.0.2", 9090),
		ep(reviews, 9080, "10.0.0.3", 9080),
		ep(reviews, 9080, "10.0.0.2", 19080),
		ep(reviews, 9080, "10.0.0.2", 9080),
		ep(ratings, 9080, "10.0.0.3", 9080),
		ep(ghost, 80, "10.0.0.9", 80),
		ep(ratings, 9080, "10.0.0.1", 9080),
	}
	return registry.NewSnapshot(services, endpoints), endpoints
}

func TestNewSnapshotServices(t *testing.T) {
	s, _ := testSnapshot()
	if got, want := hostnames(s.Services()), []string{"api.example.com", ratings, reviews}; !slices.Equal(got, want) {
		t.Errorf("Services() = %q, want %q (sorted, duplicates once)", got, want)
	}
	if got := s.Service(reviews); got == nil || got.Source != "first" {
		t.Errorf("Service(%q) = %+v, want the first one given", reviews, got)
	}
	if got := s.Service(ghost); got != nil {
		t.Errorf("Service(%q) = %+v, want nil", ghost, got)
	}
	if got := s.Service("reviews"); got != nil {
		t.Errorf("Service(short name) = %+v, want nil: lookups take FQDNs", got)
	}
}

func TestSnapshotEndpoints(t *testing.T) {
	s, _ := testSnapshot()
	tests := []struct {
		host string
		port uint32
		want []string
	}{
		{reviews, 0, []string{
			reviews + ":9080@10.0.0.2:9080",
			reviews + ":9080@10.0.0.2:19080",
			reviews + ":9080@10.0.0.3:9080",
			reviews + ":9090@10.0.0.2:9090",
		}},
		{reviews, 9080, []string{
			reviews + ":9080@10.0.0.2:9080",
			reviews + ":9080@10.0.0.2:19080",
			reviews + ":9080@10.0.0.3:9080",
		}},
		{reviews, 9090, []string{reviews + ":9090@10.0.0.2:9090"}},
		{reviews, 1234, []string{}},
		{ratings, 0, []string{ratings + ":9080@10.0.0.1:9080", ratings + ":9080@10.0.0.3:9080"}},
		{ghost, 0, []string{ghost + ":80@10.0.0.9:80"}}, // kept although no service defines it
		{"api.example.com", 0, []string{}},
		{"nope.example.com", 80, []string{}},
	}
	for _, tt := range tests {
		if got := epIDs(s.Endpoints(tt.host, tt.port)); !slices.Equal(got, tt.want) {
			t.Errorf("Endpoints(%q, %d) =\n  %q\nwant\n  %q", tt.host, tt.port, got, tt.want)
		}
	}
}

func TestSnapshotEndpointsAt(t *testing.T) {
	s, _ := testSnapshot()
	tests := []struct {
		name  string
		addrs []string
		want  []string
	}{
		{"one address", []string{"10.0.0.2"}, []string{
			reviews + ":9080@10.0.0.2:9080",
			reviews + ":9080@10.0.0.2:19080",
			reviews + ":9090@10.0.0.2:9090",
		}},
		{"several addresses, by hostname then port then address", []string{"10.0.0.3", "10.0.0.9"}, []string{
			ghost + ":80@10.0.0.9:80",
			ratings + ":9080@10.0.0.3:9080",
			reviews + ":9080@10.0.0.3:9080",
		}},
		{"unknown address", []string{"192.0.2.1"}, []string{}},
		{"no addresses", nil, []string{}},
		{"empty list", []string{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := epIDs(s.EndpointsAt(tt.addrs)); !slices.Equal(got, tt.want) {
				t.Errorf("EndpointsAt(%q) =\n  %q\nwant\n  %q", tt.addrs, got, tt.want)
			}
		})
	}
}

func TestNewSnapshotDoesNotReorderInput(t *testing.T) {
	_, endpoints := testSnapshot()
	if got := epIDs(endpoints)[0]; got != reviews+":9090@10.0.0.2:9090" {
		t.Errorf("input endpoints reordered: first is %q", got)
	}
}

func TestEmptyAndNilSnapshot(t *testing.T) {
	for name, s := range map[string]*registry.Snapshot{
		"empty": registry.NewSnapshot(nil, nil),
		"nil":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			if got := s.Services(); len(got) != 0 {
				t.Errorf("Services() = %v, want none", got)
			}
			if got := s.Service(reviews); got != nil {
				t.Errorf("Service() = %v, want nil", got)
			}
			if got := s.Endpoints(reviews, 0); len(got) != 0 {
				t.Errorf("Endpoints() = %v, want none", got)
			}
			if got := s.EndpointsAt([]string{"10.0.0.1"}); len(got) != 0 {
				t.Errorf("EndpointsAt() = %v, want none", got)
			}
			if got := s.ServiceAt(netip.MustParseAddr("10.96.0.1")); len(got) != 0 {
				t.Errorf("ServiceAt() = %v, want none", got)
			}
		})
	}
}

func TestSnapshotServiceAt(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10")
	s := registry.NewSnapshot([]*registry.Service{
		{Hostname: "z.shop.svc.cluster.local", Addresses: []netip.Addr{vip}},
		{Hostname: "a.shop.svc.cluster.local", Addresses: []netip.Addr{vip, netip.MustParseAddr("fd00::10")}},
		{Hostname: "a.shop.svc.cluster.local", Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.99")}}, // duplicate hostname: loses
		{Hostname: "headless.shop.svc.cluster.local"},
	}, nil)
	names := func(ss []*registry.Service) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Hostname)
		}
		return out
	}
	for _, tc := range []struct {
		addr string
		want []string
	}{
		{"10.96.0.10", []string{"a.shop.svc.cluster.local", "z.shop.svc.cluster.local"}}, // overlapping: sorted by hostname
		{"::ffff:10.96.0.10", []string{"a.shop.svc.cluster.local", "z.shop.svc.cluster.local"}},
		{"fd00::10", []string{"a.shop.svc.cluster.local"}},
		{"10.96.0.99", nil}, // the losing duplicate's address is not indexed
		{"10.96.0.11", nil},
	} {
		if got := names(s.ServiceAt(netip.MustParseAddr(tc.addr))); !slices.Equal(got, tc.want) {
			t.Errorf("ServiceAt(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
