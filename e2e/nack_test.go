package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRejectedConfigIsNotResent registers a second service on a sidecar's
// address at the port its own app listens on, so the sidecar cannot bind
// the inbound listener and rejects the config. The control plane must not
// re-send what was rejected (it used to, thousands of times a second): the
// sidecar keeps serving its last good config with a handful of NACKs, and
// converges as soon as the config is fixed.
func TestRejectedConfigIsNotResent(t *testing.T) {
	m := NewMesh(t)
	w := m.Service("backend", "HTTP", "v1")[0]
	front := m.Client("frontend")
	c := newClient()
	waitVersion(t, c, front, "backend", nil, "v1")

	nacks := func() float64 {
		n, _ := series(t, w, "weft_proxy_xds_nacks_total", nil)
		return n
	}
	if n := nacks(); n != 0 {
		t.Fatalf("%v NACKs before any bad config", n)
	}
	ip := w.Opts.IPs[0]
	appPort := w.Echo.Addr().(*net.TCPAddr).Port
	shadow := Backend{Name: "shadow-v1", Version: "v1", IP: ip, Port: uint32(appPort)}
	m.WriteConfig("shadow.yaml", ServiceEntryYAML("shadow", 8080, "HTTP")+"---\n"+shadow.WorkloadEntryYAML("shadow"))

	Eventually(t, 10*time.Second, "the sidecar rejecting the config", func() error {
		if n := nacks(); n == 0 {
			return fmt.Errorf("no NACK yet")
		}
		return nil
	})
	first := nacks()
	time.Sleep(2 * time.Second)
	after := nacks()
	t.Logf("weft_proxy_xds_nacks_total: %v at the first rejection, %v 2s later", first, after)
	// One rejection NACKs each type of the set the sidecar could not apply.
	if after > 4 || after != first {
		t.Fatalf("weft_proxy_xds_nacks_total went %v -> %v in 2s; want at most one NACK per type (4), and no more", first, after)
	}

	// The last good config keeps serving.
	if !w.Proxy.Ready() {
		t.Fatal("sidecar not ready after rejecting config")
	}
	if dump := adminGet(t, w, "/config_dump"); strings.Contains(dump, fmt.Sprintf("%s_%d", ip, appPort)) {
		t.Fatalf("config dump holds the listener the sidecar could not bind")
	}
	waitVersion(t, c, front, "backend", nil, "v1")
	// The rejection, with the sidecar's reason, is on the control plane's /status.
	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	var seen, sourced bool
	for _, r := range st.Rejections {
		if strings.Contains(r.Node, w.Opts.Name) && strings.Contains(r.Error, fmt.Sprint(appPort)) {
			seen = true
			// It is mapped back to the config that caused it, with its file.
			sourced = sourced || strings.Contains(strings.Join(r.Sources, "\n"), "WorkloadEntry default/shadow-v1 (")
		}
	}
	if !seen {
		t.Fatalf("/status lacks the rejection by %s naming port %d: %+v", w.Opts.Name, appPort, st.Rejections)
	}
	if !sourced {
		t.Errorf("the rejection does not name the WorkloadEntry it came from: %+v", st.Rejections)
	}

	// Fix it: shadow's endpoint moves to the sidecar's inbound port, which
	// it already serves. The listeners are back to what the sidecar has,
	// but it still needs the routes and clusters it rejected with the bad
	// listener: its own outbound must learn shadow.
	fixed := Backend{Name: "shadow-v1", Version: "v1", IP: ip, Port: w.Opts.WorkloadPort, ServiceAccount: w.Opts.ServiceAccount}
	m.WriteConfig("shadow.yaml", ServiceEntryYAML("shadow", 8080, "HTTP")+"---\n"+fixed.WorkloadEntryYAML("shadow"))
	start := time.Now()
	for _, src := range []string{"sidecar", "frontend"} {
		via := w
		if src == "frontend" {
			via = front
		}
		Eventually(t, 10*time.Second, "routing to shadow from the "+src, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			code, r, err := Get(ctx, c, via, "shadow", "/", nil)
			if err != nil || code != 200 || r.Name != w.Opts.Name {
				return fmt.Errorf("code %d name %q err %v", code, r.Name, err)
			}
			return nil
		})
	}
	t.Logf("converged %v after the fix", time.Since(start))
	settled := nacks()
	time.Sleep(time.Second)
	if n := nacks(); n != settled || n != after {
		t.Fatalf("NACKs after the fix: %v, then %v a second later; want none (%v before the fix)", settled, n, after)
	}
	waitVersion(t, c, front, "backend", nil, "v1")
	Eventually(t, 5*time.Second, "rejections cleared from /status", func() error {
		st, err := m.Status()
		if err != nil {
			return err
		}
		if len(st.Rejections) != 0 {
			return fmt.Errorf("still listed: %+v", st.Rejections)
		}
		return nil
	})
}
