package dataplane

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// shadowHit is what a mirror target saw of one request.
type shadowHit struct {
	method, host, path, proto, ctype, peer string
	body                                   []byte
	trailer                                string
}

// mirrorTarget is a recording upstream (HTTP/1.1 and h2c); gate, when
// non-nil, holds every response until it is closed.
func mirrorTarget(t *testing.T, hits chan<- shadowHit, gate <-chan struct{}) string {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hits <- shadowHit{method: r.Method, host: r.Host, path: r.URL.RequestURI(), proto: r.Proto,
			ctype: r.Header.Get("Content-Type"), peer: r.Header.Get(contract.HeaderPeerMetadata), body: b, trailer: r.Trailer.Get("X-Sum")}
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("X-Upstream", "mirror")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "from the mirror")
	}))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Config.Protocols.SetHTTP1(true)
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// stalledTarget accepts connections and never answers or reads.
func stalledTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// refusedAddr is an address where nothing listens.
func refusedAddr(t *testing.T) string { return closedPort(t) }

func mirrorRoute(primary string, rt *route.RetryPolicy, policies ...*route.RouteAction_RequestMirrorPolicy) *route.Route {
	r := toCluster("mirrored", prefixMatch("/"), primary)
	r.GetRoute().RequestMirrorPolicies = policies
	r.GetRoute().RetryPolicy = rt
	return r
}

// mirrorMesh applies: primary cluster "primary" at primaryAddr, mirror
// cluster "canary" at mirrorAddr (same protocol), a route on domain
// "reviews" and "reviews:9080" mirroring to canary, and an outbound listener.
func mirrorMesh(t *testing.T, reg *prometheus.Registry, h2 bool, primaryAddr, mirrorAddr string, r *route.Route) (*Dataplane, string) {
	t.Helper()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	mustApply(t, d, resourcesAny(
		edsCluster(t, "primary", h2, "reviews.default.svc.cluster.local"), cla("primary", ep{Addr: primaryAddr}),
		edsCluster(t, "canary", h2, "canary.default.svc.cluster.local"), cla("canary", ep{Addr: mirrorAddr}),
		routeConfig("r", vhost("v", []string{"reviews", "reviews:9080"}, r)),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	return d, "http://" + d.ListenerAddr("out").String()
}

// shadowCount reads weft_shadow_requests_total (or _active with result "").
func shadowCount(t *testing.T, g prometheus.Gatherer, name, cluster, result string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			if ls["envoy_cluster_name"] != cluster || (result != "" && ls["result"] != result) {
				continue
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func waitShadow(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func recv(t *testing.T, hits <-chan shadowHit) shadowHit {
	t.Helper()
	select {
	case h := <-hits:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the mirror target got no request")
		return shadowHit{}
	}
}

// TestMirrorCopiesRequest: over HTTP/1.1 and h2c, with and without a body,
// the client gets the primary's answer and the mirror target gets the same
// request with the host suffixed -shadow.
func TestMirrorCopiesRequest(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2c=%v", h2), func(t *testing.T) {
			hits := make(chan shadowHit, 16)
			reg := newRegistry()
			_, url := mirrorMesh(t, reg, h2, echoUpstream(t, "primary", h2), mirrorTarget(t, hits, nil),
				mirrorRoute("primary", nil, &route.RouteAction_RequestMirrorPolicy{Cluster: "canary"}))
			c := client(t, h2)

			res := do(t, c, "GET", url+"/get?x=1", "reviews:9080", nil)
			if res.code != 200 || res.upstream != "primary" {
				t.Fatalf("client got %d from %q, want 200 from the primary", res.code, res.upstream)
			}
			h := recv(t, hits)
			if h.method != "GET" || h.host != "reviews-shadow:9080" || h.path != "/get?x=1" || h.peer == "" {
				t.Fatalf("mirror saw %+v, want GET reviews-shadow:9080 /get?x=1 with the peer metadata", h)
			}

			body := strings.Repeat("0123456789", 10000)
			req, _ := http.NewRequest("POST", url+"/post", strings.NewReader(body))
			req.Host = "reviews"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "primary" {
				t.Fatalf("client got %d %q, want the primary's answer", resp.StatusCode, b)
			}
			h = recv(t, hits)
			if h.method != "POST" || h.host != "reviews-shadow" || string(h.body) != body {
				t.Fatalf("mirror saw %s %s with %d body bytes, want POST reviews-shadow with %d", h.method, h.host, len(h.body), len(body))
			}
			waitShadow(t, "two completed shadows", func() error {
				if n := shadowCount(t, reg, "weft_shadow_requests_total", "canary", shadowCompleted); n != 2 {
					return fmt.Errorf("completed = %v", n)
				}
				return nil
			})
		})
	}
}

// TestMirrorStreamingBody streams a request body in chunks over h2c, with
// trailers; the primary echoes each chunk back as it arrives (it could not
// answer if the tee held the body back), and the shadow gets it all.
func TestMirrorStreamingBody(t *testing.T) {
	hits := make(chan shadowHit, 4)
	primary := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		buf := make([]byte, 1024)
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
	}))
	primary.Config.Protocols = new(http.Protocols)
	primary.Config.Protocols.SetUnencryptedHTTP2(true)
	primary.Start()
	t.Cleanup(primary.Close)
	_, url := mirrorMesh(t, newRegistry(), true, primary.Listener.Addr().String(), mirrorTarget(t, hits, nil),
		mirrorRoute("primary", nil, &route.RouteAction_RequestMirrorPolicy{Cluster: "canary"}))

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", url+"/stream", pr)
	req.Host = "reviews"
	req.Trailer = http.Header{"X-Sum": nil}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type doResult struct {
		resp *http.Response
		err  error
	}
	done := make(chan doResult, 1)
	c := client(t, true)
	go func() {
		resp, err := c.Do(req.WithContext(ctx))
		done <- doResult{resp, err}
	}()
	var sent bytes.Buffer
	var resp *http.Response
	for i := range 5 {
		chunk := fmt.Sprintf("chunk %d;", i)
		sent.WriteString(chunk)
		if _, err := pw.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
		if resp == nil { // the response starts with the first echoed chunk
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			resp = r.resp
			defer resp.Body.Close()
		}
		got := make([]byte, len(chunk))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != chunk {
			t.Fatalf("chunk %d: primary echoed %q, %v", i, got, err)
		}
	}
	req.Trailer.Set("X-Sum", "5 chunks")
	pw.Close()
	h := recv(t, hits)
	if string(h.body) != sent.String() || h.trailer != "5 chunks" || h.proto != "HTTP/2.0" {
		t.Fatalf("shadow got %q (trailer %q, %s), want %q with trailer X-Sum over HTTP/2", h.body, h.trailer, h.proto, sent.String())
	}
}

// TestMirrorWithRetriesSeesBodyOnce: when the primary retries (its body
// replayed), the shadow still gets the body exactly once.
func TestMirrorWithRetriesSeesBodyOnce(t *testing.T) {
	hits := make(chan shadowHit, 4)
	var calls atomic.Int64
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(primary.Close)
	_, url := mirrorMesh(t, newRegistry(), false, primary.Listener.Addr().String(), mirrorTarget(t, hits, nil),
		mirrorRoute("primary", &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)},
			&route.RouteAction_RequestMirrorPolicy{Cluster: "canary"}))
	req, _ := http.NewRequest("PUT", url+"/", strings.NewReader("payload"))
	req.Host = "reviews"
	resp, err := client(t, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || calls.Load() != 2 {
		t.Fatalf("got %d after %d primary attempts, want 200 after a retry", resp.StatusCode, calls.Load())
	}
	if h := recv(t, hits); string(h.body) != "payload" {
		t.Fatalf("shadow body %q, want %q", h.body, "payload")
	}
	select {
	case h := <-hits:
		t.Fatalf("a second shadow: %+v (retries are not mirrored again)", h)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestMirrorGRPC(t *testing.T) {
	var primaryCalls, canaryCalls atomic.Int64
	reg := newRegistry()
	_, url := mirrorMesh(t, reg, true, grpcUpstream(t, "primary", &primaryCalls), grpcUpstream(t, "canary", &canaryCalls),
		mirrorRoute("primary", nil, &route.RouteAction_RequestMirrorPolicy{Cluster: "canary"}))
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(url, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("reviews"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 100
	for range n {
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	waitShadow(t, "every call mirrored", func() error {
		if primaryCalls.Load() != n || canaryCalls.Load() != n {
			return fmt.Errorf("primary %d, canary %d calls; want %d each", primaryCalls.Load(), canaryCalls.Load(), n)
		}
		if c := shadowCount(t, reg, "weft_shadow_requests_total", "canary", shadowCompleted); c != n {
			return fmt.Errorf("%v completed shadows", c)
		}
		return nil
	})
}

// TestMirrorNeverHoldsThePrimary: a mirror target that is stalled (never
// answers, never reads), refuses connections, or is missing does not change
// the client's answers or make it wait, and the shadows are bounded.
func TestMirrorNeverHoldsThePrimary(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
	}{
		{"stalled", stalledTarget},
		{"slow", func(t *testing.T) string { return mirrorTarget(t, make(chan shadowHit, 1000), gate) }},
		{"refused", refusedAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newRegistry()
			d, url := mirrorMesh(t, reg, false, echoUpstream(t, "primary", false), tc.target(t),
				mirrorRoute("primary", nil, &route.RouteAction_RequestMirrorPolicy{Cluster: "canary"}))
			c := client(t, false)
			const n = maxShadowsPerCluster + 20
			big := strings.Repeat("x", 16<<20) // more than socket buffers hold: a stalled shadow falls behind
			start := time.Now()
			for i := range n {
				var res result
				if i == 0 {
					req, _ := http.NewRequest("POST", url+"/", strings.NewReader(big))
					req.Host = "reviews"
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					res = result{code: resp.StatusCode, body: string(b)}
				} else {
					res = do(t, c, "GET", url+"/", "reviews", nil)
				}
				if res.code != 200 || res.body != "primary" {
					t.Fatalf("request %d: got %d %q, want the primary's 200", i, res.code, res.body)
				}
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("%d requests took %v with a %s mirror", n, el, tc.name)
			}
			switch tc.name {
			case "refused":
				waitShadow(t, "failed shadows counted", func() error {
					// The big body's shadow may also be cut off for lagging
					// before its connect failure is seen.
					f := shadowCount(t, reg, "weft_shadow_requests_total", "canary", shadowFailed)
					lag := shadowCount(t, reg, "weft_shadow_requests_total", "canary", shadowBodyOverflow)
					if f+lag != n || f < n-1 {
						return fmt.Errorf("failed = %v, body_overflow = %v, want %d in all", f, lag, n)
					}
					return nil
				})
			default:
				// The first shadow fell behind its 16 MiB body (stalled) or is
				// waiting (slow); at most maxShadowsPerCluster are in flight.
				waitShadow(t, "bounded shadows", func() error {
					active := shadowCount(t, reg, "weft_shadow_requests_active", "canary", "")
					over := shadowCount(t, reg, "weft_shadow_requests_total", "canary", shadowOverflow)
					lag := shadowCount(t, reg, "weft_shadow_requests_total", "canary", shadowBodyOverflow)
					if active > maxShadowsPerCluster || over+lag < n-maxShadowsPerCluster || over+active+lag != n {
						return fmt.Errorf("active %v, overflow %v, body_overflow %v of %d", active, over, lag, n)
					}
					t.Logf("%d shadows: %v in flight, %v dropped (overflow), %v cut off (body_overflow)", n, active, over, lag)
					return nil
				})
			}
			// Closing the data plane does not wait for shadows.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start = time.Now()
			if err := d.Close(ctx); err != nil {
				t.Fatalf("Close with shadows in flight: %v", err)
			}
			if el := time.Since(start); el > time.Second {
				t.Errorf("Close took %v with shadows in flight", el)
			}
		})
	}
}

func TestMirrorMissingClusterAndHeader(t *testing.T) {
	hits := make(chan shadowHit, 4)
	reg := newRegistry()
	_, url := mirrorMesh(t, reg, false, echoUpstream(t, "primary", false), mirrorTarget(t, hits, nil),
		mirrorRoute("primary", nil,
			&route.RouteAction_RequestMirrorPolicy{Cluster: "gone"},
			&route.RouteAction_RequestMirrorPolicy{ClusterHeader: "x-mirror-to", HostRewriteLiteral: "literal.example"}))
	c := client(t, false)
	if res := do(t, c, "GET", url+"/", "reviews", nil); res.code != 200 || res.upstream != "primary" {
		t.Fatalf("got %d from %q", res.code, res.upstream)
	}
	if res := do(t, c, "GET", url+"/", "reviews", map[string]string{"x-mirror-to": "canary"}); res.code != 200 || res.upstream != "primary" {
		t.Fatalf("got %d from %q", res.code, res.upstream)
	}
	if h := recv(t, hits); h.host != "literal.example" {
		t.Fatalf("host_rewrite_literal: shadow host %q", h.host)
	}
	if n := shadowCount(t, reg, "weft_shadow_requests_total", "gone", shadowNoCluster); n != 2 {
		t.Fatalf("no_cluster = %v, want 2", n)
	}
	select {
	case h := <-hits:
		t.Fatalf("unexpected shadow without the cluster header: %+v", h)
	case <-time.After(100 * time.Millisecond):
	}
}
