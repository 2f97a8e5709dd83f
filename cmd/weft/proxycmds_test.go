package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// adminServer serves a recorded config dump as a proxy's admin endpoint.
func adminServer(t *testing.T, dumpFile string) string {
	t.Helper()
	dump, err := os.ReadFile(dumpFile)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/config_dump" {
			_, _ = w.Write(dump)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// The flags reach the filter: each command prints what the golden of the
// same filter in internal/proxyview says.
func TestProxyConfigFlags(t *testing.T) {
	const td = "../../internal/proxyview/testdata/"
	admin := adminServer(t, td+"frontend-dump.json")
	for _, tt := range []struct {
		args   []string
		golden string
	}{
		{[]string{"proxy-config", "clusters", admin, "--fqdn", "backend.default.svc.cluster.local", "--subset", "v1"}, "frontend-clusters-backend-v1.txt"},
		{[]string{"proxy-config", "c", admin, "--direction", "inbound"}, "frontend-clusters-inbound.txt"},
		{[]string{"proxy-config", "endpoints", admin, "--cluster", "outbound|8080|v2|backend.default.svc.cluster.local"}, "frontend-endpoints-v2.txt"},
		{[]string{"proxy-config", "ep", admin, "--address", "127.0.66.2"}, "frontend-endpoints-address.txt"},
		{[]string{"proxy-config", "listeners", admin, "--port", "8080"}, "frontend-listeners-inbound.txt"},
		{[]string{"proxy-config", "routes", admin, "--name", "http_proxy"}, "frontend-routes-http_proxy.txt"},
		{[]string{"proxy-config", "clusters", admin, "-o", "json", "--subset", "v2"}, "frontend-clusters-v2-json.json"},
	} {
		t.Run(strings.Join(tt.args[:2], " ")+" "+tt.golden, func(t *testing.T) {
			out, err := run(t, tt.args...)
			if err != nil {
				t.Fatalf("weft %q: %v\n%s", tt.args, err, out)
			}
			want, err := os.ReadFile("internal/proxyview/testdata/golden/" + tt.golden)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("weft %q:\n%s\nwant\n%s", tt.args, out, want)
			}
		})
	}
}

func TestProxyCommandErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"proxy-config", "routes"}, "want one PROXY"},
		{[]string{"proxy-config", "secrets", "x:1"}, `unknown command "secrets"`},
		{[]string{"proxy-config", "routes", "127.0.0.1:1"}, "proxy 127.0.0.1:1: GET /config_dump:"},
		{[]string{"proxy-status", "--control-plane", "127.0.0.1:1"}, "control plane at 127.0.0.1:1 (--control-plane)"},
		{[]string{"proxy-status", "-o", "yaml", "--control-plane", "127.0.0.1:1"}, `output "yaml"`},
		{[]string{"proxy-status", "a", "b"}, "accepts at most 1 arg"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("weft %q = %v, want an error with %q\n%s", tt.args, err, tt.want, out)
			}
		})
	}
}
