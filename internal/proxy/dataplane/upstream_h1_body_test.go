package dataplane

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// maxUsesProxy starts a data plane whose inbound listener sends everything
// to the HTTP/1.1 endpoint addr with max_requests_per_connection n.
func maxUsesProxy(t *testing.T, addr string, n uint32, rp ...*route.RetryPolicy) string {
	t.Helper()
	d := newDataplane(t, contract.Identity{}, nil)
	c := staticCluster(t, "inbound|8080||", addr)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttp.HttpProtocolOptions{
		CommonHttpProtocolOptions: &core.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(n)},
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}}}}})}
	rt := toCluster("default", prefixMatch("/"), "inbound|8080||")
	if len(rp) > 0 {
		rt = withRetry(rt, rp[0], 0)
	}
	mustApply(t, d, resources(c, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, rt)))))
	return "http://" + d.ListenerAddr("in").String()
}

// TestMaxRequestsPerConnectionBodies: requests with a body count against
// max_requests_per_connection too, whatever their size or framing, and
// mixed with bodiless ones.
func TestMaxRequestsPerConnectionBodies(t *testing.T) {
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+string(b[:min(len(b), 8)]))
	})
	base := maxUsesProxy(t, addr, 3)
	cl := &http.Client{}
	big := strings.Repeat("x", 256<<10)
	cases := []struct {
		name    string
		method  string
		body    func() io.Reader
		chunked bool
		want    string
	}{
		{name: "small", method: "POST", body: func() io.Reader { return strings.NewReader("hello") }, want: "POST hello"},
		{name: "large", method: "PUT", body: func() io.Reader { return strings.NewReader(big) }, want: "PUT xxxxxxxx"},
		{name: "chunked", method: "POST", body: func() io.Reader { return io.MultiReader(strings.NewReader("chunk")) }, chunked: true, want: "POST chunk"},
		{name: "mixed", method: "GET", want: "GET "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := conns.Load()
			for i := range 9 {
				var body io.Reader
				if tc.body != nil {
					body = tc.body()
				}
				method := tc.method
				if tc.name == "mixed" && i%2 == 1 {
					method, body = "POST", strings.NewReader("mixed")
				}
				req, err := http.NewRequest(method, base+"/", body)
				if err != nil {
					t.Fatal(err)
				}
				if tc.chunked {
					req.ContentLength = -1
				}
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || (tc.name != "mixed" && string(got) != tc.want) {
					t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, got, tc.want)
				}
			}
			if got := conns.Load() - before; got != 3 {
				t.Errorf("upstream connections = %d for 9 requests, want 3 (3 requests each)", got)
			}
		})
	}
}

// TestMaxRequestsPerConnectionEarlyResponse: an upstream that answers
// before reading a large body and closes the connection is answered with
// its response, and the next request gets a new connection.
func TestMaxRequestsPerConnectionEarlyResponse(t *testing.T) {
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	})
	base := maxUsesProxy(t, addr, 100)
	cl := &http.Client{}
	resp, err := cl.Post(base+"/", "application/octet-stream", strings.NewReader(strings.Repeat("y", 8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	t.Logf("early response: %d", resp.StatusCode)
	if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 413 (or 503 if the upstream reset first)", resp.StatusCode)
	}
	r := do(t, cl, "GET", base+"/", "x", nil)
	if r.code != 200 {
		t.Fatalf("follow-up status %d", r.code)
	}
	if got := conns.Load(); got != 2 {
		t.Errorf("upstream connections = %d, want 2", got)
	}
}

// TestMaxRequestsPerConnectionFullDuplex: on the synchronous path request
// and response bodies still stream at the same time: the upstream echoes
// each line as it reads it, and the client sends the next line only after
// it got the previous one back.
func TestMaxRequestsPerConnectionFullDuplex(t *testing.T) {
	addr, _ := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	base := maxUsesProxy(t, addr, 2)
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", base+"/", pr)
	if err != nil {
		t.Fatal(err)
	}
	line := func(i int) string { return strings.Repeat(string(rune('a'+i)), 5) }
	// The first line goes out before the response headers can arrive (the
	// proxy sends them with the first body bytes).
	go pw.Write([]byte(line(0)))
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	for i := range 3 {
		if i > 0 {
			if _, err := pw.Write([]byte(line(i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := io.ReadFull(resp.Body, buf[:5]); err != nil || string(buf[:5]) != line(i) {
			t.Fatalf("echo %d: %q, %v", i, buf[:5], err)
		}
	}
	pw.Close()
	if rest, _ := io.ReadAll(resp.Body); len(rest) != 0 {
		t.Fatalf("unexpected trailing body %q", rest)
	}
}

// TestMaxRequestsPerConnectionRetryReplaysBody: a retried request on the
// synchronous path sends the buffered body again (retry.go's replay rules).
func TestMaxRequestsPerConnectionRetryReplaysBody(t *testing.T) {
	var hits atomic.Int32
	addr, _ := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write(b)
	})
	base := maxUsesProxy(t, addr, 2, &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)})
	resp, err := (&http.Client{}).Post(base+"/", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "payload" || hits.Load() != 2 {
		t.Fatalf("got %d %q after %d attempts, want 200 \"payload\" after 2", resp.StatusCode, got, hits.Load())
	}
}

// TestMaxRequestsPerConnection: common_http_protocol_options
// .max_requests_per_connection closes an upstream HTTP/1.1 connection after
// that many requests.
func TestMaxRequestsPerConnection(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	d := newDataplane(t, contract.Identity{}, nil)
	c := staticCluster(t, "inbound|8080||", srv.Listener.Addr().String())
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttp.HttpProtocolOptions{
		CommonHttpProtocolOptions: &core.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)},
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}}}}})}
	mustApply(t, d, resources(c, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))))
	cl := client(t, false)
	for range 6 {
		if r := do(t, cl, "GET", "http://"+d.ListenerAddr("in").String()+"/", "x", nil); r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
	}
	if got := conns.Load(); got != 3 {
		t.Errorf("upstream connections = %d for 6 requests, want 3 (2 requests each)", got)
	}
}
