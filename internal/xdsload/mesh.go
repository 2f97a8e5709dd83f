package xdsload

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// MeshSpec sizes a generated mesh.
type MeshSpec struct {
	// Services is the number of services (M); each gets a ServiceEntry, a
	// DestinationRule with subsets v1 and v2, and a VirtualService with a
	// header match and a 90/10 split.
	Services int
	// Endpoints is the number of WorkloadEntries per service (K); even
	// ones are labelled version v1, odd ones v2.
	Endpoints int
	// Spare is the number of further WorkloadEntries per service that no
	// simulated proxy plays (VMs, pods without a sidecar): ChangeEndpoint
	// moves these, so an endpoint change is only an endpoint change and
	// never also a change of some proxy's own inbound config.
	Spare int
	// Namespaces spreads the services over this many namespaces
	// (ns-00, ns-01, …), round robin.
	Namespaces int
}

// Validate reports a spec that cannot make a mesh.
func (s MeshSpec) Validate() error {
	switch {
	case s.Services < 1:
		return fmt.Errorf("mesh: %d services: need at least 1", s.Services)
	case s.Endpoints < 1:
		return fmt.Errorf("mesh: %d endpoints per service: need at least 1", s.Endpoints)
	case s.Spare < 0:
		return fmt.Errorf("mesh: %d spare endpoints per service: must not be negative", s.Spare)
	case s.Namespaces < 1:
		return fmt.Errorf("mesh: %d namespaces: need at least 1", s.Namespaces)
	case s.Services*(s.Endpoints+s.Spare) >= 1<<23:
		return fmt.Errorf("mesh: %d endpoints in all: at most %d", s.Services*(s.Endpoints+s.Spare), 1<<23)
	}
	return nil
}

// Workload is one generated endpoint, which a simulated proxy may play.
type Workload struct {
	Service   string // service name, "svc-0042"
	Namespace string
	Name      string // WorkloadEntry name, "svc-0042-3"
	IP        string
	Version   string // "v1" or "v2"
}

// Mesh is a generated mesh written as Istio YAML, one file per service,
// into a directory `weft serve --config` watches. Its methods edit one
// service's file at a time (written to a hidden temporary and renamed, so
// the watcher never reads half a file). Safe for concurrent use.
type Mesh struct {
	spec MeshSpec
	dir  string
	reg  SpareRegistry // holds the spare endpoints; nil: they are files too

	mu       sync.Mutex
	markers  []string   // per service: the x-canary header value its VirtualService matches
	ips      [][]string // per service, per endpoint
	nextIP   int        // counter for addresses given by ChangeEndpoint
	nextMark int
}

// WriteMesh generates the mesh into dir (which must exist) and returns it.
func WriteMesh(dir string, spec MeshSpec) (*Mesh, error) {
	return WriteMeshWith(dir, spec, nil)
}

// WriteMeshWith is WriteMesh with the spare endpoints in reg rather than
// in files (nil: in files): they are registered there before it returns,
// and ChangeEndpoint moves them there.
func WriteMeshWith(dir string, spec MeshSpec, reg SpareRegistry) (*Mesh, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	m := &Mesh{spec: spec, dir: dir, reg: reg, markers: make([]string, spec.Services), ips: make([][]string, spec.Services)}
	for i := range spec.Services {
		m.markers[i] = "initial"
		k := spec.Endpoints + spec.Spare
		m.ips[i] = make([]string, k)
		for j := range k {
			m.ips[i][j] = ipv4(10, 1<<16+i*k+j)
		}
		if err := m.write(i); err != nil {
			return nil, err
		}
		if reg != nil {
			for j := spec.Endpoints; j < k; j++ {
				if err := reg.Put(m.spare(i, j)); err != nil {
					return nil, err
				}
			}
		}
	}
	return m, nil
}

// spare is endpoint j of service i as a SpareRegistry holds it; m.mu is
// held (or m not yet shared).
func (m *Mesh) spare(i, j int) Spare {
	return Spare{Service: serviceName(i), Namespace: m.namespace(i), Host: m.Host(i),
		Name: fmt.Sprintf("%s-%d", serviceName(i), j), IP: m.ips[i][j], Version: version(j)}
}

// Dir is the config directory.
func (m *Mesh) Dir() string { return m.dir }

// Spec is the mesh's size.
func (m *Mesh) Spec() MeshSpec { return m.spec }

// Workloads lists the endpoints a proxy may play (not the spare ones) as
// the mesh was written: the first endpoint of every service, then the
// second, and so on.
func (m *Mesh) Workloads() []Workload {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Workload
	// Endpoint-major, so that a fleet smaller than the mesh still spreads
	// over every service and namespace.
	for j := range m.spec.Endpoints {
		for i := range m.spec.Services {
			out = append(out, Workload{
				Service: serviceName(i), Namespace: m.namespace(i),
				Name: fmt.Sprintf("%s-%d", serviceName(i), j), IP: m.ips[i][j], Version: version(j),
			})
		}
	}
	return out
}

// ChangeRoute rewrites service svc's VirtualService so its header match
// carries a new, unique value, and returns that value: it appears in the
// route configuration bytes of every proxy that routes to the service.
// before, when not nil, is called with the value before the file is
// written, so a watch can be in place before the control plane can see it.
func (m *Mesh) ChangeRoute(svc int, before func(marker string)) (marker string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	svc %= m.spec.Services
	m.nextMark++
	m.markers[svc] = fmt.Sprintf("mark-%08d", m.nextMark)
	if before != nil {
		before(m.markers[svc])
	}
	return m.markers[svc], m.write(svc)
}

// ChangeEndpoint moves endpoint ep of service svc (its WorkloadEntry, or
// its registry entry when the mesh has a SpareRegistry) to a new, unique
// address — a spare endpoint (ep modulo Spare) when the mesh has some —
// and returns it: it appears in the cluster load assignment bytes of
// every proxy that reaches the service. before is as for ChangeRoute.
func (m *Mesh) ChangeEndpoint(svc, ep int, before func(ip string)) (ip string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	svc %= m.spec.Services
	if m.spec.Spare > 0 {
		ep = m.spec.Endpoints + ep%m.spec.Spare
	} else {
		ep %= m.spec.Endpoints
	}
	m.nextIP++
	m.ips[svc][ep] = ipv4(10, 1<<23+m.nextIP%(1<<23))
	if before != nil {
		before(m.ips[svc][ep])
	}
	if m.reg != nil && ep >= m.spec.Endpoints {
		return m.ips[svc][ep], m.reg.Put(m.spare(svc, ep))
	}
	return m.ips[svc][ep], m.write(svc)
}

// Source is where the mesh's spare endpoints live.
func (m *Mesh) Source() EndpointSource {
	if m.reg != nil {
		return m.reg.Source()
	}
	return SourceFile
}

// Namespace is the namespace of service i (modulo the services).
func (m *Mesh) Namespace(i int) string { return m.namespace(i % m.spec.Services) }

func (m *Mesh) namespace(i int) string { return fmt.Sprintf("ns-%02d", i%m.spec.Namespaces) }

func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func version(j int) string { return []string{"v1", "v2"}[j%2] }

// Host is service i's host name.
func (m *Mesh) Host(i int) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local", serviceName(i), m.namespace(i))
}

// ipv4 renders a.(n>>16).(n>>8).n; n < 1<<24.
func ipv4(a, n int) string {
	return fmt.Sprintf("%d.%d.%d.%d", a, (n>>16)&0xff, (n>>8)&0xff, n&0xff)
}

// write renders service i's file; m.mu is held.
func (m *Mesh) write(i int) error {
	name, ns, host := serviceName(i), m.namespace(i), m.Host(i)
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  hosts: [%[3]s]
  addresses: [%[5]s]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: %[1]s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  host: %[3]s
  trafficPolicy:
    connectionPool:
      http: {http1MaxPendingRequests: 1024}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  hosts: [%[3]s]
  http:
  - name: canary
    match:
    - headers:
        x-canary: {exact: "%[4]s"}
    route:
    - destination: {host: %[3]s, subset: v2}
  - name: split
    timeout: 5s
    retries: {attempts: 2, perTryTimeout: 2s}
    route:
    - destination: {host: %[3]s, subset: v1}
      weight: 90
    - destination: {host: %[3]s, subset: v2}
      weight: 10
`, name, ns, host, m.markers[i], ipv4(240, 1<<16+i))
	for j, ip := range m.ips[i] {
		if m.reg != nil && j >= m.spec.Endpoints {
			break // the spare ones live in the registry
		}
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %[1]s-%[2]d, namespace: %[3]s}
spec:
  address: %[4]s
  ports: {http: 8080}
  labels: {app: %[1]s, version: %[5]s}
  serviceAccount: %[1]s
`, name, j, ns, ip, version(j))
	}
	final := filepath.Join(m.dir, name+".yaml")
	tmp := filepath.Join(m.dir, "."+name+".yaml.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("mesh: writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("mesh: renaming %s to %s: %w", tmp, final, err)
	}
	return nil
}
