package proxyview

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/xds/server"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// The recorded inputs in testdata come from `weft demo` on a copy of
// examples/canary with a DestinationRule trafficPolicy (circuit breaker,
// outlier detection) and a canary route with a timeout and retries:
// proxies-nacked.json while backend-v1 rejected a WorkloadEntry on its
// app's port, proxies-recovered.json after the file was removed, and the
// config dumps of frontend and backend-v1 at that time.

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readProxies(t *testing.T, name string) controlplane.DebugProxies {
	t.Helper()
	var dp controlplane.DebugProxies
	if err := json.Unmarshal(readFile(t, name), &dp); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return dp
}

func readDump(t *testing.T, name string) *Dump {
	t.Helper()
	d, err := ParseDump(readFile(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestStatusGolden(t *testing.T) {
	for _, tt := range []struct {
		input string
		now   string
	}{
		{"proxies-nacked.json", "2026-12-01T14:44:05Z"},
		{"proxies-recovered.json", "2026-12-01T14:44:10Z"},
	} {
		name := strings.TrimSuffix(tt.input, ".json")
		t.Run(name, func(t *testing.T) {
			dp := readProxies(t, tt.input)
			var b bytes.Buffer
			if err := WriteStatusTable(&b, dp, "127.0.0.1:15014"); err != nil {
				t.Fatal(err)
			}
			golden(t, name+"-table.txt", b.String())

			ps, err := find(dp.Proxies, "backend-v1", "127.0.0.1:15014")
			if err != nil {
				t.Fatal(err)
			}
			b.Reset()
			if err := WriteProxyStatus(&b, ps, dp.Version, mustTime(t, tt.now)); err != nil {
				t.Fatal(err)
			}
			golden(t, name+"-backend-v1.txt", b.String())
		})
	}
}

func TestConfigGolden(t *testing.T) {
	for _, tt := range []struct {
		name, dump, section, output string
		filter                      Filter
	}{
		{"frontend-listeners", "frontend-dump.json", Listeners, "", Filter{}},
		{"frontend-routes", "frontend-dump.json", Routes, "", Filter{}},
		{"frontend-clusters", "frontend-dump.json", Clusters, "", Filter{}},
		{"frontend-endpoints", "frontend-dump.json", Endpoints, "", Filter{}},
		{"backend-v1-listeners", "backend-v1-dump.json", Listeners, "", Filter{}},
		{"backend-v1-routes", "backend-v1-dump.json", Routes, "", Filter{}},
		{"backend-v1-clusters", "backend-v1-dump.json", Clusters, "", Filter{}},
		{"backend-v1-endpoints", "backend-v1-dump.json", Endpoints, "", Filter{}},
		{"frontend-listeners-inbound", "frontend-dump.json", Listeners, "", Filter{Port: 8080}},
		{"frontend-routes-http_proxy", "frontend-dump.json", Routes, "", Filter{Name: "http_proxy"}},
		{"frontend-clusters-backend-v1", "frontend-dump.json", Clusters, "", Filter{FQDN: "backend.default.svc.cluster.local", Subset: "v1"}},
		{"frontend-clusters-inbound", "frontend-dump.json", Clusters, "", Filter{Direction: "inbound"}},
		{"frontend-endpoints-v2", "frontend-dump.json", Endpoints, "", Filter{Cluster: "outbound|8080|v2|backend.default.svc.cluster.local"}},
		{"frontend-endpoints-address", "frontend-dump.json", Endpoints, "", Filter{Address: "127.0.66.2"}},
		{"frontend-clusters-v2-json", "frontend-dump.json", Clusters, OutputJSON, Filter{Subset: "v2"}},
		{"frontend-routes-json", "frontend-dump.json", Routes, OutputJSON, Filter{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteSection(&b, readDump(t, tt.dump), tt.section, tt.output, tt.filter); err != nil {
				t.Fatal(err)
			}
			ext := ".txt"
			if tt.output == OutputJSON {
				ext = ".json"
				if !json.Valid(b.Bytes()) {
					t.Fatalf("-o json output is not JSON:\n%s", b.String())
				}
			}
			golden(t, tt.name+ext, b.String())
		})
	}
}

// A typed config of a type this binary does not link is kept opaque: the
// tables still render.
func TestParseDumpToleratesUnknownTypes(t *testing.T) {
	dump := `{"listeners":[{"name":"l","address":{"socketAddress":{"address":"127.0.0.1","portValue":1}},
	  "filterChains":[{"filters":[{"name":"example.filter","typedConfig":{"@type":"type.googleapis.com/example.v1.Unknown","x":1}}]}]}],
	  "routes":[],"clusters":[],"endpoints":[],"versions":{}}`
	d, err := ParseDump([]byte(dump))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteListeners(&b, d, Filter{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "example.filter") {
		t.Errorf("listener table lacks the opaque filter's name:\n%s", b.String())
	}
	if _, err := ParseDump([]byte(`<html>`)); err == nil || !strings.Contains(err.Error(), "not the expected JSON") {
		t.Errorf("ParseDump of HTML = %v, want a clear error", err)
	}
}

// fakeMesh serves /debug/proxies like a control plane whose proxies all
// point at one admin server, which answers /config_dump with dump and code.
func fakeMesh(t *testing.T, proxies string, code int, dump []byte) *Client {
	t.Helper()
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/config_dump" {
			http.NotFound(w, r)
			return
		}
		if code != http.StatusOK {
			http.Error(w, "config dump: proto: google.protobuf.Any: unable to resolve \"type.googleapis.com/x\"", code)
			return
		}
		_, _ = w.Write(dump)
	}))
	t.Cleanup(admin.Close)
	var dp controlplane.DebugProxies
	if err := json.Unmarshal(readFile(t, proxies), &dp); err != nil {
		t.Fatal(err)
	}
	for i := range dp.Proxies {
		dp.Proxies[i].AdminAddress = strings.TrimPrefix(admin.URL, "http://")
	}
	body, err := json.Marshal(dp)
	if err != nil {
		t.Fatal(err)
	}
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/proxies" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(cp.Close)
	c := &Client{ControlPlane: strings.TrimPrefix(cp.URL, "http://"), HTTP: &http.Client{Timeout: 5 * time.Second}}
	t.Cleanup(c.HTTP.CloseIdleConnections)
	return c
}

func TestConfigFindsProxyByName(t *testing.T) {
	ctx := context.Background()
	c := fakeMesh(t, "proxies-recovered.json", http.StatusOK, readFile(t, "frontend-dump.json"))
	for _, name := range []string{"frontend", "frontend.default", "sidecar~127.0.66.1~frontend.default~default.svc.cluster.local"} {
		var b bytes.Buffer
		if err := c.Config(ctx, &b, ConfigOptions{Section: Routes, Proxy: name}); err != nil {
			t.Fatalf("proxy-config routes %s: %v", name, err)
		}
		if !strings.Contains(b.String(), "outbound|8080|v1|backend.default.svc.cluster.local 90%") {
			t.Errorf("proxy-config routes %s lacks the 90%% split:\n%s", name, b.String())
		}
	}
	var b bytes.Buffer
	if err := c.Status(ctx, &b, StatusOptions{Output: OutputJSON}); err != nil {
		t.Fatal(err)
	}
	var dp controlplane.DebugProxies
	if err := json.Unmarshal(b.Bytes(), &dp); err != nil || len(dp.Proxies) != 3 {
		t.Errorf("proxy-status -o json: %v, %d proxies:\n%s", err, len(dp.Proxies), b.String())
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	failing := fakeMesh(t, "proxies-recovered.json", http.StatusInternalServerError, nil)
	for _, tt := range []struct {
		name string
		c    *Client
		o    ConfigOptions
		want []string
	}{
		{"dump fails", failing, ConfigOptions{Section: Clusters, Proxy: "frontend"},
			[]string{"proxy frontend.default (", "GET /config_dump: HTTP 500 Internal Server Error: config dump: proto:"}},
		{"unknown proxy", failing, ConfigOptions{Section: Clusters, Proxy: "nosuch"},
			[]string{`no proxy "nosuch" is connected`, "connected: frontend.default, backend-v1.default, backend-v2.default"}},
		{"bad section", failing, ConfigOptions{Section: "secrets", Proxy: "frontend"}, []string{`section "secrets"`}},
		{"bad output", failing, ConfigOptions{Section: Clusters, Proxy: "frontend", Output: "yaml"}, []string{`output "yaml": want table or json`}},
		{"no control plane", &Client{ControlPlane: "127.0.0.1:1"}, ConfigOptions{Section: Clusters, Proxy: "frontend"},
			[]string{`finding proxy "frontend": control plane at 127.0.0.1:1 (--control-plane): GET /debug/proxies:`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Config(ctx, &bytes.Buffer{}, tt.o)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestFindProxy(t *testing.T) {
	dp := readProxies(t, "proxies-recovered.json")
	twin := dp.Proxies[0]
	twin.Node = strings.Replace(twin.Node, "127.0.66", "127.0.99", 1)
	all := append(dp.Proxies, twin)
	if _, err := find(all, twin.Workload, "cp"); err == nil || !strings.Contains(err.Error(), "matches 2 proxies") {
		t.Errorf("ambiguous name: %v", err)
	}
	if p, err := find(all, twin.Node, "cp"); err != nil || p.Node != twin.Node {
		t.Errorf("by node id: %v, %v", p.Node, err)
	}
	if got := uniqueNames(all); got[0] != dp.Proxies[0].Node || got[len(got)-1] != twin.Node {
		t.Errorf("uniqueNames with twins = %q, want node ids for the twins", got)
	}

	// A proxy that did not report its admin address must be named by it.
	noAdmin := dp
	noAdmin.Proxies = []server.ProxyStatus{dp.Proxies[0]}
	noAdmin.Proxies[0].AdminAddress = ""
	body, err := json.Marshal(noAdmin)
	if err != nil {
		t.Fatal(err)
	}
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	defer cp.Close()
	c := &Client{ControlPlane: strings.TrimPrefix(cp.URL, "http://"), HTTP: &http.Client{Timeout: 5 * time.Second}}
	defer c.HTTP.CloseIdleConnections()
	if _, err := c.Resolve(context.Background(), noAdmin.Proxies[0].Workload); err == nil || !strings.Contains(err.Error(), "did not report its admin address") {
		t.Errorf("Resolve of a proxy without an admin address = %v", err)
	}
	for addr, want := range map[string]bool{"127.0.0.1:15000": true, "[::1]:15000": true, "frontend": false,
		"sidecar~127.0.0.1~a.b~b.svc.cluster.local": false, "host:port": false} {
		if isAddress(addr) != want {
			t.Errorf("isAddress(%q) = %v, want %v", addr, !want, want)
		}
	}
}
