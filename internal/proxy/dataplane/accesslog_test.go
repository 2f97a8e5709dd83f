package dataplane

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// withAccessLogs adds access_log entries to l's connection manager.
func withAccessLogs(t testing.TB, l *listener.Listener, als ...*accesslogv3.AccessLog) *listener.Listener {
	t.Helper()
	f := l.FilterChains[0].Filters[0]
	var m hcm.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	m.AccessLog = append(m.AccessLog, als...)
	f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: proxytest.MustAny(t, &m)}
	return l
}

// fileLog is an envoy.access_loggers.file entry; format "" is Envoy's default.
func fileLog(t testing.TB, path string, format *core.SubstitutionFormatString, filter *accesslogv3.AccessLogFilter) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: path}
	if format != nil {
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: format}
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", Filter: filter,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: proxytest.MustAny(t, fl)}}
}

func jsonFormat(t testing.TB, fields map[string]any) *core.SubstitutionFormatString {
	st, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_JsonFormat{JsonFormat: st}}
}

// TestAccessLogFile: requests through a listener with access logs are
// written to the files, Envoy's default format and a JSON one with typed
// values; a status filter logs only the errors; a config update keeps
// writing to the same file; Close flushes.
func TestAccessLogFile(t *testing.T) {
	dir := t.TempDir()
	textPath, jsonPath, errPath := filepath.Join(dir, "text.log"), filepath.Join(dir, "json.log"), filepath.Join(dir, "errors.log")
	app := echoUpstream(t, "app", false)
	d := newDataplane(t, contract.Identity{WorkloadName: "w", Namespace: "default"}, nil)
	errorsOnly := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
		Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE, Value: &core.RuntimeUInt32{DefaultValue: 400, RuntimeKey: "k"}}}}}
	l := withAccessLogs(t, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/ok"), "inbound|8080||")))),
		fileLog(t, textPath, nil, nil),
		fileLog(t, jsonPath, jsonFormat(t, map[string]any{"method": "%REQ(:METHOD)%", "code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%",
			"upstream": "%UPSTREAM_HOST%", "cluster": "%UPSTREAM_CLUSTER%", "route": "%ROUTE_NAME%", "missing": "%REQ(X-NONE)%",
			"bytes": "%BYTES_SENT%", "flags": "%RESPONSE_FLAGS%", "ua": "agent=%REQ(USER-AGENT)%", "static": 7}), nil),
		fileLog(t, errPath, nil, errorsOnly))
	mustApply(t, d, resourcesAny(staticCluster(t, "inbound|8080||", app), l))
	base := "http://" + d.ListenerAddr("in").String()
	for _, p := range []string{"/ok?x=1", "/nope"} {
		req, _ := http.NewRequest("POST", base+p, strings.NewReader("hello"))
		req.Header.Set("User-Agent", "alog-test")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// An update with the same logs keeps the sinks.
	mustApply(t, d, resourcesAny(staticCluster(t, "inbound|8080||", app), l))
	if err := d.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	read := func(p string) []string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	text := read(textPath)
	if len(text) != 2 || !strings.Contains(text[0], `"POST /ok?x=1 HTTP/1.1" 200 - 5 `) || !strings.Contains(text[0], `"alog-test"`) ||
		!strings.HasSuffix(text[0], `"`+app+`"`) || !strings.Contains(text[1], `"POST /nope HTTP/1.1" 404 NR 0 0 `) || !strings.HasSuffix(text[1], ` "-"`) {
		t.Errorf("text log:\n%s", strings.Join(text, "\n"))
	}
	js := read(jsonPath)
	var first map[string]any
	if err := json.Unmarshal([]byte(js[0]), &first); err != nil {
		t.Fatalf("%v: %s", err, js[0])
	}
	want := map[string]any{"method": "POST", "code": float64(200), "path": "/ok?x=1", "upstream": app, "cluster": "inbound|8080||",
		"route": "default", "missing": nil, "flags": "-", "ua": "agent=alog-test", "static": float64(7)}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("json %s = %#v, want %#v (%s)", k, first[k], v, js[0])
		}
	}
	if first["bytes"].(float64) <= 0 {
		t.Errorf("bytes = %v", first["bytes"])
	}
	if errs := read(errPath); len(errs) != 1 || !strings.Contains(errs[0], " 404 NR ") {
		t.Errorf("errors log: %q", errs)
	}
}

// TestAccessLogRejected: an access logger the proxy does not implement is
// refused (NACK) naming the field, and the old config stays.
func TestAccessLogRejected(t *testing.T) {
	d := newDataplane(t, contract.Identity{WorkloadName: "w", Namespace: "default"}, nil)
	l := withAccessLogs(t, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("r", vhost("v", []string{"*"}, toCluster("default", prefixMatch("/"), "c")))),
		&accesslogv3.AccessLog{Name: "envoy.access_loggers.http_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: proxytest.MustAny(t, &routerv3.Router{})}})
	err := d.Apply(resourcesAny(staticCluster(t, "c", "127.0.0.1:1"), l))
	if err == nil || !strings.Contains(err.Error(), "access_log[0] (envoy.access_loggers.http_grpc).typed_config") {
		t.Fatalf("Apply: %v", err)
	}
	bad := withAccessLogs(t, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("r", vhost("v", []string{"*"}, toCluster("default", prefixMatch("/"), "c")))),
		fileLog(t, "/dev/null", &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_TextFormat{TextFormat: "%NOPE%"}}, nil))
	if err := d.Apply(resourcesAny(staticCluster(t, "c", "127.0.0.1:1"), bad)); err == nil || !strings.Contains(err.Error(), "unknown command operator %NOPE%") {
		t.Fatalf("Apply: %v", err)
	}
}

// BenchmarkForwardHTTP1AccessLog is BenchmarkForwardHTTP1 with one access
// log (Envoy's default format) to a file, against the same without: the
// cost of logging on the request path.
func BenchmarkForwardHTTP1AccessLog(b *testing.B) {
	body := strings.Repeat("x", 1024)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	b.Cleanup(func() { srv.Close(); wg.Wait() })
	logPath := filepath.Join(b.TempDir(), "access.log")
	for _, logging := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[logging], func(b *testing.B) {
			d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
			l := httpListener(b, "in", core.TrafficDirection_INBOUND, "",
				routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))
			if logging {
				l = withAccessLogs(b, l, fileLog(b, logPath, nil, nil))
			}
			mustApply(b, d, resourcesAny(staticCluster(b, "inbound|8080||", ln.Addr().String()), l))
			url := "http://" + d.ListenerAddr("in").String() + "/?size=1024"
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			req, _ := http.NewRequest("GET", url, nil)
			req.Host = "bench"
			get := func() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			get()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				get()
			}
		})
	}
}
