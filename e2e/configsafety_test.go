package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/localmesh"
)

// safetyMesh is a mesh serving backend v1 and v2 (50/50, and v2 for
// x-canary: true) to a frontend, with steady traffic checked at the end.
type safetyMesh struct {
	*Mesh
	front *localmesh.Workload
	c     *http.Client
}

func newSafetyMesh(t *testing.T, routes bool) *safetyMesh {
	t.Helper()
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	if routes {
		m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
	}
	sm := &safetyMesh{Mesh: m, front: m.Client("frontend"), c: newClient()}
	if routes {
		waitVersion(t, sm.c, sm.front, "backend", map[string]string{"x-canary": "true"}, "v2")
	} else {
		waitVersion(t, sm.c, sm.front, "backend", nil, "")
	}
	return sm
}

// waitDiagnostic waits until /status reports a diagnostic with code in
// file (a base name) whose path starts with pathPrefix, and returns it.
func (sm *safetyMesh) waitDiagnostic(t *testing.T, code config.Code, file, pathPrefix string) config.Diagnostic {
	t.Helper()
	var found config.Diagnostic
	// Generous: a large bad file takes seconds to judge under -race on a
	// loaded 2-core machine; a passing run returns as soon as it is seen.
	Eventually(t, 30*time.Second, fmt.Sprintf("%s on %s %s", code, file, pathPrefix), func() error {
		st, err := sm.Status()
		if err != nil {
			return err
		}
		for _, d := range st.Diagnostics {
			if d.Code == code && filepath.Base(d.File) == file && strings.HasPrefix(d.Path, pathPrefix) {
				found = d
				return nil
			}
		}
		return fmt.Errorf("diagnostics: %v", st.Diagnostics)
	})
	return found
}

func (sm *safetyMesh) remove(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(sm.Dir, name)); err != nil {
		t.Fatal(err)
	}
}

// mistake is one row of the config-safety table: a change a user makes by
// mistake while traffic flows, and what Weft must say about it.
type mistake struct {
	name   string
	routes bool // start from backendRoutes (else: backend on its default route)
	apply  func(t *testing.T, sm *safetyMesh)
	code   config.Code
	file   string // the base name the diagnostic names
	path   string // prefix of the field path it names ("" for a whole file)
	// then checks what is in force afterwards (optional).
	then func(t *testing.T, sm *safetyMesh)
}

const otherDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-extra, namespace: default}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v9}}
  - {name: v2, labels: {version: v9}}
`

const otherSE = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: aaa-backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 1}}]
`

const otherVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: aaa-backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - route: [{destination: {host: backend, subset: v1}}]
`

const typoVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - route: [{destination: {host: backendd}}]
`

// routesWith returns backendRoutes (50/50) with the weighted rule's
// extra lines (indented as rule fields) inserted.
func routesWith(extra string) string {
	r := fmt.Sprintf(backendRoutes, 50, 50)
	return strings.Replace(r, "  - name: weighted\n", "  - name: weighted\n"+extra, 1)
}

func writeFn(name, content string) func(*testing.T, *safetyMesh) {
	return func(_ *testing.T, sm *safetyMesh) { sm.WriteConfig(name, content) }
}

// stillSplit checks the 50/50 split in force: both versions answer.
func stillSplit(t *testing.T, sm *safetyMesh) {
	t.Helper()
	got := Tally(t, sm.c, sm.front, "backend", nil, 200, byVersion)
	if got["v1"] == 0 || got["v2"] == 0 {
		t.Errorf("the 50/50 split in force is gone: %v", got)
	}
}

// TestConfigSafetyMistakes drops one mistake at a time into the watched
// directory while traffic flows through a sidecar: each is reported with
// its file and field, not one request fails, and the last good config
// keeps serving.
func TestConfigSafetyMistakes(t *testing.T) {
	tests := []mistake{
		{name: "second DestinationRule for a host", routes: true,
			apply: writeFn("aaa-extra-dr.yaml", otherDR),
			code:  config.CodeDestinationRuleConflict, file: "aaa-extra-dr.yaml", path: "spec.subsets[0].name",
			then: stillSplit},
		{name: "second ServiceEntry claiming a host", routes: true,
			apply: writeFn("aaa-backend-se.yaml", otherSE),
			code:  config.CodeServiceEntryConflict, file: "aaa-backend-se.yaml", path: "spec.hosts[0]",
			then: stillSplit},
		{name: "second VirtualService for a host", routes: true,
			apply: writeFn("aaa-backend-vs.yaml", otherVS),
			code:  config.CodeVirtualServiceConflict, file: "aaa-backend-vs.yaml", path: "spec.hosts[0]",
			then: stillSplit},
		{name: "new VirtualService whose destination is a typo",
			apply: writeFn("backend-vs.yaml", typoVS),
			code:  config.CodeTrafficHeld, file: "backend-vs.yaml", path: "spec.http[0].route[0].destination"},
		{name: "edit that makes a subset select nothing", routes: true,
			apply: writeFn("backend-routes.yaml", strings.Replace(fmt.Sprintf(backendRoutes, 50, 50), "{name: v2, labels: {version: v2}}", "{name: v2, labels: {version: v3}}", 1)),
			code:  config.CodeTrafficHeld, file: "backend-routes.yaml", path: "spec.subsets[1].labels",
			then: stillSplit},
		{name: "services file replaced by a dangling symlink", routes: true,
			apply: func(t *testing.T, sm *safetyMesh) {
				p := filepath.Join(sm.Dir, "backend-services.yaml")
				tmp := filepath.Join(sm.Dir, ".link.tmp")
				if err := os.Symlink(filepath.Join(sm.Dir, "nowhere.yaml"), tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, p); err != nil {
					t.Fatal(err)
				}
			},
			code: config.CodeUnreadableFile, file: "backend-services.yaml", then: stillSplit},
		{name: "symlink loop", routes: true,
			apply: func(t *testing.T, sm *safetyMesh) {
				if err := os.Symlink(filepath.Join(sm.Dir, "loop.yaml"), filepath.Join(sm.Dir, "loop.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			code: config.CodeUnreadableFile, file: "loop.yaml"},
		{name: "named pipe called .yaml", routes: true,
			apply: func(t *testing.T, sm *safetyMesh) {
				if err := syscall.Mkfifo(filepath.Join(sm.Dir, "pipe.yaml"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			code: config.CodeNotRegularFile, file: "pipe.yaml"},
		{name: "retryOn with an unknown condition", routes: true,
			apply: writeFn("backend-routes.yaml", routesWith("    retries: {attempts: 2, retryOn: \"5xx,sometimes\"}\n")),
			code:  config.CodeInvalidValue, file: "backend-routes.yaml", path: "spec.http[1].retries.retryOn",
			then: stillSplit},
		{name: "fault abort status 999", routes: true,
			apply: writeFn("backend-routes.yaml", routesWith("    fault: {abort: {httpStatus: 999, percentage: {value: 1}}}\n")),
			code:  config.CodeInvalidValue, file: "backend-routes.yaml", path: "spec.http[1].fault.abort",
			then: stillSplit},
		{name: "fault percentage 250", routes: true,
			apply: writeFn("backend-routes.yaml", routesWith("    fault: {delay: {fixedDelay: 1s, percentage: {value: 250}}}\n")),
			code:  config.CodeInvalidValue, file: "backend-routes.yaml", path: "spec.http[1].fault.delay.percentage",
			then: stillSplit},
		{name: "header value with a newline", routes: true,
			apply: writeFn("backend-routes.yaml", routesWith("    headers: {request: {set: {x-team: \"a\\nb\"}}}\n")),
			code:  config.CodeInvalidValue, file: "backend-routes.yaml", path: "spec.http[1].headers.request.set",
			then: stillSplit},
		{name: "WorkloadEntry address 999.1.1.1", routes: true,
			apply: writeFn("vm.yaml", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm}\nspec: {address: 999.1.1.1, labels: {app: backend, version: v1}}\n"),
			code:  config.CodeInvalidValue, file: "vm.yaml", path: "spec.address",
			then: stillSplit},
		{name: "wrong types and bad durations", routes: true,
			apply: writeFn("backend-routes.yaml", strings.Replace(routesWith("    timeout: \"10 seconds\"\n    retries: {attempts: 2, perTryTimeout: \"2 secs\"}\n"), "weight: 50\n", "weight: ninety\n", 1)),
			code:  config.CodeInvalidField, file: "backend-routes.yaml", path: "spec.http[1].timeout",
			then: func(t *testing.T, sm *safetyMesh) {
				// Every error of the document, each at its field and line.
				st, err := sm.Status()
				if err != nil {
					t.Fatal(err)
				}
				want := map[string]bool{"spec.http[1].timeout": false, "spec.http[1].retries.perTryTimeout": false, "spec.http[1].route[0].weight": false}
				for _, d := range st.Diagnostics {
					if _, ok := want[d.Path]; ok && d.Line > 0 {
						want[d.Path] = true
					}
				}
				for p, ok := range want {
					if !ok {
						t.Errorf("no diagnostic with a line at %s: %v", p, st.Diagnostics)
					}
				}
				stillSplit(t, sm)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sm := newSafetyMesh(t, tt.routes)
			tr := StartTraffic(sm.c, sm.front, "backend", 4)
			tr.WaitSent(t, 100)
			tt.apply(t, sm)
			d := sm.waitDiagnostic(t, tt.code, tt.file, tt.path)
			t.Logf("reported: %s", d.Error())
			tr.WaitSent(t, 300) // the change has been judged; traffic goes on
			tr.Stop(t, "after: "+tt.name)
			if tt.then != nil {
				tt.then(t, sm)
			}
		})
	}
}

// TestConfigSafetyGuardHoldsThenApplies: a route to a host with no
// endpoints yet is held while its destination has none, then applies by
// itself once the host's workload is registered — with traffic flowing
// and not one request failing.
func TestConfigSafetyGuardHoldsThenApplies(t *testing.T) {
	sm := newSafetyMesh(t, false)
	tr := StartTraffic(sm.c, sm.front, "backend", 4)
	tr.WaitSent(t, 100)
	// Move backend's traffic to a new service, before it exists.
	sm.WriteConfig("backend-vs.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - route: [{destination: {host: backend-next}}]
`)
	d := sm.waitDiagnostic(t, config.CodeTrafficHeld, "backend-vs.yaml", "spec.http[0].route[0].destination")
	t.Logf("held: %s", d.Error())
	tr.WaitSent(t, 200)
	// Its workload arrives and is ready — its sidecar serving it under
	// another service — before backend-next publishes it, as a pod is
	// ready before its endpoints are: the held change applies by itself.
	port, err := localmesh.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b := Backend{Name: "backend-next-v9", Version: "v9", IP: nextIP(), Port: uint32(port)}
	sm.WriteConfig("backend-next-workload.yaml", strings.Replace(ServiceEntryYAML("warmup", 8080, "HTTP"), "labels: {app: warmup}", "labels: {app: backend-next}", 1)+
		"---\n"+b.WorkloadEntryYAML("backend-next"))
	w := sm.Workload(localmesh.WorkloadOptions{Name: b.Name, IPs: []string{b.IP}, WorkloadPort: b.Port,
		Labels: map[string]string{"app": "backend-next", "version": "v9"}})
	Eventually(t, 10*time.Second, "backend-next's sidecar serving", func() error {
		if !w.Serving() {
			return fmt.Errorf("not serving its inbound port yet")
		}
		return nil
	})
	sm.WriteConfig("backend-next.yaml", ServiceEntryYAML("backend-next", 8080, "HTTP"))
	waitVersion(t, sm.c, sm.front, "backend", nil, "v9")
	tr.WaitSent(t, 100)
	tr.Stop(t, "while the guard held a change and then applied it")
	st, err := sm.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Diagnostics {
		if d.Code == config.CodeTrafficHeld {
			t.Errorf("still held after the destination got endpoints: %v", d)
		}
	}
}

// TestConfigSafetyHugeFile: a 10 MB file is refused without being parsed,
// and a MB of bad routes (some 5,000 resources, 10,000 errors) yields a
// bounded number of diagnostics (and a small /status), while traffic
// flows.
func TestConfigSafetyHugeFile(t *testing.T) {
	sm := newSafetyMesh(t, true)
	tr := StartTraffic(sm.c, sm.front, "backend", 4)
	tr.WaitSent(t, 100)

	var b strings.Builder
	for i := 0; b.Len() < 1<<20; i++ {
		fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad-%d}\nspec:\n  hosts: [backend]\n  http:\n  - timeout: forever\n    route: [{destination: {host: backend, subset: v7}, weight: -1}]\n", i)
	}
	bad := b.String()
	sm.WriteConfig("bad-routes.yaml", bad)
	sm.waitDiagnostic(t, config.CodeTooManyProblems, "bad-routes.yaml", "")
	huge := strings.Repeat("# padding\n", 1<<20) // 10 MiB
	sm.WriteConfig("huge.yaml", huge)
	sm.waitDiagnostic(t, config.CodeFileTooLarge, "huge.yaml", "")

	resp, err := http.Get("http://" + sm.CP.StatusAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if n > 1<<20 {
		t.Errorf("/status is %d bytes with one bad file of %d bytes: diagnostics are not bounded", n, len(bad))
	}
	t.Logf("/status: %d bytes for %d bytes of bad routes and a 10 MiB file", n, len(bad))
	tr.WaitSent(t, 200)
	tr.Stop(t, "while huge and bad files were loaded")
	stillSplit(t, sm)
}
