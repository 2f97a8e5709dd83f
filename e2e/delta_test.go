package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxy/xdsclient"
)

// deltaStatics is how many services, besides backend, the delta tests'
// mesh declares: enough that "only what changed" and "everything" differ
// clearly.
const deltaStatics = 12

// staticServiceYAML declares service name with n endpoints on addresses
// that nothing listens on (only their configuration matters here).
func staticServiceYAML(name string, n int) string {
	docs := []string{ServiceEntryYAML(name, 8080, "HTTP")}
	for i := range n {
		docs = append(docs, Backend{Name: fmt.Sprintf("%s-%d", name, i), Version: "v1",
			IP: fmt.Sprintf("127.0.99.%d", i+1), Port: 9000, Plain: true}.WorkloadEntryYAML(name))
	}
	return strings.Join(docs, "---\n")
}

// deltaMesh starts a mesh with backend (one real workload) and
// deltaStatics static services, and two clients: one speaking delta xDS
// (the default), one state of the world, both routing to backend.
func deltaMesh(t *testing.T) (m *Mesh, delta, sotw *localmesh.Workload) {
	t.Helper()
	m = NewMesh(t)
	for i := range deltaStatics {
		m.WriteConfig(fmt.Sprintf("static%d.yaml", i), staticServiceYAML(fmt.Sprintf("static%d", i), 2))
	}
	m.Service("backend", "HTTP", "v1")
	m.WaitLoaded(0, 2*deltaStatics+1)
	delta = m.Client("front-delta")
	sotw = m.Workload(localmesh.WorkloadOptions{Name: "front-sotw", XDSProtocol: xdsclient.ProtocolSotW,
		Labels: map[string]string{"app": "front-sotw", "version": "v1"}})
	c := newClient()
	for _, w := range []*localmesh.Workload{delta, sotw} {
		Eventually(t, 10*time.Second, w.Opts.Name+" routes to backend", func() error {
			code, _, err := Get(t.Context(), c, w, "backend", "/", nil)
			if err != nil || code != 200 {
				return fmt.Errorf("code %d, %v", code, err)
			}
			return nil
		})
	}
	if p := delta.Proxy.XDSStats(); p.NACKs != 0 {
		t.Fatalf("delta proxy NACKed: %+v", p)
	}
	return m, delta, sotw
}

// received is what w's proxy was sent so far, by short type name.
func received(w *localmesh.Workload) (resources map[string]uint64, bytes uint64) {
	r := w.Proxy.XDSReceived()
	out := map[string]uint64{}
	for url, n := range r.Resources {
		out[url[strings.LastIndex(url, ".")+1:]] = n
	}
	return out, xdsclient.Total(r.Bytes)
}

// since is after minus before, leaving out zeros.
func since(after, before map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// waitEndpoints waits until w's proxy has applied a config in which
// service name has n endpoints (its /config_dump).
func waitEndpoints(t *testing.T, w *localmesh.Workload, name string, n int) {
	t.Helper()
	cluster := fmt.Sprintf("outbound|8080||%s.default.svc.cluster.local", name)
	Eventually(t, 10*time.Second, fmt.Sprintf("%s: %d endpoints of %s", w.Opts.Name, n, name), func() error {
		var dump struct {
			Endpoints []struct {
				ClusterName string `json:"clusterName"`
				Endpoints   []struct {
					LbEndpoints []json.RawMessage `json:"lbEndpoints"`
				}
			}
		}
		if err := json.Unmarshal([]byte(adminGet(t, w, "/config_dump")), &dump); err != nil {
			return fmt.Errorf("decoding /config_dump: %w", err)
		}
		got := 0
		for _, cla := range dump.Endpoints {
			if cla.ClusterName == cluster {
				for _, loc := range cla.Endpoints {
					got += len(loc.LbEndpoints)
				}
			}
		}
		if got != n {
			return fmt.Errorf("%d endpoints", got)
		}
		return nil
	})
}

// TestControlPlaneDeltaEndpointChangeSendsOnlyIt: an endpoint added to one
// of 13 services reaches a delta proxy as that service's
// ClusterLoadAssignment alone, and a state-of-the-world proxy as every
// assignment. A later change arriving next proves nothing else was sent
// in between.
func TestControlPlaneDeltaEndpointChangeSendsOnlyIt(t *testing.T) {
	m, delta, sotw := deltaMesh(t)
	dBefore, dBytes := received(delta)
	sBefore, sBytes := received(sotw)

	m.WriteConfig("static3.yaml", staticServiceYAML("static3", 3))
	waitEndpoints(t, delta, "static3", 3)
	waitEndpoints(t, sotw, "static3", 3)
	m.WriteConfig("static5.yaml", staticServiceYAML("static5", 3))
	waitEndpoints(t, delta, "static5", 3)
	waitEndpoints(t, sotw, "static5", 3)

	dAfter, dBytesAfter := received(delta)
	sAfter, sBytesAfter := received(sotw)
	dGot, sGot := since(dAfter, dBefore), since(sAfter, sBefore)
	t.Logf("two endpoint changes: delta proxy received %v (%d bytes), state-of-the-world proxy %v (%d bytes)",
		dGot, dBytesAfter-dBytes, sGot, sBytesAfter-sBytes)
	if want := map[string]uint64{"ClusterLoadAssignment": 2}; !maps.Equal(dGot, want) {
		t.Errorf("delta proxy received %v for two endpoint changes, want %v", dGot, want)
	}
	if sGot["ClusterLoadAssignment"] < 2*(deltaStatics+1) {
		t.Errorf("state-of-the-world proxy received %v; want every assignment twice (the comparison is void)", sGot)
	}
}

// TestControlPlaneDeltaReconnectSendsOnlyDifferences: the control plane
// stops; while it is down one service gains an endpoint; when it is back,
// the delta proxy, resuming with the versions it holds, is sent that
// service's assignment and nothing else — the state-of-the-world proxy
// everything — and traffic flows throughout.
func TestControlPlaneDeltaReconnectSendsOnlyDifferences(t *testing.T) {
	m, delta, sotw := deltaMesh(t)
	c := newClient()

	m.StopControlPlane()
	for _, w := range []*localmesh.Workload{delta, sotw} {
		Eventually(t, 10*time.Second, w.Opts.Name+" notices the control plane is gone", func() error {
			if !strings.Contains(adminGet(t, w, "/stats/prometheus"), "\nweft_proxy_xds_connected 0\n") {
				return fmt.Errorf("still connected")
			}
			return nil
		})
	}
	dBefore, dBytes := received(delta)
	sBefore, sBytes := received(sotw)
	m.WriteConfig("static7.yaml", staticServiceYAML("static7", 3))
	if got := Tally(t, c, delta, "backend", nil, 50, byVersion); got["v1"] != 50 {
		t.Fatalf("with the control plane down: %v", got)
	}
	m.StartControlPlane()
	waitEndpoints(t, delta, "static7", 3)
	waitEndpoints(t, sotw, "static7", 3)
	// A change after the reconnect, seen next: nothing else came between.
	m.WriteConfig("static8.yaml", staticServiceYAML("static8", 3))
	waitEndpoints(t, delta, "static8", 3)
	waitEndpoints(t, sotw, "static8", 3)

	dAfter, dBytesAfter := received(delta)
	sAfter, sBytesAfter := received(sotw)
	dGot, sGot := since(dAfter, dBefore), since(sAfter, sBefore)
	t.Logf("reconnect plus one change: delta proxy received %v (%d bytes), state-of-the-world proxy %v (%d bytes)",
		dGot, dBytesAfter-dBytes, sGot, sBytesAfter-sBytes)
	if st := delta.Proxy.XDSStats(); st.Reconnects < 1 || st.NACKs != 0 {
		t.Errorf("delta proxy stats %+v", st)
	}
	if want := map[string]uint64{"ClusterLoadAssignment": 2}; !maps.Equal(dGot, want) {
		t.Errorf("delta proxy received %v over the reconnect and one change, want %v", dGot, want)
	}
	if sGot["Cluster"] < deltaStatics+1 {
		t.Errorf("state-of-the-world proxy received %v; want everything again (the comparison is void)", sGot)
	}
	if got := Tally(t, c, delta, "backend", nil, 50, byVersion); got["v1"] != 50 {
		t.Fatalf("after the reconnect: %v", got)
	}
}

// TestControlPlaneDeltaRouteChangeSendsOnlyItsVirtualHost: a
// VirtualService for one of 13 services reaches the delta proxy, which
// takes virtual hosts by VHDS, as that service's virtual host alone — no
// route configuration, listener or cluster — and the state-of-the-world
// proxy as the whole route configuration; both then route by it, and
// both route as before once it is deleted.
func TestControlPlaneDeltaRouteChangeSendsOnlyItsVirtualHost(t *testing.T) {
	m, delta, sotw := deltaMesh(t)
	c := newClient()
	status := func(w *localmesh.Workload, want int) {
		t.Helper()
		Eventually(t, 10*time.Second, fmt.Sprintf("%s answers %d", w.Opts.Name, want), func() error {
			code, _, err := Get(t.Context(), c, w, "backend", "/", nil)
			if err != nil || code != want {
				return fmt.Errorf("code %d, %v", code, err)
			}
			return nil
		})
	}
	dBefore, dBytes := received(delta)
	sBefore, sBytes := received(sotw)
	m.WriteConfig("backend-vs.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: backend}}]
`)
	status(delta, 418)
	status(sotw, 418)
	dAfter, dBytesAfter := received(delta)
	sAfter, sBytesAfter := received(sotw)
	dGot, sGot := since(dAfter, dBefore), since(sAfter, sBefore)
	t.Logf("one service's routes: delta proxy received %v (%d bytes), state-of-the-world proxy %v (%d bytes)",
		dGot, dBytesAfter-dBytes, sGot, sBytesAfter-sBytes)
	if want := map[string]uint64{"VirtualHost": 1}; !maps.Equal(dGot, want) {
		t.Errorf("delta proxy received %v for one service's routes, want %v", dGot, want)
	}
	if sGot["RouteConfiguration"] < 1 {
		t.Errorf("state-of-the-world proxy received %v; want the route configuration (the comparison is void)", sGot)
	}

	if err := os.Remove(filepath.Join(m.Dir, "backend-vs.yaml")); err != nil {
		t.Fatal(err)
	}
	status(delta, 200)
	status(sotw, 200)
	if p := delta.Proxy.XDSStats(); p.NACKs != 0 {
		t.Errorf("delta proxy NACKed: %+v", p)
	}
}
