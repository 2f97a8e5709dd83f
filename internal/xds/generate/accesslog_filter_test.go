package generate

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/proxy/accesslog"
)

// TestAccessLogFilterSemantics: a Telemetry filter expression, parsed by
// the control plane, translated into Envoy's native filters and compiled
// by the proxy, logs exactly the requests the CEL expression holds for in
// Envoy (a comparison on a missing header is a CEL error there, which
// logs nothing).
func TestAccessLogFilterSemantics(t *testing.T) {
	type req struct {
		target string
		hdr    map[string]string
		code   int
		dur    time.Duration
	}
	probe := req{target: "/healthz", hdr: map[string]string{"User-Agent": "kube-probe/1.34"}, code: 200}
	app := req{target: "/api/items?page=2", hdr: map[string]string{"User-Agent": "curl/8"}, code: 200}
	noUA := req{target: "/api/items", code: 200}
	health := req{target: "/healthz?full=1", hdr: map[string]string{"User-Agent": "curl/8"}, code: 200}
	failed := req{target: "/api/items", hdr: map[string]string{"User-Agent": "curl/8"}, code: 503}
	slow := req{target: "/api/items", code: 200, dur: 3 * time.Second}
	for _, c := range []struct {
		expr string
		r    req
		want bool
	}{
		{"!request.headers['user-agent'].startsWith('kube-probe/')", probe, false},
		{"!request.headers['user-agent'].startsWith('kube-probe/')", app, true},
		{"!request.headers['user-agent'].startsWith('kube-probe/')", noUA, false}, // CEL: no such key
		{"!('user-agent' in request.headers)", noUA, true},
		{"request.url_path == '/healthz'", health, true},
		{"request.url_path == '/healthz'", app, false},
		{"request.path == '/healthz'", health, false}, // request.path has the query
		{"request.url_path != '/healthz'", health, false},
		{"request.url_path.endsWith('items')", app, true},
		{"request.url_path.endsWith('2')", app, false}, // the query's "2" is not the path's
		{"request.url_path.contains('pi/it')", app, true},
		{"request.url_path.contains('page')", app, false},
		{"request.path.contains('page')", app, true},
		{"request.path.matches('^/api/[a-z]+')", app, true},
		{"request.path.matches('tems\\\\?')", app, true},
		{"request.path.matches('^/items')", app, false},
		{"request.url_path in ['/healthz', '/api/items']", failed, true},
		{"!(request.url_path in ['/healthz', '/ready'])", probe, false},
		{"response.code >= 500 || response.duration > duration('2s')", failed, true},
		{"response.code >= 500 || response.duration > duration('2s')", slow, true},
		{"response.code >= 500 || response.duration > duration('2s')", app, false},
		{"!(response.code >= 500 || response.duration > duration('2s'))", app, true},
		{"!(response.code < 400) && request.useragent == 'curl/8'", failed, true},
		{"true", probe, true},
	} {
		f, err := config.ParseLogFilter(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		compiled, err := accesslog.ParseFilter(accessLogFilter(f))
		if err != nil {
			t.Errorf("%s: the proxy refuses the filter: %v", c.expr, err)
			continue
		}
		r := httptest.NewRequest("GET", "http://shop"+c.r.target, nil)
		r.Header = http.Header{}
		for k, v := range c.r.hdr {
			r.Header.Set(k, v)
		}
		e := &accesslog.Entry{Request: r, Code: c.r.code, Duration: c.r.dur}
		if got := compiled.Match(e); got != c.want {
			t.Errorf("%s on %s %v: logged %v, want %v", c.expr, c.r.target, c.r.hdr, got, c.want)
		}
	}
}

// FuzzAccessLogFilter: whatever expression the control plane accepts,
// the proxy compiles what it is translated into.
func FuzzAccessLogFilter(f *testing.F) {
	for _, s := range []string{
		"response.code >= 400", "!request.headers['x'].matches('a(b|c)*')", "request.url_path.endsWith('.js')",
		"!(request.path in ['/a', '/b']) && 'x-debug' in request.headers", "false || !true",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		lf, err := config.ParseLogFilter(expr)
		if err != nil || lf == nil || lf.Op == config.LogFilterNever {
			return
		}
		if _, err := accesslog.ParseFilter(accessLogFilter(lf)); err != nil {
			t.Fatalf("%q: accepted by the control plane, refused by the proxy: %v", expr, err)
		}
	})
}
