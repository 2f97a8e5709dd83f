package static

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// load builds a config snapshot from YAML, failing on any diagnostic.
func load(t *testing.T, yaml string, allowed ...config.Code) *config.Snapshot {
	t.Helper()
	s := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	snap := s.Load(map[string][]byte{"c.yaml": []byte(yaml)})
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError && !slices.Contains(allowed, d.Code) {
			t.Fatalf("config: %v", d)
		}
	}
	return snap
}

func fmtService(s *registry.Service) string {
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprintf("%s/%d/%s/%d", p.Name, p.Number, p.Protocol, p.TargetPort))
	}
	out := fmt.Sprintf("%s ns=%s src=%s ports=[%s]", s.Hostname, s.Namespace, s.Source, strings.Join(ports, " "))
	if len(s.Addresses) > 0 {
		out += fmt.Sprintf(" addrs=%v", s.Addresses)
	}
	if s.Resolution != registry.ClientSide {
		out += " resolution=" + s.Resolution.String()
	}
	return out
}

func fmtEndpoint(e *registry.Endpoint) string {
	return fmt.Sprintf("%s:%d -> %s:%d labels=%v loc=%q w=%d sa=%q wl=%s/%s health=%d",
		e.ServiceHostname, e.ServicePort, e.Address, e.Port, e.Labels, e.Locality, e.Weight,
		e.ServiceAccount, e.Namespace, e.WorkloadName, e.Health)
}

func TestBuild(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		services  []string
		endpoints []string
	}{
		{
			name: "inline endpoints",
			yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews, reviews.prod.svc]
  ports:
  - {number: 9080, name: http, protocol: http}
  - {number: 9090, name: grpc, protocol: GRPC, targetPort: 19090}
  - {number: 9100, name: metrics, protocol: TLS}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    ports: {http: 18080}
    labels: {app: reviews, version: v1}
    locality: us-east/zone-a
    weight: 3
    serviceAccount: reviews-sa
  - address: 10.0.0.2
`,
			services: []string{
				"reviews.prod.svc.cluster.local ns=prod src=static ports=[http/9080/HTTP/0 grpc/9090/GRPC/19090 metrics/9100/TLS/0]",
			},
			endpoints: []string{
				`reviews.prod.svc.cluster.local:9080 -> 10.0.0.1:18080 labels=map[app:reviews version:v1] loc="us-east/zone-a" w=3 sa="reviews-sa" wl=prod/reviews health=0`,
				`reviews.prod.svc.cluster.local:9080 -> 10.0.0.2:9080 labels=map[] loc="" w=0 sa="" wl=prod/10.0.0.2 health=0`,
				`reviews.prod.svc.cluster.local:9090 -> 10.0.0.1:19090 labels=map[app:reviews version:v1] loc="us-east/zone-a" w=3 sa="reviews-sa" wl=prod/reviews health=0`,
				`reviews.prod.svc.cluster.local:9090 -> 10.0.0.2:19090 labels=map[] loc="" w=0 sa="" wl=prod/10.0.0.2 health=0`,
				`reviews.prod.svc.cluster.local:9100 -> 10.0.0.1:9100 labels=map[app:reviews version:v1] loc="us-east/zone-a" w=3 sa="reviews-sa" wl=prod/reviews health=0`,
				`reviews.prod.svc.cluster.local:9100 -> 10.0.0.2:9100 labels=map[] loc="" w=0 sa="" wl=prod/10.0.0.2 health=0`,
			},
		},
		{
			name: "workload selector picks matching entries of the namespace",
			yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings, ratings.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1}
spec:
  address: 127.0.0.2
  ports: {http: 9080}
  labels: {app: ratings, version: v2, stage: canary}
  serviceAccount: ratings
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-2}
spec:
  address: 127.0.0.3
  labels: {app: ratings, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-app}
spec: {address: 127.0.0.4, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-ns, namespace: prod}
spec: {address: 127.0.0.5, labels: {app: ratings}}
`,
			services: []string{
				"ratings.default.svc.cluster.local ns=default src=static ports=[http/80/HTTP/8080]",
				"ratings.example.com ns=default src=static ports=[http/80/HTTP/8080]",
			},
			endpoints: []string{
				`ratings.default.svc.cluster.local:80 -> 127.0.0.2:9080 labels=map[app:ratings stage:canary version:v2] loc="" w=0 sa="ratings" wl=default/vm-1 health=0`,
				`ratings.default.svc.cluster.local:80 -> 127.0.0.3:8080 labels=map[app:ratings version:v1] loc="" w=0 sa="" wl=default/vm-2 health=0`,
				`ratings.example.com:80 -> 127.0.0.2:9080 labels=map[app:ratings stage:canary version:v2] loc="" w=0 sa="ratings" wl=default/vm-1 health=0`,
				`ratings.example.com:80 -> 127.0.0.3:8080 labels=map[app:ratings version:v1] loc="" w=0 sa="" wl=default/vm-2 health=0`,
			},
		},
		{
			name: "DNS service without endpoints",
			yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: egress}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: unselected, namespace: egress}
spec: {address: 10.1.1.1}
`,
			services: []string{"api.example.com ns=egress src=static ports=[https/443/HTTPS/0] resolution=DNS"},
			// The host itself, for the proxies to resolve (Istio's conversion).
			endpoints: []string{`api.example.com:443 -> api.example.com:443 labels=map[] loc="" w=0 sa="" wl=egress/ext health=0`},
		},
		{
			name: "DNS round robin with a DNS-named endpoint and a target port",
			yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: egress}
spec:
  hosts: [api.example.com, api2.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: named, namespace: egress}
spec:
  hosts: [named.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: backend.example.net, labels: {app: be}}]
`,
			services: []string{
				"api.example.com ns=egress src=static ports=[http/80/HTTP/8080] resolution=DNS_ROUND_ROBIN",
				"api2.example.com ns=egress src=static ports=[http/80/HTTP/8080] resolution=DNS_ROUND_ROBIN",
				"named.example.com ns=egress src=static ports=[http/80/HTTP/0] resolution=DNS",
			},
			endpoints: []string{
				`api.example.com:80 -> api.example.com:8080 labels=map[] loc="" w=0 sa="" wl=egress/ext health=0`,
				`api2.example.com:80 -> api2.example.com:8080 labels=map[] loc="" w=0 sa="" wl=egress/ext health=0`,
				`named.example.com:80 -> backend.example.net:80 labels=map[app:be] loc="" w=0 sa="" wl=egress/be health=0`,
			},
		},
		{
			name: "virtual IPs: single addresses, not wider CIDRs",
			yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.example.com]
  addresses: [10.77.0.1, 10.78.0.0/16, 10.77.0.2/32, fd00::1]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
`,
			services: []string{
				"db.example.com ns=data src=static ports=[tcp/5432/TCP/0] addrs=[10.77.0.1 10.77.0.2 fd00::1]",
			},
			endpoints: []string{
				`db.example.com:5432 -> 10.0.0.9:5432 labels=map[] loc="" w=0 sa="" wl=data/10.0.0.9 health=0`,
			},
		},
		{
			name: "no service entries",
			yaml: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := Build(load(t, tt.yaml), "")
			var services, endpoints []string
			for _, s := range reg.Services() {
				services = append(services, fmtService(s))
				for _, e := range reg.Endpoints(s.Hostname, 0) {
					endpoints = append(endpoints, fmtEndpoint(e))
				}
			}
			check(t, "services", services, tt.services)
			check(t, "endpoints", endpoints, tt.endpoints)
		})
	}
}

func TestBuildNilAndSuffix(t *testing.T) {
	if got := Build(nil, "").Services(); len(got) != 0 {
		t.Errorf("Build(nil) has services %v", got)
	}
	reg := Build(load(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec: {hosts: [a], ports: [{number: 80, name: http}], resolution: STATIC, endpoints: [{address: 10.0.0.1}]}
`), "corp.internal")
	if reg.Service("a.default.svc.corp.internal") == nil {
		t.Errorf("services = %v, want a.default.svc.corp.internal", reg.Services())
	}
}

func check(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func TestBuildFirstServiceEntryWins(t *testing.T) {
	reg := Build(load(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec: {hosts: [shared.example.com], ports: [{number: 80, name: http}], resolution: STATIC, endpoints: [{address: 10.0.0.1}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec: {hosts: [shared.example.com], ports: [{number: 81, name: http}], resolution: STATIC, endpoints: [{address: 10.0.0.2}]}
`, config.CodeServiceEntryConflict), "")
	var got []string
	for _, e := range reg.Endpoints("shared.example.com", 0) {
		got = append(got, fmtEndpoint(e))
	}
	check(t, "endpoints", got, []string{
		`shared.example.com:80 -> 10.0.0.1:80 labels=map[] loc="" w=0 sa="" wl=default/10.0.0.1 health=0`,
	})
}

// TestBuildSkipsEndpointsWithoutAddress: validation rejects them, but a
// snapshot built by hand (or a future validation gap) must never yield an
// endpoint with an empty address, which the proxy NACKs with the whole update.
func TestBuildSkipsEndpointsWithoutAddress(t *testing.T) {
	spec := func(address, network string) *networking.WorkloadEntry {
		return &networking.WorkloadEntry{Address: address, Network: network, Labels: map[string]string{"app": "backend"}}
	}
	ports := []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}
	cfg := &config.Snapshot{
		ServiceEntries: []*config.ServiceEntry{
			{Meta: config.Meta{Kind: config.KindServiceEntry, Namespace: "default", Name: "inline"}, Spec: &networking.ServiceEntry{
				Hosts: []string{"inline"}, Ports: ports,
				Endpoints: []*networking.WorkloadEntry{spec("", "remote"), spec("10.0.0.1", ""), spec("", "")},
			}},
			{Meta: config.Meta{Kind: config.KindServiceEntry, Namespace: "default", Name: "selected"}, Spec: &networking.ServiceEntry{
				Hosts: []string{"selected"}, Ports: ports,
				WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "backend"}},
			}},
		},
		WorkloadEntries: []*config.WorkloadEntry{
			{Meta: config.Meta{Kind: config.KindWorkloadEntry, Namespace: "default", Name: "local"}, Spec: spec("10.0.0.2", "")},
			{Meta: config.Meta{Kind: config.KindWorkloadEntry, Namespace: "default", Name: "remote"}, Spec: spec("", "remote")},
		},
	}
	reg := Build(cfg, "")
	var got []string
	for _, svc := range reg.Services() {
		for _, e := range reg.Endpoints(svc.Hostname, 0) {
			got = append(got, e.ServiceHostname+" -> "+e.Address+" wl="+e.WorkloadName)
		}
	}
	check(t, "endpoints", got, []string{
		"inline.default.svc.cluster.local -> 10.0.0.1 wl=backend",
		"selected.default.svc.cluster.local -> 10.0.0.2 wl=local",
	})
}

// TestBuildWithSelectsOtherRegistriesWorkloads: a workloadSelector selects
// Pods (registry.Workloads) of its own namespace by labels, as Istio's
// ServiceEntry does, beside WorkloadEntries; named ports, target ports,
// health, identity and locality come from the workload.
func TestBuildWithSelectsOtherRegistriesWorkloads(t *testing.T) {
	cfg := load(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.example]
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 9000, name: admin, protocol: TCP}
  resolution: STATIC
  workloadSelector: {labels: {app: legacy}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 10.77.0.9, labels: {app: legacy, version: vm}}
`)
	pods := []*registry.Workload{
		{Name: "legacy-7d9-abcde", WorkloadName: "legacy", Namespace: "shop", Address: "10.77.1.1",
			Labels: map[string]string{"app": "legacy", "version": "k8s"}, ServiceAccount: "legacy",
			Locality: "r1/z1/", Health: registry.Healthy, Ports: map[string]uint32{"admin": 9901}, Source: "kubernetes"},
		{Name: "legacy-7d9-fghij", Namespace: "shop", Address: "10.77.1.2",
			Labels: map[string]string{"app": "legacy"}, Health: registry.Draining, Source: "kubernetes"},
		{Name: "other-ns", Namespace: "default", Address: "10.77.1.3", Labels: map[string]string{"app": "legacy"}},
		{Name: "other-app", Namespace: "shop", Address: "10.77.1.4", Labels: map[string]string{"app": "web"}},
		{Name: "no-ip", Namespace: "shop", Labels: map[string]string{"app": "legacy"}},
	}
	reg := BuildWith(cfg, Options{Workloads: pods})
	var got []string
	for _, e := range reg.Endpoints("legacy.shop.example", 0) {
		got = append(got, fmtEndpoint(e))
	}
	check(t, "endpoints", got, []string{
		`legacy.shop.example:80 -> 10.77.0.9:8080 labels=map[app:legacy version:vm] loc="" w=0 sa="" wl=shop/vm-1 health=0`,
		`legacy.shop.example:80 -> 10.77.1.1:8080 labels=map[app:legacy version:k8s] loc="r1/z1/" w=0 sa="legacy" wl=shop/legacy health=0`,
		`legacy.shop.example:80 -> 10.77.1.2:8080 labels=map[app:legacy] loc="" w=0 sa="" wl=shop/legacy-7d9-fghij health=2`,
		`legacy.shop.example:9000 -> 10.77.0.9:9000 labels=map[app:legacy version:vm] loc="" w=0 sa="" wl=shop/vm-1 health=0`,
		`legacy.shop.example:9000 -> 10.77.1.1:9901 labels=map[app:legacy version:k8s] loc="r1/z1/" w=0 sa="legacy" wl=shop/legacy health=0`,
		`legacy.shop.example:9000 -> 10.77.1.2:9000 labels=map[app:legacy] loc="" w=0 sa="" wl=shop/legacy-7d9-fghij health=2`,
	})
	// Build (no workloads) keeps selecting WorkloadEntries only.
	if n := len(Build(cfg, "").Endpoints("legacy.shop.example", 0)); n != 2 {
		t.Errorf("Build: %d endpoints, want the WorkloadEntry's 2", n)
	}
}
