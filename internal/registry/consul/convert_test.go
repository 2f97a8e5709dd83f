package consul

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"weft.dev/weft/internal/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func fmtService(s *registry.Service) string {
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprintf("%s/%d/%s", p.Name, p.Number, p.Protocol))
	}
	alias := ""
	if len(s.Aliases) > 0 {
		alias = " aliases=" + strings.Join(s.Aliases, ",")
	}
	return fmt.Sprintf("%s%s ns=%s src=%s ports=[%s]", s.Hostname, alias, s.Namespace, s.Source, strings.Join(ports, " "))
}

func fmtEndpoint(e *registry.Endpoint) string {
	return fmt.Sprintf("%s:%d -> %s:%d labels=%s loc=%q w=%d sa=%q wl=%s/%s health=%d",
		e.ServiceHostname, e.ServicePort, e.Address, e.Port, registry.LabelString(e.Labels), e.Locality, e.Weight,
		e.ServiceAccount, e.Namespace, e.WorkloadName, e.Health)
}

// node builds a Consul node.
func node(name, addr string, meta map[string]string) *api.Node {
	return &api.Node{Node: name, Address: addr, Datacenter: "dc1", Meta: meta}
}

// inst builds one health entry of service svc on n.
func inst(n *api.Node, svc string, port int, tags []string, meta map[string]string, checks ...string) *api.ServiceEntry {
	e := &api.ServiceEntry{Node: n, Service: &api.AgentService{
		ID: svc, Service: svc, Port: port, Tags: tags, Meta: meta, Weights: api.AgentWeights{Passing: 1, Warning: 1},
	}}
	for i, status := range checks {
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: fmt.Sprintf("check-%d", i), Status: status})
	}
	return e
}

func TestConvert(t *testing.T) {
	vm1 := node("vm-1", "10.1.0.1", map[string]string{"zone": "z1", "consul-network-segment": "", "rack": "r7"})
	vm2 := node("vm-2", "10.1.0.2", nil)
	conv := converter{source: Name, domain: DefaultDomain, namespace: DefaultNamespace, alias: true}
	tests := []struct {
		name      string
		conv      converter
		service   string
		entries   []*api.ServiceEntry
		services  []string
		endpoints []string
		warnings  []string
	}{
		{
			name:    "host, alias, protocol from meta, labels from tags and meta, zone from node meta",
			service: "order",
			entries: []*api.ServiceEntry{
				inst(vm1, "order", 8080, []string{"version=v2", "canary", "stage|beta"}, map[string]string{"protocol": "http", "team": "billing"}, api.HealthPassing),
			},
			services: []string{
				"order.service.consul aliases=order ns=default src=consul ports=[http-8080/8080/HTTP]",
			},
			endpoints: []string{
				`order.service.consul:8080 -> 10.1.0.1:8080 labels={canary=, rack=r7, stage=beta, team=billing, version=v2, zone=z1} loc="dc1/z1" w=1 sa="" wl=default/vm-1 health=0`,
			},
		},
		{
			name:    "no protocol is TCP; a tag protocol=grpc counts; meta beats the tag; instances with different ports",
			conv:    converter{source: Name, domain: "consul.example", namespace: "vms"},
			service: "payment",
			entries: []*api.ServiceEntry{
				inst(vm2, "payment", 9090, []string{"protocol=grpc"}, nil),
				inst(vm1, "payment", 8081, nil, nil),
				inst(node("vm-3", "10.1.0.3", nil), "payment", 9090, []string{"protocol=tcp"}, map[string]string{"protocol": "GRPC"}),
			},
			services: []string{"payment.consul.example ns=vms src=consul ports=[tcp-8081/8081/TCP grpc-9090/9090/GRPC]"},
			endpoints: []string{
				`payment.consul.example:8081 -> 10.1.0.1:8081 labels={rack=r7, zone=z1} loc="dc1/z1" w=1 sa="" wl=vms/vm-1 health=0`,
				`payment.consul.example:9090 -> 10.1.0.2:9090 labels={} loc="dc1" w=1 sa="" wl=vms/vm-2 health=0`,
				`payment.consul.example:9090 -> 10.1.0.3:9090 labels={} loc="dc1" w=1 sa="" wl=vms/vm-3 health=0`,
			},
		},
		{
			name:    "weft-host joins a Kubernetes host; service address and account; weights",
			service: "order",
			entries: []*api.ServiceEntry{func() *api.ServiceEntry {
				e := inst(vm2, "order", 8080, []string{"weft-host=order.prod.svc.cluster.local, api.example.com"},
					map[string]string{"protocol": "http", "service-account": "order", "version": "vm"}, api.HealthPassing)
				e.Service.Address = "192.168.5.5"
				e.Service.Weights = api.AgentWeights{Passing: 5, Warning: 1}
				return e
			}()},
			services: []string{
				"order.service.consul aliases=order ns=default src=consul ports=[http-8080/8080/HTTP]",
				"api.example.com ns=default src=consul ports=[http-8080/8080/HTTP]",
				"order.prod.svc.cluster.local ns=prod src=consul ports=[http-8080/8080/HTTP]",
			},
			endpoints: []string{
				`order.service.consul:8080 -> 192.168.5.5:8080 labels={version=vm} loc="dc1" w=5 sa="order" wl=prod/vm-2 health=0`,
				`api.example.com:8080 -> 192.168.5.5:8080 labels={version=vm} loc="dc1" w=5 sa="order" wl=prod/vm-2 health=0`,
				`order.prod.svc.cluster.local:8080 -> 192.168.5.5:8080 labels={version=vm} loc="dc1" w=5 sa="order" wl=prod/vm-2 health=0`,
			},
		},
		{
			name:    "health: warning keeps serving with its weight, critical and maintenance do not",
			conv:    converter{source: Name, domain: DefaultDomain, namespace: DefaultNamespace},
			service: "inv",
			entries: []*api.ServiceEntry{
				func() *api.ServiceEntry {
					e := inst(node("a", "10.0.0.1", nil), "inv", 80, nil, nil, api.HealthPassing, api.HealthWarning)
					e.Service.Weights = api.AgentWeights{Passing: 10, Warning: 2}
					return e
				}(),
				inst(node("b", "10.0.0.2", nil), "inv", 80, nil, nil, api.HealthPassing, api.HealthCritical),
				func() *api.ServiceEntry {
					e := inst(node("c", "10.0.0.3", nil), "inv", 80, nil, nil, api.HealthPassing)
					e.Checks = append(e.Checks, &api.HealthCheck{CheckID: api.NodeMaint, Status: api.HealthCritical})
					return e
				}(),
				func() *api.ServiceEntry {
					e := inst(node("d", "10.0.0.4", nil), "inv", 80, nil, nil, api.HealthWarning)
					e.Service.Weights = api.AgentWeights{Passing: 1, Warning: 0}
					return e
				}(),
				inst(node("e", "10.0.0.5", nil), "inv", 80, nil, nil, "weird"),
				inst(node("f", "10.0.0.6", nil), "inv", 80, nil, nil), // no checks: passing
			},
			services: []string{"inv.service.consul ns=default src=consul ports=[tcp-80/80/TCP]"},
			endpoints: []string{
				`inv.service.consul:80 -> 10.0.0.1:80 labels={} loc="dc1" w=2 sa="" wl=default/a health=0`,
				`inv.service.consul:80 -> 10.0.0.2:80 labels={} loc="dc1" w=1 sa="" wl=default/b health=1`,
				`inv.service.consul:80 -> 10.0.0.3:80 labels={} loc="dc1" w=1 sa="" wl=default/c health=1`,
				`inv.service.consul:80 -> 10.0.0.4:80 labels={} loc="dc1" w=1 sa="" wl=default/d health=1`,
				`inv.service.consul:80 -> 10.0.0.5:80 labels={} loc="dc1" w=1 sa="" wl=default/e health=1`,
				`inv.service.consul:80 -> 10.0.0.6:80 labels={} loc="dc1" w=1 sa="" wl=default/f health=0`,
			},
		},
		{
			name:    "consul locality beats datacenter and node meta; subzone",
			service: "geo",
			conv:    converter{source: Name, domain: DefaultDomain, namespace: DefaultNamespace},
			entries: []*api.ServiceEntry{func() *api.ServiceEntry {
				e := inst(node("g", "10.0.0.7", map[string]string{"zone": "meta-zone", "subzone": "s1"}), "geo", 80, nil, nil)
				e.Service.Locality = &api.Locality{Region: "eu-west", Zone: "eu-west-1a"}
				return e
			}()},
			services:  []string{"geo.service.consul ns=default src=consul ports=[tcp-80/80/TCP]"},
			endpoints: []string{`geo.service.consul:80 -> 10.0.0.7:80 labels={subzone=s1, zone=meta-zone} loc="eu-west/eu-west-1a/s1" w=1 sa="" wl=default/g health=0`},
		},
		{
			name:    "dotted names get no alias; unknown protocol warns; conflicting protocols warn; portless and proxies left out",
			service: "legacy.billing",
			entries: []*api.ServiceEntry{
				inst(vm1, "legacy.billing", 7000, nil, map[string]string{"protocol": "thrift"}),
				inst(vm2, "legacy.billing", 7000, nil, map[string]string{"protocol": "http"}),
				inst(node("h", "10.0.0.8", nil), "legacy.billing", 0, nil, nil),
				func() *api.ServiceEntry {
					e := inst(node("i", "10.0.0.9", nil), "legacy.billing", 21000, nil, nil)
					e.Service.Kind = api.ServiceKindConnectProxy
					return e
				}(),
			},
			services: []string{"legacy.billing.service.consul ns=default src=consul ports=[tcp-7000/7000/TCP]"},
			endpoints: []string{
				`legacy.billing.service.consul:7000 -> 10.1.0.1:7000 labels={rack=r7, zone=z1} loc="dc1/z1" w=1 sa="" wl=default/vm-1 health=0`,
				`legacy.billing.service.consul:7000 -> 10.1.0.2:7000 labels={} loc="dc1" w=1 sa="" wl=default/vm-2 health=0`,
			},
			warnings: []string{
				`consul service legacy.billing: instance legacy.billing on node h has no port; left out`,
				`consul service legacy.billing: instance legacy.billing on node vm-1: unknown protocol "thrift", using TCP`,
				`consul service legacy.billing: port 7000 is TCP on one instance and HTTP on instance legacy.billing of node vm-2; using TCP`,
			},
		},
		{
			name:    "only proxies: nothing",
			service: "web-sidecar-proxy",
			entries: []*api.ServiceEntry{func() *api.ServiceEntry {
				e := inst(vm1, "web-sidecar-proxy", 21000, nil, nil)
				e.Service.Kind = api.ServiceKindConnectProxy
				return e
			}()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.conv
			if c.source == "" {
				c = conv
			}
			r := c.convert(tt.service, tt.entries)
			var svcs, eps []string
			for _, s := range r.services {
				svcs = append(svcs, fmtService(s))
			}
			for _, e := range r.endpoints {
				eps = append(eps, fmtEndpoint(e))
			}
			slices.Sort(r.warnings)
			if !slices.Equal(svcs, tt.services) {
				t.Errorf("services:\n got  %q\n want %q", svcs, tt.services)
			}
			if !slices.Equal(eps, tt.endpoints) {
				t.Errorf("endpoints:\n got  %s\n want %s", strings.Join(eps, "\n      "), strings.Join(tt.endpoints, "\n      "))
			}
			if !slices.Equal(r.warnings, tt.warnings) {
				t.Errorf("warnings:\n got  %q\n want %q", r.warnings, tt.warnings)
			}
		})
	}
}

func TestLabels(t *testing.T) {
	tests := []struct {
		name     string
		nodeMeta map[string]string
		tags     []string
		meta     map[string]string
		want     map[string]string
	}{
		{"nothing", nil, nil, nil, map[string]string{}},
		{"key=value and presence tags", nil, []string{"version=v2", "canary", " ", "a=b=c"}, nil,
			map[string]string{"version": "v2", "canary": "", "a": "b=c"}},
		{"istio's key|value", nil, []string{"version|v1", "x|"}, nil, map[string]string{"version": "v1", "x": ""}},
		{"the later tag wins", nil, []string{"version=v1", "version=v2"}, nil, map[string]string{"version": "v2"}},
		{"a leading separator is a presence tag", nil, []string{"=v"}, nil, map[string]string{"=v": ""}},
		{"precedence: node meta < tags < service meta", map[string]string{"version": "node", "rack": "r1", "stage": "node"},
			[]string{"version=tag", "stage=tag"}, map[string]string{"version": "meta"},
			map[string]string{"version": "meta", "stage": "tag", "rack": "r1"}},
		{"consul's node meta and the mapping keys are not labels", map[string]string{"consul-network-segment": "", "protocol": "x"},
			[]string{"protocol=http", "weft-host=a.b", "service-account=sa", "security.istio.io/tlsMode=istio"},
			map[string]string{"protocol": "grpc", "service-account": "sa"},
			map[string]string{"security.istio.io/tlsMode": "istio"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Labels(tt.nodeMeta, tt.tags, tt.meta)
			if !maps.Equal(got, tt.want) {
				t.Errorf("Labels = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNextIndex(t *testing.T) {
	tests := []struct{ prev, got, want uint64 }{
		{0, 0, 1}, // never wait on index 0 twice
		{0, 42, 42},
		{42, 42, 42},
		{42, 43, 43},
		{42, 7, 0}, // went backwards (restarted agent): start over
	}
	for _, tt := range tests {
		if got := nextIndex(tt.prev, tt.got); got != tt.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", tt.prev, tt.got, got, tt.want)
		}
	}
}

func TestBackoffBoundedAndJittered(t *testing.T) {
	b := &backoff{min: 100 * time.Millisecond, max: time.Second}
	steps := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, step := range steps {
		d := b.next()
		step *= time.Millisecond
		if d < step/2 || d > step {
			t.Errorf("step %d: %v, want within [%v, %v]", i, d, step/2, step)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v, want at most the minimum", d)
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "no address") {
		t.Errorf("New without address: %v, want an error naming the address", err)
	}
	s, err := New(Options{Address: "127.0.0.1:8500"})
	if err != nil {
		t.Fatal(err)
	}
	if s.opts.Domain != DefaultDomain || s.opts.Namespace != DefaultNamespace || s.opts.WaitTime != DefaultWaitTime {
		t.Errorf("defaults not applied: %+v", s.opts)
	}
	if snap := s.Snapshot(); snap == nil || len(snap.Services()) != 0 {
		t.Errorf("initial snapshot = %v, want empty, not nil", snap)
	}
	if st := s.Status(); st.Name != "consul" || st.Synced || st.Connected {
		t.Errorf("initial status = %+v, want not synced, not connected", st)
	}
}

// TestNewRefusesBadAddress: a Consul address the client could never use
// is refused at start, naming it, instead of retrying forever.
func TestNewRefusesBadAddress(t *testing.T) {
	for _, bad := range []string{"http://[bad", "ftp://consul:8500", "consul", "http://"} {
		if _, err := New(Options{Address: bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("New(%q) = %v, want an error naming the address", bad, err)
		}
	}
	for _, good := range []string{"127.0.0.1:8500", "http://consul.service:8500", "https://consul:8501", "[::1]:8500"} {
		if _, err := New(Options{Address: good}); err != nil {
			t.Errorf("New(%q): %v", good, err)
		}
	}
}
