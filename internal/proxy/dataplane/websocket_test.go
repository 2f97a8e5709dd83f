package dataplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// wsUpstream is a WebSocket echo server on loopback: /ws echoes every
// message; /teapot answers an upgrade with 418 and a body. It is closed
// (its hijacked connections too) at the end of the test.
func wsUpstream(t testing.TB) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/teapot" {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "no upgrade here")
			return
		}
		c, err := up.Upgrade(w, r, http.Header{"X-Upstream": {"ws"}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	srv.Start()
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	return srv.Listener.Addr().String()
}

// wsListener is an outbound HTTP listener whose connection manager
// routes everything to cluster "ws" with route action ra (nil: no
// options) and is then changed by mod (may be nil).
func wsListener(t testing.TB, ra *route.RouteAction, mod func(*hcm.HttpConnectionManager)) *listener.Listener {
	if ra == nil {
		ra = &route.RouteAction{}
	}
	ra.ClusterSpecifier = &route.RouteAction_Cluster{Cluster: "ws"}
	rc := routeConfig("r", vhost("v", []string{"*"}, &route.Route{Name: "ws", Match: prefixMatch("/"), Action: &route.Route_Route{Route: ra}}))
	m := &hcm.HttpConnectionManager{
		StatPrefix:     "out",
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters: []*hcm.HttpFilter{{Name: proxytest.RouterFilterName,
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
		UpgradeConfigs:    []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "WebSocket"}},
		StreamIdleTimeout: durationpb.New(0),
	}
	if mod != nil {
		mod(m)
	}
	return &listener.Listener{
		Name: "out", Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: proxytest.HCMFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}}},
	}
}

// wsProxy starts a data plane with l in front of upstream addr and
// returns it and the listener's address.
func wsProxy(t *testing.T, addr string, l *listener.Listener) (*Dataplane, string, *prometheus.Registry) {
	t.Helper()
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "ws", addr), l))
	return d, d.ListenerAddr("out").String(), reg
}

func wsDial(t *testing.T, proxy, path string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+proxy+path, http.Header{"Host": {"svc"}})
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

func TestWebSocketEcho(t *testing.T) {
	_, proxy, reg := wsProxy(t, wsUpstream(t), wsListener(t, nil, nil))
	c, resp, err := wsDial(t, proxy, "/ws")
	if err != nil {
		t.Fatalf("dial through the proxy: %v (response %v)", err, resp)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("X-Upstream") != "ws" {
		t.Fatalf("handshake = %d %v, want 101 with the upstream's headers", resp.StatusCode, resp.Header)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Many messages, pipelined: each echoed, in order.
	const n = 200
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := range n {
			if c.WriteMessage(websocket.TextMessage, []byte("message "+strconv.Itoa(i))) != nil {
				return
			}
		}
	}()
	for i := range n {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := "message " + strconv.Itoa(i); string(msg) != want {
			t.Fatalf("message %d = %q, want %q", i, msg, want)
		}
	}
	<-wrote
	// A large binary message, many TCP segments each way.
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB
	if err := c.WriteMessage(websocket.BinaryMessage, big); err != nil {
		t.Fatal(err)
	}
	if typ, msg, err := c.ReadMessage(); err != nil || typ != websocket.BinaryMessage || !bytes.Equal(msg, big) {
		t.Fatalf("large message: type %d, %d bytes, err %v; want the 4 MiB sent back", typ, len(msg), err)
	}
	// Half-close: the client sends a last message and closes its side of
	// the TCP connection; the end reaches the upstream, and the echo of
	// the last message still comes back before the upstream closes.
	if err := c.WriteMessage(websocket.TextMessage, []byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := c.UnderlyingConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "last" {
		t.Fatalf("after half-close: %q, %v; want the echo of \"last\"", msg, err)
	}
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("the tunnel stayed open after both sides closed")
	}
	// One request, code 101, recorded when the tunnel ended.
	waitFor(t, func() bool {
		return counterValue(t, reg, map[string]string{"response_code": "101", "reporter": "source"}) == 1
	})
}

func TestWebSocketRefused(t *testing.T) {
	addr := wsUpstream(t)
	for _, tc := range []struct {
		name string
		ra   *route.RouteAction
		mod  func(*hcm.HttpConnectionManager)
	}{
		{name: "disabled on the route", ra: &route.RouteAction{UpgradeConfigs: []*route.RouteAction_UpgradeConfig{
			{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}}},
		{name: "not in upgrade_configs", mod: func(m *hcm.HttpConnectionManager) { m.UpgradeConfigs = nil }},
		{name: "disabled in the connection manager", mod: func(m *hcm.HttpConnectionManager) {
			m.UpgradeConfigs[0].Enabled = wrapperspb.Bool(false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, proxy, _ := wsProxy(t, addr, wsListener(t, tc.ra, tc.mod))
			_, resp, err := wsDial(t, proxy, "/ws")
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial: %v, response %v; want 403", err, resp)
			}
			if !resp.Close {
				t.Error("a refused upgrade kept its connection open")
			}
		})
	}
	// A route that enables what the connection manager does not list.
	t.Run("enabled on the route only", func(t *testing.T) {
		ra := &route.RouteAction{UpgradeConfigs: []*route.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}}
		_, proxy, _ := wsProxy(t, addr, wsListener(t, ra, func(m *hcm.HttpConnectionManager) { m.UpgradeConfigs = nil }))
		c, resp, err := wsDial(t, proxy, "/ws")
		if err != nil {
			t.Fatalf("dial: %v, response %v; want 101", err, resp)
		}
		c.Close()
	})
}

func TestWebSocketUpstreamRefuses(t *testing.T) {
	_, proxy, _ := wsProxy(t, wsUpstream(t), wsListener(t, nil, nil))
	_, resp, err := wsDial(t, proxy, "/teapot")
	if err == nil || resp == nil || resp.StatusCode != http.StatusTeapot {
		t.Fatalf("dial: %v, response %v; want the upstream's 418", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "no upgrade here" {
		t.Errorf("body = %q, want the upstream's", body)
	}
}

func TestWebSocketTimeouts(t *testing.T) {
	addr := wsUpstream(t)
	t.Run("stream idle timeout closes a silent tunnel", func(t *testing.T) {
		_, proxy, _ := wsProxy(t, addr, wsListener(t, nil, func(m *hcm.HttpConnectionManager) {
			m.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
		}))
		c, _, err := wsDial(t, proxy, "/ws")
		if err != nil {
			t.Fatal(err)
		}
		// Traffic keeps it open past the timeout...
		for range 4 {
			time.Sleep(150 * time.Millisecond)
			if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatalf("an active tunnel was closed: %v", err)
			}
		}
		// ...silence closes it.
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err = c.ReadMessage()
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("read = %v, want the proxy to close the idle tunnel", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("closed after %v", d)
		}
	})
	t.Run("route timeout does not cut an open tunnel", func(t *testing.T) {
		ra := &route.RouteAction{Timeout: durationpb.New(200 * time.Millisecond)}
		_, proxy, _ := wsProxy(t, addr, wsListener(t, ra, nil))
		c, _, err := wsDial(t, proxy, "/ws")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte("still there")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still there" {
			t.Fatalf("after the route timeout: %q, %v", msg, err)
		}
	})
	t.Run("route idle_timeout overrides the connection manager's", func(t *testing.T) {
		ra := &route.RouteAction{IdleTimeout: durationpb.New(200 * time.Millisecond)}
		_, proxy, _ := wsProxy(t, addr, wsListener(t, ra, nil)) // stream_idle_timeout 0: none
		c, _, err := wsDial(t, proxy, "/ws")
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("read = %v, want the proxy to close the idle tunnel", err)
		}
	})
}

func TestWebSocketShutdown(t *testing.T) {
	d, proxy, _ := wsProxy(t, wsUpstream(t), wsListener(t, nil, nil))
	c, _, err := wsDial(t, proxy, "/ws")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close with an open WebSocket: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read after shutdown = %v, want the tunnel closed", err)
	}
	// goleak (TestMain) checks that the tunnel's goroutines ended.
}

// TestWebSocketAccessLog: a WebSocket is logged once, when it ends, with
// code 101, the bytes each way and its whole duration; a refused upgrade
// is logged as a 403 with details upgrade_failed.
func TestWebSocketAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ws.log")
	format := jsonFormat(t, map[string]any{"code": "%RESPONSE_CODE%", "details": "%RESPONSE_CODE_DETAILS%",
		"rx": "%BYTES_RECEIVED%", "tx": "%BYTES_SENT%", "ms": "%DURATION%", "path": "%REQ(:PATH)%"})
	ra := &route.RouteAction{}
	l := withAccessLogs(t, wsListener(t, ra, nil), fileLog(t, path, format, nil))
	addr := wsUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "ws", addr), l))
	proxy := d.ListenerAddr("out").String()

	c, _, err := wsDial(t, proxy, "/ws")
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("x"), 1000)
	for range 3 {
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // a duration the log must show
	c.Close()
	waitFor(t, func() bool { return counterValue(t, reg, map[string]string{"response_code": "101"}) == 1 })

	// The same listener with the upgrade disabled on its route.
	ra.UpgradeConfigs = []*route.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}
	mustApply(t, d, resourcesAny(staticCluster(t, "ws", addr), withAccessLogs(t, wsListener(t, ra, nil), fileLog(t, path, format, nil))))
	if _, resp, err := wsDial(t, proxy, "/ws"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial with the upgrade disabled: %v %v", resp, err)
	}
	if err := d.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("log lines:\n%s", b)
	}
	var ws, refused map[string]any
	if json.Unmarshal([]byte(lines[0]), &ws) != nil || json.Unmarshal([]byte(lines[1]), &refused) != nil {
		t.Fatalf("log lines:\n%s", b)
	}
	// Each message is 1000 bytes plus a 4-byte frame header, and the
	// client's are masked (4 more bytes).
	if ws["code"] != float64(101) || ws["details"] != "via_upstream" || ws["rx"].(float64) < 3*1008 || ws["tx"].(float64) < 3*1004 ||
		ws["ms"].(float64) < 100 || ws["path"] != "/ws" {
		t.Errorf("WebSocket logged as %s", lines[0])
	}
	if refused["code"] != float64(403) || refused["details"] != "upgrade_failed" {
		t.Errorf("refused upgrade logged as %s", lines[1])
	}
}

// TestUpgradeKeepsFramingCheck: the framing check (h1server's) stops at a
// request that may switch protocols; such a request that is refused ends
// its connection, so nothing after it goes unchecked. An h2c upgrade is
// served as a plain request and the connection stays checked.
func TestUpgradeKeepsFramingCheck(t *testing.T) {
	ra := &route.RouteAction{UpgradeConfigs: []*route.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}}
	_, proxy, _ := wsProxy(t, echoUpstream(t, "app", false), wsListener(t, ra, nil))
	exchange := func(t *testing.T, reqs string) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", proxy, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, reqs); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c) // until the proxy closes
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, b)
		}
		return string(b)
	}
	bad := "GET /second HTTP/1.1\r\nHost: svc\r\nX: a\r\n b\r\n\r\n" // obsolete line folding: refused when checked
	t.Run("refused upgrade", func(t *testing.T) {
		got := exchange(t, "GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"+bad)
		if !strings.HasPrefix(got, "HTTP/1.1 403 ") || strings.Count(got, "HTTP/1.1 ") != 1 || !strings.Contains(got, "Connection: close") {
			t.Errorf("got %q; want one 403 and the connection closed", got)
		}
	})
	t.Run("h2c upgrade", func(t *testing.T) {
		got := exchange(t, "GET /first HTTP/1.1\r\nHost: svc\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
			"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"+bad)
		if !strings.HasPrefix(got, "HTTP/1.1 200 ") || !strings.Contains(got, "HTTP/1.1 400 ") {
			t.Errorf("got %q; want a 200, then a 400 for the malformed request", got)
		}
	})
}

// TestWebSocketFault: fault injection applies to the upgrade request: an
// abort answers instead of the upgrade, a delay holds it back before it
// goes upstream.
func TestWebSocketFault(t *testing.T) {
	addr := wsUpstream(t)
	all := &typev3.FractionalPercent{Numerator: 100}
	withFault := func(f *faultv3.HTTPFault) func(*hcm.HttpConnectionManager) {
		return func(m *hcm.HttpConnectionManager) {
			m.HttpFilters = append([]*hcm.HttpFilter{{Name: faultFilterName,
				ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &faultv3.HTTPFault{})}}}, m.HttpFilters...)
			m.GetRouteConfig().VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: mustAny(t, f)}
		}
	}
	t.Run("abort", func(t *testing.T) {
		_, proxy, _ := wsProxy(t, addr, wsListener(t, nil, withFault(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: all}})))
		if _, resp, err := wsDial(t, proxy, "/ws"); err == nil || resp == nil || resp.StatusCode != http.StatusTeapot {
			t.Fatalf("dial: %v %v; want the fault's 418", resp, err)
		}
	})
	t.Run("delay", func(t *testing.T) {
		const delay = 300 * time.Millisecond
		_, proxy, _ := wsProxy(t, addr, wsListener(t, nil, withFault(&faultv3.HTTPFault{Delay: &faultcommon.FaultDelay{
			FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(delay)}, Percentage: all}})))
		start := time.Now()
		c, _, err := wsDial(t, proxy, "/ws")
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < delay {
			t.Errorf("handshake took %v, want at least the %v delay", d, delay)
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte("after the delay")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "after the delay" {
			t.Fatalf("echo: %q %v", msg, err)
		}
	})
}

// TestWebSocketCircuitBreaker: an open WebSocket is a request in flight
// for the cluster's circuit breaker: with max_requests 1 a second one
// overflows (503 UO) until the first closes.
func TestWebSocketCircuitBreaker(t *testing.T) {
	c := staticCluster(t, "ws", wsUpstream(t))
	c.CircuitBreakers = thresholds(100, 100, 1, 3).CircuitBreakers
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	mustApply(t, d, resourcesAny(c, wsListener(t, nil, nil)))
	proxy := d.ListenerAddr("out").String()
	first, _, err := wsDial(t, proxy, "/ws")
	if err != nil {
		t.Fatal(err)
	}
	if _, resp, err := wsDial(t, proxy, "/ws"); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second WebSocket: %v %v; want 503 while the first is open", resp, err)
	}
	first.Close()
	waitFor(t, func() bool { return counterValue(t, reg, map[string]string{"response_code": "101"}) == 1 })
	third, _, err := wsDial(t, proxy, "/ws")
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	third.Close()
	if n := counterValue(t, reg, map[string]string{"response_code": "503", "response_flags": "UO"}); n != 1 {
		t.Errorf("503 UO counted %v times, want 1", n)
	}
}

// TestWebSocketListenerDrain: a WebSocket on a listener an update removes
// keeps working while the listener drains, and is closed when the drain
// ends.
func TestWebSocketListenerDrain(t *testing.T) {
	const drain = 300 * time.Millisecond
	addr := wsUpstream(t)
	d := newDrainDataplane(t, drain, nil)
	mustApply(t, d, resourcesAny(staticCluster(t, "ws", addr), wsListener(t, nil, nil)))
	c, _, err := wsDial(t, d.ListenerAddr("out").String(), "/ws")
	if err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	mustApply(t, d, resourcesAny(staticCluster(t, "ws", addr)))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("draining")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "draining" {
		t.Fatalf("while the listener drains: %q %v", msg, err)
	}
	if _, _, err := c.ReadMessage(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read = %v, want the WebSocket closed at the end of the drain", err)
	}
	if d := time.Since(removed); d < drain {
		t.Errorf("closed %v after the listener was removed, before its %v drain ended", d, drain)
	}
}

// TestUpgradeConfigRejected: connection manager upgrade settings the
// proxy cannot carry out are refused (NACK) naming the field, and the
// last good configuration keeps serving.
func TestUpgradeConfigRejected(t *testing.T) {
	addr := wsUpstream(t)
	d, proxy, _ := wsProxy(t, addr, wsListener(t, nil, nil))
	for _, tc := range []struct {
		name string
		mod  func(*hcm.HttpConnectionManager)
		want string
	}{
		{"custom filters", func(m *hcm.HttpConnectionManager) { m.UpgradeConfigs[0].Filters = m.HttpFilters },
			"upgrade_configs[0].filters: not supported"},
		{"CONNECT", func(m *hcm.HttpConnectionManager) {
			m.UpgradeConfigs = append(m.UpgradeConfigs, &hcm.HttpConnectionManager_UpgradeConfig{UpgradeType: "CONNECT"})
		}, `upgrade_configs[1].upgrade_type: "CONNECT" is not supported`},
		{"empty type", func(m *hcm.HttpConnectionManager) { m.UpgradeConfigs[0].UpgradeType = "" }, "upgrade_configs[0].upgrade_type: empty"},
		{"stream_idle_timeout", func(m *hcm.HttpConnectionManager) { m.StreamIdleTimeout = &durationpb.Duration{Seconds: -1} },
			"stream_idle_timeout: invalid duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.Apply(resourcesAny(staticCluster(t, "ws", addr), wsListener(t, nil, tc.mod)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply: %v; want …%s", err, tc.want)
			}
		})
	}
	c, _, err := wsDial(t, proxy, "/ws")
	if err != nil {
		t.Fatalf("after the refused configs: %v", err)
	}
	c.Close()
}
