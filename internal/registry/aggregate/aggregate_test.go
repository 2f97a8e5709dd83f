package aggregate

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"weft.dev/weft/internal/registry"
)

const order = "order.default.svc.cluster.local"

func svc(host, src string, ports ...registry.Port) *registry.Service {
	return &registry.Service{Hostname: host, Namespace: "default", Source: src, Ports: ports}
}

func port(n uint32, p registry.Protocol) registry.Port {
	return registry.Port{Name: fmt.Sprintf("%s-%d", strings.ToLower(string(p)), n), Number: n, Protocol: p}
}

func ep(host string, svcPort uint32, addr string, version string) *registry.Endpoint {
	return &registry.Endpoint{ServiceHostname: host, ServicePort: svcPort, Address: addr, Port: svcPort, Labels: map[string]string{"version": version}}
}

func part(name string, c registry.Contents) Part { return Part{Name: name, Snapshot: registry.New(c)} }

func render(s *registry.Snapshot) (svcs, eps, wls []string) {
	for _, sv := range s.Services() {
		var ps []string
		for _, p := range sv.Ports {
			ps = append(ps, fmt.Sprintf("%d/%s", p.Number, p.Protocol))
		}
		svcs = append(svcs, fmt.Sprintf("%s src=%s ports=%s", sv.Hostname, sv.Source, strings.Join(ps, ",")))
		for _, e := range s.Endpoints(sv.Hostname, 0) {
			eps = append(eps, fmt.Sprintf("%s:%d@%s:%d %s", e.ServiceHostname, e.ServicePort, e.Address, e.Port, registry.LabelString(e.Labels)))
		}
	}
	for _, w := range s.Workloads() {
		wls = append(wls, w.Source+":"+w.Namespace+"/"+w.Name)
	}
	return svcs, eps, wls
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name      string
		parts     []Part
		services  []string
		endpoints []string
		workloads []string
		conflicts []string
	}{
		{
			name:  "nothing",
			parts: []Part{{Name: "static"}},
		},
		{
			name: "a host in Kubernetes and Consul has the endpoints of both",
			parts: []Part{
				{Name: "static"},
				part("kubernetes", registry.Contents{
					Services:  []*registry.Service{svc(order, "kubernetes", port(8080, registry.HTTP))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.244.0.5", "k8s")},
					Workloads: []*registry.Workload{{Name: "order-abc", Namespace: "default", Source: "kubernetes"}},
				}),
				part("consul", registry.Contents{
					Services: []*registry.Service{
						svc(order, "consul", port(8080, registry.HTTP)),
						svc("order.service.consul", "consul", port(8080, registry.HTTP)),
					},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.1.0.1", "vm"), ep("order.service.consul", 8080, "10.1.0.1", "vm")},
				}),
			},
			services: []string{
				order + " src=kubernetes ports=8080/HTTP",
				"order.service.consul src=consul ports=8080/HTTP",
			},
			endpoints: []string{
				order + ":8080@10.1.0.1:8080 {version=vm}",
				order + ":8080@10.244.0.5:8080 {version=k8s}",
				"order.service.consul:8080@10.1.0.1:8080 {version=vm}",
			},
			workloads: []string{"kubernetes:default/order-abc"},
		},
		{
			name: "the first registry defines the host; a different protocol and an extra port conflict",
			parts: []Part{
				part("static", registry.Contents{
					Services:  []*registry.Service{svc(order, "static", port(8080, registry.GRPC))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.9.0.1", "static")},
				}),
				part("kubernetes", registry.Contents{
					Services:  []*registry.Service{svc(order, "kubernetes", port(8080, registry.GRPC), port(9090, registry.HTTP))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.244.0.5", "k8s"), ep(order, 9090, "10.244.0.5", "k8s")},
				}),
				part("consul", registry.Contents{
					Services:  []*registry.Service{svc(order, "consul", port(8080, registry.TCP))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.1.0.1", "vm")},
				}),
			},
			services: []string{order + " src=static ports=8080/GRPC"},
			endpoints: []string{
				order + ":8080@10.1.0.1:8080 {version=vm}",
				order + ":8080@10.244.0.5:8080 {version=k8s}",
				order + ":8080@10.9.0.1:8080 {version=static}",
			},
			conflicts: []string{
				"host order.default.svc.cluster.local: port 8080 is GRPC in static but TCP in consul: static (the first registry defining the host) wins; consul's endpoints get GRPC traffic",
				"host order.default.svc.cluster.local: kubernetes defines port 9090 (HTTP), which matches no single port of static (the first registry defining the host) by number or target port: kubernetes's endpoints on port 9090 are left out",
			},
		},
		{
			name: "Consul instances on a Kubernetes Service's target port serve its port",
			parts: []Part{
				part("kubernetes", registry.Contents{
					Services:  []*registry.Service{svc(order, "kubernetes", registry.Port{Name: "http", Number: 80, Protocol: registry.HTTP, TargetPort: 8080})},
					Endpoints: []*registry.Endpoint{{ServiceHostname: order, ServicePort: 80, Address: "10.244.0.5", Port: 8080, Labels: map[string]string{"version": "k8s"}}},
				}),
				part("consul", registry.Contents{
					Services:  []*registry.Service{svc(order, "consul", port(8080, registry.HTTP))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.1.0.1", "vm")},
				}),
			},
			services: []string{order + " src=kubernetes ports=80/HTTP"},
			endpoints: []string{
				order + ":80@10.1.0.1:8080 {version=vm}",
				order + ":80@10.244.0.5:8080 {version=k8s}",
			},
		},
		{
			name: "the reverse: Consul first, a Kubernetes port targeting Consul's; a protocol conflict through the target port",
			parts: []Part{
				part("consul", registry.Contents{
					Services:  []*registry.Service{svc(order, "consul", port(8080, registry.TCP))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.1.0.1", "vm")},
				}),
				part("kubernetes", registry.Contents{
					Services:  []*registry.Service{svc(order, "kubernetes", registry.Port{Name: "http", Number: 80, Protocol: registry.HTTP, TargetPort: 8080})},
					Endpoints: []*registry.Endpoint{{ServiceHostname: order, ServicePort: 80, Address: "10.244.0.5", Port: 8080, Labels: map[string]string{"version": "k8s"}}},
				}),
			},
			services: []string{order + " src=consul ports=8080/TCP"},
			endpoints: []string{
				order + ":8080@10.1.0.1:8080 {version=vm}",
				order + ":8080@10.244.0.5:8080 {version=k8s}",
			},
			conflicts: []string{
				"host order.default.svc.cluster.local: port 8080 is TCP in consul but HTTP in kubernetes (its port 80): consul (the first registry defining the host) wins; kubernetes's endpoints get TCP traffic",
			},
		},
		{
			name: "two ports targeting the same number are ambiguous: a conflict",
			parts: []Part{
				part("kubernetes", registry.Contents{
					Services: []*registry.Service{svc(order, "kubernetes",
						registry.Port{Name: "http", Number: 80, Protocol: registry.HTTP, TargetPort: 8080},
						registry.Port{Name: "http-alt", Number: 81, Protocol: registry.HTTP, TargetPort: 8080})},
				}),
				part("consul", registry.Contents{
					Services:  []*registry.Service{svc(order, "consul", port(8080, registry.HTTP))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.1.0.1", "vm")},
				}),
			},
			services: []string{order + " src=kubernetes ports=80/HTTP,81/HTTP"},
			conflicts: []string{
				"host order.default.svc.cluster.local: consul defines port 8080 (HTTP), which matches no single port of kubernetes (the first registry defining the host) by number or target port: consul's endpoints on port 8080 are left out",
			},
		},
		{
			name: "a later registry serving some of the ports is no conflict; duplicate endpoints kept once, from the first",
			parts: []Part{
				part("kubernetes", registry.Contents{
					Services:  []*registry.Service{svc(order, "kubernetes", port(8080, registry.HTTP), port(9090, registry.GRPC))},
					Endpoints: []*registry.Endpoint{ep(order, 8080, "10.1.0.1", "first"), ep(order, 9090, "10.1.0.1", "first")},
					Workloads: []*registry.Workload{{Name: "w", Namespace: "default", Source: "kubernetes"}},
				}),
				part("consul", registry.Contents{
					Services:  []*registry.Service{svc(order, "consul", port(9090, registry.GRPC))},
					Endpoints: []*registry.Endpoint{ep(order, 9090, "10.1.0.1", "second"), ep(order, 9090, "10.1.0.2", "second")},
					Workloads: []*registry.Workload{{Name: "w", Namespace: "default", Source: "consul"}},
				}),
			},
			services: []string{order + " src=kubernetes ports=8080/HTTP,9090/GRPC"},
			endpoints: []string{
				order + ":8080@10.1.0.1:8080 {version=first}",
				order + ":9090@10.1.0.1:9090 {version=first}",
				order + ":9090@10.1.0.2:9090 {version=second}",
			},
			workloads: []string{"kubernetes:default/w", "consul:default/w"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, conflicts := Merge(tt.parts...)
			svcs, eps, wls := render(snap)
			if !slices.Equal(svcs, tt.services) {
				t.Errorf("services:\n got  %q\n want %q", svcs, tt.services)
			}
			if !slices.Equal(eps, tt.endpoints) {
				t.Errorf("endpoints:\n got  %q\n want %q", eps, tt.endpoints)
			}
			if !slices.Equal(wls, tt.workloads) {
				t.Errorf("workloads:\n got  %q\n want %q", wls, tt.workloads)
			}
			var cs []string
			for _, c := range conflicts {
				cs = append(cs, c.String())
			}
			if !slices.Equal(cs, tt.conflicts) {
				t.Errorf("conflicts:\n got  %q\n want %q", cs, tt.conflicts)
			}
			// Deterministic: the same input gives the same output.
			snap2, conflicts2 := Merge(tt.parts...)
			svcs2, eps2, wls2 := render(snap2)
			if !slices.Equal(svcs, svcs2) || !slices.Equal(eps, eps2) || !slices.Equal(wls, wls2) || !slices.Equal(conflicts, conflicts2) {
				t.Errorf("a second Merge differs")
			}
		})
	}
}

func TestAdded(t *testing.T) {
	a := Conflict{Host: "a", Winner: "static", Loser: "consul", Port: 80, LoserProtocol: registry.TCP}
	b := Conflict{Host: "b", Winner: "static", Loser: "consul", Port: 80, WinnerProtocol: registry.HTTP, LoserProtocol: registry.TCP}
	if got := Added(nil, []Conflict{a, b}); !slices.Equal(got, []Conflict{a, b}) {
		t.Errorf("Added(nil, a b) = %v, want both", got)
	}
	if got := Added([]Conflict{a, b}, []Conflict{b}); len(got) != 0 {
		t.Errorf("Added(a b, b) = %v, want none", got)
	}
	if got := Added([]Conflict{a}, []Conflict{a, b}); !slices.Equal(got, []Conflict{b}) {
		t.Errorf("Added(a, a b) = %v, want b", got)
	}
}

type fakeSource struct {
	registry.Source
	name string
	snap *registry.Snapshot
}

func (f fakeSource) Name() string                 { return f.name }
func (f fakeSource) Snapshot() *registry.Snapshot { return f.snap }

func TestSourceParts(t *testing.T) {
	static := registry.New(registry.Contents{})
	k := registry.New(registry.Contents{})
	parts := SourceParts(static, []registry.Source{fakeSource{name: "kubernetes", snap: k}})
	if len(parts) != 2 || parts[0].Name != "static" || parts[0].Snapshot != static || parts[1].Name != "kubernetes" || parts[1].Snapshot != k {
		t.Errorf("SourceParts = %+v, want static then kubernetes", parts)
	}
}
