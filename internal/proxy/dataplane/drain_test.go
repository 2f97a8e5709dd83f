package dataplane

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/xds/contract"
)

// A drain long enough that a test never sees it run out by itself.
const longDrain = time.Minute

// newDrainDataplane is newDataplane with removed listeners draining for
// drain. Its cleanup closes it with 5 s to spare, and fails the test if
// Close had to cut requests short.
func newDrainDataplane(t *testing.T, drain time.Duration, reg prometheus.Registerer) *Dataplane {
	t.Helper()
	d, err := New(Options{Identity: contract.Identity{WorkloadName: "app", Namespace: "default"}, Metrics: reg, ListenerDrain: drain})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// withdrawal is a workload's sidecar config with or without its inbound
// listener "in" at inAddr (to the app at app). Withdrawn, the inbound
// cluster goes too: only the last runtime still knows where to send
// requests. The outbound listener "out" stays in both.
func withdrawal(t *testing.T, inAddr, app string, present bool) *xdsResources {
	items := []any{
		edsCluster(t, "other", false, ""), cla("other", ep{Addr: app}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "other"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil),
	}
	if present {
		items = append(items, staticCluster(t, "inbound|8080||", app),
			withAddr(httpListener(t, "in", core.TrafficDirection_INBOUND, "",
				routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("", prefixMatch("/"), "inbound|8080||")))), inAddr))
	}
	return resourcesAny(items...)
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// dialCounter is an HTTP/1.1 client that counts the connections it opens.
type dialCounter struct {
	*http.Client
	dials atomic.Int32
}

func newDialCounter(t *testing.T) *dialCounter {
	dc := &dialCounter{}
	tr := &http.Transport{MaxIdleConnsPerHost: 10, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dc.dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	dc.Client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return dc
}

// TestRemovedListenerKeepsServing removes an inbound listener together
// with its cluster. For its drain period the listener keeps serving on the
// runtime it was last part of — on connections it already had and on new
// ones — and every answer asks the client to leave: Connection: close on
// HTTP/1.1, GOAWAY on HTTP/2.
func TestRemovedListenerKeepsServing(t *testing.T) {
	app := echoUpstream(t, "app", false)
	inAddr := freeAddr(t)
	reg := newRegistry()
	d := newDrainDataplane(t, longDrain, reg)
	mustApply(t, d, withdrawal(t, inAddr, app, true))
	url := "http://" + inAddr + "/"

	c := newDialCounter(t)
	if got := do(t, c.Client, "GET", url, "x", nil); got.code != 200 || got.upstream != "app" || got.close {
		t.Fatalf("before the removal: %d %q close=%v", got.code, got.upstream, got.close)
	}
	h2 := dialH2(t, inAddr)
	if st, goaway := h2.get(t, 1, false); st != "200" || goaway != nil {
		t.Fatalf("h2 before the removal: status %q, GOAWAY %v", st, goaway)
	}

	mustApply(t, d, withdrawal(t, inAddr, app, false))
	if d.ListenerAddr("in") != nil {
		t.Fatal("removed listener still in the configuration")
	}
	if n := gaugeValue(t, reg, "weft_proxy_listeners_draining"); n != 1 {
		t.Errorf("weft_proxy_listeners_draining = %v, want 1", n)
	}

	// HTTP/1.1: the idle keep-alive connection, then a new one.
	for i, want := range []int32{1, 2} {
		got := do(t, c.Client, "GET", url, "x", nil)
		if got.code != 200 || got.upstream != "app" {
			t.Errorf("request %d while draining: %d %q, want 200 from the app", i, got.code, got.upstream)
		}
		if !got.close {
			t.Errorf("request %d while draining: no Connection: close", i)
		}
		if n := c.dials.Load(); n != want {
			t.Errorf("request %d while draining: %d connections opened so far, want %d", i, n, want)
		}
	}

	// HTTP/2: the open connection answers, sends GOAWAY (no error) and
	// closes; a new connection is served the same way.
	if st, goaway := h2.get(t, 3, true); st != "200" || goaway == nil || goaway.ErrCode != http2.ErrCodeNo {
		t.Errorf("h2 while draining: status %q, GOAWAY %v; want 200 and GOAWAY NO_ERROR", st, goaway)
	}
	h2.waitClosed(t)
	if st, goaway := dialH2(t, inAddr).get(t, 1, true); st != "200" || goaway == nil {
		t.Errorf("h2 on a new connection while draining: status %q, GOAWAY %v", st, goaway)
	}
	if n := counterValue(t, reg, map[string]string{"reporter": "destination", "response_code": "200"}); n != 6 {
		t.Errorf("inbound requests recorded: %v, want 6", n)
	}
}

// TestRemovedListenerClosesAfterDrain: once its drain period is over a
// removed listener stops accepting. Until then every request on a new
// connection is answered by the app; no request is cut or refused by the
// proxy while the socket accepts.
func TestRemovedListenerClosesAfterDrain(t *testing.T) {
	app := echoUpstream(t, "app", false)
	inAddr := freeAddr(t)
	reg := newRegistry()
	d := newDrainDataplane(t, 200*time.Millisecond, reg)
	mustApply(t, d, withdrawal(t, inAddr, app, true))
	mustApply(t, d, withdrawal(t, inAddr, app, false))

	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	served := 0
	for i := 0; ; i++ {
		if i == 10000 || time.Now().After(deadline) {
			t.Fatalf("removed listener still accepting after %d requests", served)
		}
		resp, err := c.Get("http://" + inAddr + "/")
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err != nil {
			// Accepted by the kernel just as the socket closed: the only
			// way a client can lose a connection at the end of a drain.
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "app" || !resp.Close {
			t.Fatalf("request %d while draining: %d %q Connection: close=%v", i, resp.StatusCode, body, resp.Close)
		}
		served++
	}
	t.Logf("%d requests served while draining, then refused", served)
	if n := gaugeValue(t, reg, "weft_proxy_listeners_draining"); n != 0 {
		t.Errorf("weft_proxy_listeners_draining = %v after the drain, want 0", n)
	}
}

// TestListenerReaddedDuringDrainTakesOver removes a listener and adds it
// back (same name, same address) while it drains, as when a canary is
// withdrawn and re-added: no bind failure, the same socket, and the
// connections it had — idle or with a request in flight — carry on.
func TestListenerReaddedDuringDrainTakesOver(t *testing.T) {
	started := make(chan struct{})
	slow := newSlowUpstream(t, started, 300*time.Millisecond)
	app := echoUpstream(t, "app", false)
	inAddr := freeAddr(t)
	reg := newRegistry()
	d := newDrainDataplane(t, longDrain, reg)
	mustApply(t, d, withdrawal(t, inAddr, app, true))
	bl := d.bound["in"]
	url := "http://" + inAddr + "/"

	// An idle keep-alive connection, and a request in flight.
	idle := newDialCounter(t)
	if got := do(t, idle.Client, "GET", url, "x", nil); got.upstream != "app" {
		t.Fatalf("before the removal: %+v", got)
	}
	mustApply(t, d, withdrawal(t, inAddr, slow, true))
	inflight := make(chan result, 1)
	go func() { inflight <- do(t, client(t, false), "GET", url, "x", nil) }()
	<-started

	mustApply(t, d, withdrawal(t, inAddr, app, false))
	if err := d.Apply(withdrawal(t, inAddr, app, true)); err != nil {
		t.Fatalf("adding the listener back while it drains: %v", err)
	}
	if d.bound["in"] != bl || d.ListenerAddr("in").String() != inAddr {
		t.Errorf("listener re-bound instead of taken over")
	}
	if n := gaugeValue(t, reg, "weft_proxy_listeners_draining"); n != 0 {
		t.Errorf("weft_proxy_listeners_draining = %v after the take-over, want 0", n)
	}
	if got := <-inflight; got.code != 200 || got.body != "slow" {
		t.Errorf("request in flight across removal and take-over: %d %q", got.code, got.body)
	}
	got := do(t, idle.Client, "GET", url, "x", nil)
	if got.code != 200 || got.upstream != "app" || got.close || idle.dials.Load() != 1 {
		t.Errorf("idle connection after the take-over: %d %q close=%v, %d dials; want 200 from the new config on the same connection, kept open",
			got.code, got.upstream, got.close, idle.dials.Load())
	}

	// Removed again later, it drains again.
	mustApply(t, d, withdrawal(t, inAddr, app, false))
	if n := gaugeValue(t, reg, "weft_proxy_listeners_draining"); n != 1 {
		t.Errorf("weft_proxy_listeners_draining = %v after the second removal, want 1", n)
	}
	if got := do(t, idle.Client, "GET", url, "x", nil); got.code != 200 || !got.close {
		t.Errorf("second drain: %d close=%v", got.code, got.close)
	}
}

// TestNewListenerOnDrainingAddress: a listener under another name that
// needs the address of a draining one gets it (the drain ends early), and
// the request in flight on the old listener still finishes.
func TestNewListenerOnDrainingAddress(t *testing.T) {
	started := make(chan struct{})
	slow := newSlowUpstream(t, started, 300*time.Millisecond)
	app := echoUpstream(t, "app", false)
	inAddr := freeAddr(t)
	d := newDrainDataplane(t, longDrain, nil)
	mustApply(t, d, withdrawal(t, inAddr, slow, true))
	inflight := make(chan result, 1)
	go func() { inflight <- do(t, client(t, false), "GET", "http://"+inAddr+"/", "x", nil) }()
	<-started

	mustApply(t, d, withdrawal(t, inAddr, app, false))
	renamed := withdrawal(t, inAddr, app, true)
	l := renamed.Listeners["in"]
	delete(renamed.Listeners, "in")
	l.Name = "in-renamed"
	renamed.Listeners[l.Name] = l
	if err := d.Apply(renamed); err != nil {
		t.Fatalf("new listener on a draining listener's address: %v", err)
	}
	if got := do(t, client(t, false), "GET", "http://"+inAddr+"/", "x", nil); got.code != 200 || got.upstream != "app" || got.close {
		t.Errorf("new listener: %d %q close=%v", got.code, got.upstream, got.close)
	}
	if got := <-inflight; got.code != 200 || got.body != "slow" {
		t.Errorf("request in flight on the cut drain: %d %q", got.code, got.body)
	}
}

// TestCloseDuringDrainIsPrompt: shutting the proxy down does not wait for
// a drain period to run out; requests in flight on a draining listener
// still finish, and every goroutine ends (goleak, TestMain).
func TestCloseDuringDrainIsPrompt(t *testing.T) {
	started := make(chan struct{})
	slow := newSlowUpstream(t, started, 300*time.Millisecond)
	inAddr := freeAddr(t)
	d, err := New(Options{ListenerDrain: longDrain})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, d, withdrawal(t, inAddr, slow, true))
	inflight := make(chan result, 1)
	go func() { inflight <- do(t, client(t, false), "GET", "http://"+inAddr+"/", "x", nil) }()
	<-started
	mustApply(t, d, withdrawal(t, inAddr, slow, false))

	// Were Close to wait for the one-minute drain, it would give up after
	// 10 s and report it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close during a drain: %v", err)
	}
	if got := <-inflight; got.code != 200 || got.body != "slow" {
		t.Errorf("request in flight on the draining listener: %d %q", got.code, got.body)
	}
	if _, err := net.DialTimeout("tcp", inAddr, time.Second); err == nil {
		t.Errorf("draining listener still accepting after Close")
	}
}

// h2Raw is an HTTP/2 (h2c, prior knowledge) client connection driven frame
// by frame, so a test can see the GOAWAY the server sends.
type h2Raw struct {
	conn net.Conn
	fr   *http2.Framer
	dec  *hpack.Decoder
}

func dialH2(t *testing.T, addr string) *h2Raw {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2Raw{conn: conn, fr: http2.NewFramer(conn, conn), dec: hpack.NewDecoder(4096, nil)}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// get sends GET / on stream id and reads until the response has ended
// and, with wantGoaway, until a GOAWAY arrives too. It returns the :status
// and the GOAWAY seen, or nil.
func (h *h2Raw) get(t *testing.T, id uint32, wantGoaway bool) (status string, goaway *http2.GoAwayFrame) {
	t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer h.conn.SetReadDeadline(time.Time{})
	ended := false
	for !ended || (wantGoaway && goaway == nil) {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("h2 stream %d: reading: %v (status %q, ended %v, GOAWAY %v so far)", id, err, status, ended, goaway)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.fr.WritePing(true, f.Data)
			}
		case *http2.HeadersFrame:
			if f.StreamID == id {
				fields, err := h.dec.DecodeFull(f.HeaderBlockFragment())
				if err != nil {
					t.Fatal(err)
				}
				for _, hf := range fields {
					if hf.Name == ":status" {
						status = hf.Value
					}
				}
				ended = ended || f.StreamEnded()
			}
		case *http2.DataFrame:
			ended = ended || (f.StreamID == id && f.StreamEnded())
		case *http2.GoAwayFrame:
			g := *f // f is only valid until the next ReadFrame
			goaway = &g
		case *http2.RSTStreamFrame:
			t.Fatalf("h2 stream %d reset: %v", f.StreamID, f.ErrCode)
		}
	}
	return status, goaway
}

// waitClosed reads until the server closes the connection.
func (h *h2Raw) waitClosed(t *testing.T) {
	t.Helper()
	h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := h.fr.ReadFrame(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("h2 connection still open 5 s after GOAWAY")
			}
			return
		}
	}
}
