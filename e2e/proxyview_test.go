package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxyview"
)

// statusLine runs `weft proxy-status` and returns the table row of the
// workload, and the whole output.
func statusLine(c *proxyview.Client, workload string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b bytes.Buffer
	if err := c.Status(ctx, &b, proxyview.StatusOptions{}); err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, workload+".default ") {
			return line, b.String(), nil
		}
	}
	return "", b.String(), fmt.Errorf("no row for %s in\n%s", workload, b.String())
}

// waitSynced waits until proxy-status shows every type of each workload
// SYNCED, at mesh version want when it is set, and returns the output.
func waitSynced(t *testing.T, c *proxyview.Client, want string, workloads ...*localmesh.Workload) string {
	t.Helper()
	var out string
	Eventually(t, 10*time.Second, "proxy-status SYNCED", func() error {
		for _, w := range workloads {
			line, all, err := statusLine(c, w.Opts.Name)
			out = all
			if err != nil {
				return err
			}
			// CDS, LDS, EDS, RDS and — delta sidecars take their
			// virtual hosts by VHDS — VHDS.
			if n := strings.Count(line, "SYNCED"); n != 5 {
				return fmt.Errorf("%d of 5 types SYNCED: %s", n, line)
			}
			if want != "" && !strings.Contains(line, " "+want+" ") {
				return fmt.Errorf("not at mesh version %s: %s", want, line)
			}
		}
		return nil
	})
	return out
}

// proxyConfig runs `weft proxy-config SECTION PROXY` and returns its output.
func proxyConfig(t *testing.T, c *proxyview.Client, section, proxy string, f proxyview.Filter) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b bytes.Buffer
	if err := c.Config(ctx, &b, proxyview.ConfigOptions{Section: section, Proxy: proxy, Filter: f}); err != nil {
		t.Fatalf("proxy-config %s %s: %v", section, proxy, err)
	}
	return b.String()
}

// TestProxyStatusAndConfig runs the operator commands against a live mesh:
// proxy-status shows the sidecars SYNCED, and SYNCED again at the new mesh
// version after a config change; a config a sidecar rejects shows NACKED
// with the sidecar's error until it is fixed; proxy-config, finding the
// sidecar by name through the control plane, shows the weighted route
// with its weights and the echo backends healthy.
func TestProxyStatusAndConfig(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 80, 20))
	front := m.Client("frontend")
	m.WaitLoaded(1, 2)
	hc := newClient()
	waitVersion(t, hc, front, "backend", map[string]string{"x-canary": "true"}, "v2")
	c := &proxyview.Client{ControlPlane: m.CP.StatusAddr().String()}
	all := append([]*localmesh.Workload{front}, backends...)

	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	out := waitSynced(t, c, st.Version, all...)
	t.Logf("weft proxy-status:\n%s", out)

	routes := proxyConfig(t, c, proxyview.Routes, "frontend", proxyview.Filter{})
	for _, want := range []string{
		"outbound|8080|v1|backend.default.svc.cluster.local 80%, outbound|8080|v2|backend.default.svc.cluster.local 20%",
		"x-canary=true",
	} {
		if !strings.Contains(routes, want) {
			t.Errorf("proxy-config routes frontend lacks %q:\n%s", want, routes)
		}
	}
	eps := proxyConfig(t, c, proxyview.Endpoints, "frontend.default", proxyview.Filter{Cluster: "outbound|8080||backend.default.svc.cluster.local"})
	t.Logf("weft proxy-config endpoints frontend.default --cluster outbound|8080||backend.default.svc.cluster.local:\n%s", eps)
	for _, b := range backends {
		row := net.JoinHostPort(b.Opts.IPs[0], fmt.Sprint(b.Opts.WorkloadPort)) + " "
		if !strings.Contains(eps, row) || !strings.Contains(eps[strings.Index(eps, row):], "HEALTHY") {
			t.Errorf("proxy-config endpoints lacks %s HEALTHY:\n%s", row, eps)
		}
	}
	// By admin address too, with a filter.
	if got := proxyConfig(t, c, proxyview.Clusters, front.Proxy.AdminAddr().String(), proxyview.Filter{Subset: "v2"}); strings.Count(got, "\n") != 2 ||
		!strings.Contains(got, "backend.default.svc.cluster.local  8080  v2") {
		t.Errorf("proxy-config clusters %s --subset v2:\n%s", front.Proxy.AdminAddr(), got)
	}

	// A config change: SYNCED again, at the new version, with the new weights.
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
	Eventually(t, 10*time.Second, "the new mesh version", func() error {
		next, err := m.Status()
		if err != nil {
			return err
		}
		if next.Version == st.Version {
			return fmt.Errorf("still at %s", next.Version)
		}
		st = next
		return nil
	})
	out = waitSynced(t, c, st.Version, all...)
	t.Logf("weft proxy-status after the change:\n%s", out)
	if routes := proxyConfig(t, c, proxyview.Routes, "frontend", proxyview.Filter{Name: "http_proxy"}); !strings.Contains(routes,
		"outbound|8080|v1|backend.default.svc.cluster.local 50%, outbound|8080|v2|backend.default.svc.cluster.local 50%") {
		t.Errorf("proxy-config routes after the change lacks the 50/50 split:\n%s", routes)
	}

	// A config backend-v1's sidecar rejects (see TestRejectedConfigIsNotResent):
	// a service on its address at the port its app listens on.
	w := backends[0]
	appPort := w.Echo.Addr().(*net.TCPAddr).Port
	shadow := Backend{Name: "shadow-v1", Version: "v1", IP: w.Opts.IPs[0], Port: uint32(appPort)}
	m.WriteConfig("shadow.yaml", ServiceEntryYAML("shadow", 8080, "HTTP")+"---\n"+shadow.WorkloadEntryYAML("shadow"))
	Eventually(t, 10*time.Second, "proxy-status NACKED", func() error {
		line, all, err := statusLine(c, w.Opts.Name)
		if err != nil {
			return err
		}
		out = all
		if !strings.Contains(line, "NACKED") {
			return fmt.Errorf("no NACK: %s", line)
		}
		if !strings.Contains(all, w.Opts.Name+".default NACKED ") || !strings.Contains(all, fmt.Sprint(appPort)+": bind: address already in use") {
			return fmt.Errorf("the sidecar's error is not shown:\n%s", all)
		}
		return nil
	})
	t.Logf("weft proxy-status with a rejected config:\n%s", out)
	var detail bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Status(ctx, &detail, proxyview.StatusOptions{Proxy: w.Opts.Name}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail.String(), "standing: the proxy runs its last accepted version") {
		t.Errorf("proxy-status %s lacks the standing NACK:\n%s", w.Opts.Name, detail.String())
	}
	t.Logf("weft proxy-status %s:\n%s", w.Opts.Name, detail.String())

	// Fixed: the shadow endpoint moves to the sidecar's inbound port.
	fixed := Backend{Name: "shadow-v1", Version: "v1", IP: w.Opts.IPs[0], Port: w.Opts.WorkloadPort, ServiceAccount: w.Opts.ServiceAccount}
	m.WriteConfig("shadow.yaml", ServiceEntryYAML("shadow", 8080, "HTTP")+"---\n"+fixed.WorkloadEntryYAML("shadow"))
	waitSynced(t, c, "", all...)
}
