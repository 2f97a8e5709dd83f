package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/xds/contract"
)

// resetUpstream accepts connections, reads a request head and closes.
func resetUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			http.ReadRequest(bufio.NewReader(c))
			c.Close()
		}
	})
	return ln.Addr().String()
}

// closedPort returns a loopback address that refuses connections: a TCP
// socket bound there but not listening. It stays bound until the test
// ends, so no other test can start listening on the port meanwhile (a
// freed port can be taken by a concurrent test's server, which then
// answers instead of refusing).
func closedPort(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func TestFailureResponses(t *testing.T) {
	res := resourcesAny(
		edsCluster(t, "empty", false, ""), cla("empty"),
		edsCluster(t, "unhealthy", false, ""), cla("unhealthy", ep{Addr: "127.0.0.1:1", Health: core.HealthStatus_UNHEALTHY}),
		edsCluster(t, "refused", false, ""), cla("refused", ep{Addr: closedPort(t)}),
		edsCluster(t, "reset", false, ""), cla("reset", ep{Addr: resetUpstream(t)}),
		routeConfig("r",
			vhost("empty", []string{"empty"}, toCluster("", prefixMatch("/"), "empty")),
			vhost("unhealthy", []string{"unhealthy"}, toCluster("", prefixMatch("/"), "unhealthy")),
			vhost("refused", []string{"refused"}, toCluster("", prefixMatch("/"), "refused")),
			vhost("reset", []string{"reset"}, toCluster("", prefixMatch("/"), "reset")),
			vhost("nc", []string{"nc"}, toCluster("", prefixMatch("/"), "does-not-exist")),
			vhost("nr", []string{"nr"}, toCluster("", prefixMatch("/only"), "empty")),
		),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	mustApply(t, d, res)
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	for _, tc := range []struct {
		host, flags string
		code        int
		body        string
	}{
		{"nohost", "NR", 404, ""},
		{"nr", "NR", 404, ""},
		{"nc", "NC", 503, ""},
		{"empty", "UH", 503, "no healthy upstream"},
		{"unhealthy", "UH", 503, "no healthy upstream"},
		{"refused", "UF", 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure"},
		{"reset", "UC", 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			got := do(t, c, "GET", base+"/", tc.host, nil)
			if got.code != tc.code || got.body != tc.body {
				t.Errorf("got %d %q, want %d %q", got.code, got.body, tc.code, tc.body)
			}
			if n := counterValue(t, reg, map[string]string{"response_flags": tc.flags, "response_code": itoa(tc.code)}); n < 1 {
				t.Errorf("no istio_requests_total with response_flags=%s", tc.flags)
			}
		})
	}
}

func TestHTTP1AndH2C(t *testing.T) {
	res := resourcesAny(
		edsCluster(t, "h1", false, ""), cla("h1", ep{Addr: echoUpstream(t, "h1", false)}),
		edsCluster(t, "h2", true, ""), cla("h2", ep{Addr: echoUpstream(t, "h2", true)}),
		routeConfig("r",
			vhost("h1", []string{"h1"}, toCluster("", prefixMatch("/"), "h1")),
			vhost("h2", []string{"h2"}, toCluster("", prefixMatch("/"), "h2"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, res)
	base := "http://" + d.ListenerAddr("out").String()
	for _, down := range []bool{false, true} {
		c := client(t, down)
		for _, up := range []string{"h1", "h2"} {
			hop := map[string]string{"Connection": "X-Hop", "X-Hop": "secret"}
			if down { // HTTP/2 has no Connection header
				hop = nil
			}
			got := do(t, c, "GET", base+"/path?q=1", up, hop)
			wantProto := "HTTP/1.1"
			if up == "h2" {
				wantProto = "HTTP/2.0"
			}
			if got.code != 200 || got.header.Get("X-Seen-Proto") != wantProto {
				t.Errorf("downstream h2c=%v upstream %s: code %d proto %q", down, up, got.code, got.header.Get("X-Seen-Proto"))
			}
			if got.header.Get("X-Seen-Host") != up || got.header.Get("X-Seen-Path") != "/path?q=1" {
				t.Errorf("host/path not kept: %q %q", got.header.Get("X-Seen-Host"), got.header.Get("X-Seen-Path"))
			}
			if got.header.Get("X-Seen-Connection") != "" {
				t.Errorf("hop-by-hop headers forwarded: %q", got.header.Get("X-Seen-Connection"))
			}
			if len(got.header.Get("X-Seen-Request-Id")) != 36 {
				t.Errorf("x-request-id = %q", got.header.Get("X-Seen-Request-Id"))
			}
		}
	}
	// Absolute-form request, as an HTTP_PROXY client sends it.
	proxyURL := d.ListenerAddr("out").String()
	tr := &http.Transport{Proxy: func(*http.Request) (*neturl, error) { return parseURL("http://" + proxyURL) }}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://h1/abs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Upstream") != "h1" || resp.Header.Get("X-Seen-Path") != "/abs" {
		t.Errorf("HTTP_PROXY request: upstream %q path %q", resp.Header.Get("X-Upstream"), resp.Header.Get("X-Seen-Path"))
	}
}

func TestNACKKeepsOldConfig(t *testing.T) {
	a := echoUpstream(t, "a", false)
	good := resourcesAny(edsCluster(t, "a", false, ""), cla("a", ep{Addr: a}),
		routeConfig(contract.RouteHTTPProxy, vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "a"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil))
	d := newDataplane(t, contract.Identity{}, nil)
	if d.Ready() {
		t.Fatal("ready before the first Apply")
	}
	mustApply(t, d, good)
	if !d.Ready() {
		t.Fatal("not ready after Apply")
	}
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)

	badRoute := resourcesAny(edsCluster(t, "a", false, ""), cla("a", ep{Addr: a}),
		routeConfig(contract.RouteHTTPProxy, vhost("v0", []string{"x"}), vhost("v1", []string{"y"}), vhost("v2", []string{"*"},
			&route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "[bad"}}},
				Action: toCluster("", nil, "a").Action})),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil))
	missingRDS := resourcesAny(edsCluster(t, "a", false, ""), cla("a", ep{Addr: a}),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil))
	badCluster := resourcesAny(edsCluster(t, "a", false, ""))
	badCluster.Clusters["a"].LbPolicy = 6 // CLUSTER_PROVIDED
	inUse := closedPortListener(t)
	bindFail := resourcesAny(edsCluster(t, "a", false, ""), cla("a", ep{Addr: a}),
		routeConfig(contract.RouteHTTPProxy, vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "a"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil),
		withAddr(httpListener(t, "taken", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil), inUse))
	for _, tc := range []struct {
		name string
		res  *xdsResources
		want string
	}{
		{"bad regex", badRoute, `route "http_proxy": virtual_hosts[2] (v2): routes[0]: match: safe_regex`},
		{"missing rds", missingRDS, `listener "out": filter_chains[0].filters[0].typed_config.rds: route configuration "http_proxy" not found`},
		{"lb policy", badCluster, `cluster "a": lb_policy: CLUSTER_PROVIDED is unsupported`},
		{"bind", bindFail, `listener "taken": bind ` + inUse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.Apply(tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply err = %v, want it to contain %q", err, tc.want)
			}
			if got := do(t, c, "GET", base+"/", "anything", nil); got.code != 200 || got.upstream != "a" {
				t.Errorf("old config not serving after NACK: %d %q", got.code, got.upstream)
			}
			if d.ListenerAddr("taken") != nil {
				t.Errorf("listener of a NACKed config is bound")
			}
		})
	}
}

func closedPortListener(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func withAddr(l *listenerT, addr string) *listenerT {
	host, port, _ := net.SplitHostPort(addr)
	p := 0
	for _, ch := range port {
		p = p*10 + int(ch-'0')
	}
	l.Address = sockAddr(host, uint32(p))
	return l
}

func TestRDSOnlyUpdate(t *testing.T) {
	a, b := echoUpstream(t, "a", false), echoUpstream(t, "b", false)
	mk := func(to string) *xdsResources {
		return resourcesAny(edsCluster(t, "a", false, ""), cla("a", ep{Addr: a}), edsCluster(t, "b", false, ""), cla("b", ep{Addr: b}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), to))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, mk("a"))
	addr := d.ListenerAddr("out").String()
	bl := d.bound["out"]

	// One keep-alive connection across the update proves the socket stayed.
	var conns int
	var mu sync.Mutex
	tr := &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
		mu.Lock()
		conns++
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	if got := do(t, c, "GET", "http://"+addr+"/", "x", nil).upstream; got != "a" {
		t.Fatalf("before: %q", got)
	}
	mustApply(t, d, mk("b"))
	if d.ListenerAddr("out").String() != addr || d.bound["out"] != bl {
		t.Fatalf("listener rebound on an RDS-only update")
	}
	if got := do(t, c, "GET", "http://"+addr+"/", "x", nil).upstream; got != "b" {
		t.Errorf("after: %q, want b", got)
	}
	if conns != 1 {
		t.Errorf("client dialled %d times, want 1 (connection kept)", conns)
	}
}

func TestUnchangedClusterKeepsTransport(t *testing.T) {
	a, b := echoUpstream(t, "a", false), echoUpstream(t, "b", false)
	mk := func(addr string, timeout time.Duration) *xdsResources {
		c := edsCluster(t, "svc", false, "")
		c.ConnectTimeout = durationpb.New(timeout)
		return resourcesAny(c, cla("svc", ep{Addr: addr}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "svc"))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, mk(a, time.Second))
	first := d.rt.Load().clusters["svc"]

	mustApply(t, d, mk(a, time.Second))
	if got := d.rt.Load().clusters["svc"]; !got.SharesState(first) {
		t.Errorf("identical update replaced the cluster's pool")
	}
	mustApply(t, d, mk(b, time.Second))
	if got := d.rt.Load().clusters["svc"]; !got.SharesState(first) {
		t.Errorf("endpoint-only update replaced the cluster's pool")
	}
	c := client(t, false)
	if got := do(t, c, "GET", "http://"+d.ListenerAddr("out").String()+"/", "x", nil).upstream; got != "b" {
		t.Errorf("new endpoint not used: %q", got)
	}
	mustApply(t, d, mk(b, 2*time.Second))
	if d.rt.Load().clusters["svc"].SharesState(first) {
		t.Errorf("changed cluster kept its transport")
	}
}

func TestCloseLetsInFlightFinish(t *testing.T) {
	started := make(chan struct{})
	slow := newSlowUpstream(t, started, 300*time.Millisecond)
	res := resourcesAny(edsCluster(t, "slow", false, ""), cla("slow", ep{Addr: slow}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "slow"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, d, res)
	c := client(t, false)
	addr := d.ListenerAddr("out").String()
	done := make(chan result, 1)
	go func() { done <- do(t, c, "GET", "http://"+addr+"/", "x", nil) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := <-done; got.code != 200 || got.body != "slow" {
		t.Errorf("in-flight request: %d %q", got.code, got.body)
	}
	if err := d.Apply(res); err == nil {
		t.Errorf("Apply after Close succeeded")
	}
}

func newSlowUpstream(t *testing.T, started chan<- struct{}, delay time.Duration) string {
	var once sync.Once
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(started) })
		time.Sleep(delay)
		io.WriteString(w, "slow")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.Serve(ln) })
	t.Cleanup(func() { s.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestListenerReplacedAndRemoved(t *testing.T) {
	a := echoUpstream(t, "a", false)
	base := []any{edsCluster(t, "a", false, ""), cla("a", ep{Addr: a}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "a")))}
	d := newDrainDataplane(t, 100*time.Millisecond, nil)
	mustApply(t, d, resourcesAny(append(base, httpListener(t, "one", core.TrafficDirection_OUTBOUND, "r", nil))...))
	oneAddr := d.ListenerAddr("one").String()
	mustApply(t, d, resourcesAny(append(base, httpListener(t, "two", core.TrafficDirection_OUTBOUND, "r", nil))...))
	if d.ListenerAddr("one") != nil || d.ListenerAddr("two") == nil {
		t.Fatalf("listeners after update: one=%v two=%v", d.ListenerAddr("one"), d.ListenerAddr("two"))
	}
	c := client(t, false)
	if got := do(t, c, "GET", "http://"+d.ListenerAddr("two").String()+"/", "x", nil); got.upstream != "a" {
		t.Errorf("new listener: %+v", got)
	}
	deadline := time.Now().Add(10 * time.Second) // it drains for 100 ms first
	for {
		conn, err := net.Dial("tcp", oneAddr)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("removed listener still accepting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigDump(t *testing.T) {
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(edsCluster(t, "a", true, "reviews.default.svc.cluster.local"), cla("a", ep{Addr: "127.0.0.1:9"}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "a"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	b, err := d.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Listeners []map[string]any  `json:"listeners"`
		Routes    []map[string]any  `json:"routes"`
		Clusters  []map[string]any  `json:"clusters"`
		Endpoints []map[string]any  `json:"endpoints"`
		Versions  map[string]string `json:"versions"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	// Written as it is rendered, in json.MarshalIndent's layout.
	var compact, indented bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatal(err)
	}
	if err := json.Indent(&indented, compact.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(indented.Bytes(), b) {
		t.Errorf("dump not in MarshalIndent's layout:\n%s\nwant\n%s", b, indented.Bytes())
	}
	var empty bytes.Buffer
	if err := newDataplane(t, contract.Identity{}, nil).WriteConfigDump(&empty); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"listeners\": [],\n  \"routes\": [],\n  \"clusters\": [],\n  \"endpoints\": [],\n  \"versions\": {}\n}"; empty.String() != want {
		t.Errorf("dump of nothing applied:\n%s\nwant\n%s", empty.String(), want)
	}
	if len(dump.Listeners) != 1 || dump.Listeners[0]["name"] != "out" || len(dump.Routes) != 1 || len(dump.Clusters) != 1 ||
		len(dump.Endpoints) != 1 || dump.Versions["test"] != "1" {
		t.Errorf("unexpected dump:\n%s", b)
	}
	if !strings.Contains(string(b), "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager") {
		t.Errorf("typed config not rendered:\n%s", b)
	}
}
