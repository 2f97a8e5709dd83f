package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

// TestProxySurvivesControlPlaneOutage stops the control plane: the sidecar
// keeps routing on its last config, and picks up a change made during the
// outage once the control plane is back.
func TestProxySurvivesControlPlaneOutage(t *testing.T) {
	m, c := canaryMesh(t, 100, 0)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", nil, "v1")

	m.StopControlPlane()
	got := Tally(t, c, front, "backend", nil, 300, byVersion)
	if got["v1"] != 300 {
		t.Fatalf("with the control plane down: want 300 on v1, got %v", got)
	}
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 0, 100))
	got = Tally(t, c, front, "backend", nil, 100, byVersion)
	if got["v1"] != 100 {
		t.Fatalf("config edited while the control plane is down must not apply yet: got %v", got)
	}
	m.StartControlPlane()
	waitVersion(t, c, front, "backend", nil, "v2")
}

// TestBadConfigKeepsServing writes broken config over good config: the
// bad documents are rejected, the last good routing keeps serving, and the
// errors are on the control plane's status endpoint.
func TestBadConfigKeepsServing(t *testing.T) {
	m, c := canaryMesh(t, 100, 0)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", nil, "v1")

	bad := strings.Replace(fmt.Sprintf(backendRoutes, 0, 100), "subset: v2}\n      weight: 100", "subset: v9}\n      weight: 100", 1)
	m.WriteConfig("backend-routes.yaml", bad)
	m.WriteConfig("broken.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec:\n  hosts: [backend]\n  http:\n  - match:\n    - uri: {regex: \"([\"}\n    route:\n    - destination: {host: backend}\n")

	var st struct {
		Diagnostics []struct{ Severity, File, Message, Path string }
	}
	Eventually(t, 5*time.Second, "errors on /status", func() error {
		resp, err := http.Get("http://" + m.CP.StatusAddr().String() + "/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("decoding /status %q: %w", body, err)
		}
		var subset, regex bool
		for _, d := range st.Diagnostics {
			subset = subset || (d.Severity == "error" && strings.Contains(d.Message, `"v9"`))
			regex = regex || (d.Severity == "error" && strings.HasSuffix(d.Path, "uri.regex"))
		}
		if !subset || !regex {
			return fmt.Errorf("want subset v9 and regex errors, got %s", body)
		}
		return nil
	})
	got := Tally(t, c, front, "backend", nil, 300, byVersion)
	if got["v1"] != 300 {
		t.Fatalf("after bad config: want the last good routing (all v1), got %v", got)
	}
	// Fixing the file takes effect.
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 0, 100))
	waitVersion(t, c, front, "backend", nil, "v2")
}

// TestInboundOnSecondAddress registers a workload on the second of its
// host's two addresses: its sidecar must get inbound config for it.
func TestInboundOnSecondAddress(t *testing.T) {
	m := NewMesh(t)
	ipA, ipB := nextIP(), nextIP()
	port, err := localmesh.FreePort(ipB)
	if err != nil {
		t.Fatal(err)
	}
	b := Backend{Name: "multi-homed", Version: "v1", IP: ipB, Port: uint32(port)}
	m.WriteConfig("multi.yaml", ServiceEntryYAML("multi", 8080, "HTTP")+"---\n"+b.WorkloadEntryYAML("multi"))
	w := m.Workload(localmesh.WorkloadOptions{Name: b.Name, IPs: []string{ipA, ipB}, WorkloadPort: b.Port,
		Labels: map[string]string{"app": "multi", "version": "v1"}})
	front := m.Client("frontend")
	c := newClient()
	Eventually(t, 10*time.Second, "multi-homed workload answering", func() error {
		code, r, err := Get(context.Background(), c, front, "multi", "/", nil)
		if err != nil || code != 200 || r.Name != b.Name {
			return fmt.Errorf("code %d name %q err %v", code, r.Name, err)
		}
		return nil
	})
	dump := adminGet(t, w, "/config_dump")
	if want := fmt.Sprintf("%s_%d", ipB, port); !strings.Contains(dump, want) {
		t.Fatalf("config dump of the multi-homed proxy lacks inbound listener %s", want)
	}
}

// TestConfigBurstIsDebounced makes 100 edits in a burst: the mesh ends on
// the last one, after a handful of pushes rather than 100.
func TestConfigBurstIsDebounced(t *testing.T) {
	m, c := canaryMesh(t, 100, 0)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", nil, "v1")
	before := m.CP.Pushes()
	for i := 1; i <= 100; i++ {
		w1 := 100 - i
		m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, w1, i))
	}
	waitVersion(t, c, front, "backend", nil, "v2")
	pushes := m.CP.Pushes() - before
	t.Logf("100 edits -> %d pushes", pushes)
	if pushes > 10 {
		t.Fatalf("100 edits in a burst caused %d pushes, want a handful (≤ 10)", pushes)
	}
}

func adminGet(t *testing.T, w *localmesh.Workload, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+w.Proxy.AdminAddr().String()+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("admin %s: status %d: %s", path, resp.StatusCode, body)
	}
	return string(body)
}
