package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

const mirrorSubsets = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s, namespace: default}
spec:
  host: %[1]s
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// recorder is a mirror target without a sidecar, registered in the mesh as
// service <name>: it records the Host/:authority and body of every request
// (HTTP/1.1, h2c and gRPC) and answers 200 (gRPC OK).
type recorder struct {
	mu     sync.Mutex
	hosts  map[string]int
	bodies int // requests that carried a body
}

func (rc *recorder) count(host string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.hosts[host]
}

func (rc *recorder) withBody() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.bodies
}

func (rc *recorder) seen() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return fmt.Sprint(rc.hosts)
}

// sinkService registers service name (port 8080, protocol) with one
// endpoint on a fresh loopback address and returns that address; nothing
// listens there yet.
func sinkService(m *Mesh, name, protocol string) string {
	m.t.Helper()
	ip := nextIP()
	port, err := localmesh.FreePort(ip)
	if err != nil {
		m.t.Fatal(err)
	}
	b := Backend{Name: name + "-0", Version: "v1", IP: ip, Port: uint32(port), Plain: true}
	m.WriteConfig(name+"-services.yaml", ServiceEntryYAML(name, 8080, protocol)+"---\n"+b.WorkloadEntryYAML(name))
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// startRecorder serves a recorder at addr until the test ends.
func startRecorder(t *testing.T, addr string) *recorder {
	t.Helper()
	rc := &recorder{hosts: map[string]int{}}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		rc.mu.Lock()
		rc.hosts[r.Host]++
		if n > 0 {
			rc.bodies++
		}
		rc.mu.Unlock()
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "0") // trailers-only OK
		}
		w.WriteHeader(http.StatusOK)
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return rc
}

// stallAt accepts connections at addr and never reads or answers.
func stallAt(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
}

// TestMirrorHTTP mirrors 100% of HTTP traffic for backend (routed to v1) to
// the v2 canary and to a recording sink: the canary receives every request,
// the sink sees Host "backend-shadow", the client only ever sees v1, and
// the client's source-side metrics count no shadow.
func TestMirrorHTTP(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v2")
	canary := backends[1]
	sink := startRecorder(t, sinkService(m, "recorder", "HTTP"))
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(mirrorSubsets, "backend")+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: primary-with-shadows
    route:
    - destination: {host: backend, subset: v1}
    mirrors:
    - destination: {host: backend, subset: v2}
      percentage: {value: 100}
    - destination: {host: recorder}
`)
	c := newClient()
	front := m.Client("frontend")
	Eventually(t, 10*time.Second, "mirroring in force", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, _, err := Get(ctx, c, front, "backend", "/", nil); err != nil {
			return err
		}
		if sink.count("backend-shadow") == 0 {
			return fmt.Errorf("the sink saw %s", sink.seen())
		}
		return nil
	})
	// Let the warm-up shadows land before taking the baseline.
	time.Sleep(200 * time.Millisecond)

	const n = 500
	base := canary.Echo.Requests()
	sinkBase := sink.count("backend-shadow")
	src := map[string]string{"reporter": "source", "source_workload": "frontend", "destination_version": "v2"}
	srcBase, _ := series(t, front, "istio_requests_total", src)
	dst := map[string]string{"reporter": "destination", "source_workload": "frontend", "destination_workload": canary.Opts.Name}
	dstBase, _ := series(t, canary, "istio_requests_total", dst)

	got := Tally(t, c, front, "backend", nil, n, byVersion)
	if got["v1"] != n {
		t.Fatalf("the client must see only the primary (v1): got %v", got)
	}
	// A request with a body is mirrored with its body.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+front.Outbound+"/upload", strings.NewReader(strings.Repeat("b", 64<<10)))
	req.Host = "backend"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}

	Eventually(t, 10*time.Second, "the canary receives every request", func() error {
		if d := canary.Echo.Requests() - base; d != n+1 {
			return fmt.Errorf("canary got %d of %d mirrored requests", d, n+1)
		}
		if d := sink.count("backend-shadow") - sinkBase; d != n+1 {
			return fmt.Errorf("sink got %d of %d with Host backend-shadow; saw %s", d, n+1, sink.seen())
		}
		return nil
	})
	if sink.withBody() == 0 {
		t.Errorf("the POST's shadow carried no body")
	}
	// The canary's sidecar counts a request once its response is done,
	// which can be just after the app has counted it.
	Eventually(t, 5*time.Second, "the canary's sidecar counts every shadow", func() error {
		if d, seen := series(t, canary, "istio_requests_total", dst); d-dstBase < n+1 {
			return fmt.Errorf("canary destination-side istio_requests_total grew by %v, want ≥ %d; series %v", d-dstBase, n+1, seen)
		}
		return nil
	})
	if s, _ := series(t, front, "istio_requests_total", src); s != srcBase {
		t.Errorf("client source-side istio_requests_total for v2 grew by %v: shadows are not client requests", s-srcBase)
	}
	t.Logf("%d requests: client saw v1 only; canary got %d, sink %d (Host backend-shadow)", n+1, canary.Echo.Requests()-base, sink.count("backend-shadow")-sinkBase)

	// The canary going down changes nothing for the client.
	if err := canary.StopProxy(); err != nil {
		t.Fatal(err)
	}
	if got := Tally(t, c, front, "backend", nil, 200, byVersion); got["v1"] != 200 {
		t.Fatalf("with the canary down: %v", got)
	}
}

// TestMirrorGRPC mirrors 100% of gRPC calls (unary and server streaming)
// for greeter v1 to the v2 canary with `mirror` + `mirrorPercentage`, then
// to a recording sink to check the :authority.
func TestMirrorGRPC(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("greeter", "GRPC", "v1", "v2")
	canary := backends[1]
	sink := startRecorder(t, sinkService(m, "grpc-recorder", "GRPC"))
	vs := func(mirror string) string {
		return fmt.Sprintf(mirrorSubsets, "greeter") + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter]
  http:
  - route:
    - destination: {host: greeter, subset: v1}
    mirror: ` + mirror + `
    mirrorPercentage: {value: 100}
`
	}
	m.WriteConfig("greeter-routes.yaml", vs("{host: greeter, subset: v2}"))
	front := m.Client("frontend")
	cc := GRPCClient(t, front, "greeter")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	call := func() (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		r, err := echo.Call(cctx, cc, &structpb.Struct{})
		return r.GetFields()["name"].GetStringValue(), err
	}
	Eventually(t, 10*time.Second, "gRPC mirroring in force", func() error {
		before := canary.Echo.Requests()
		if _, err := call(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
		if canary.Echo.Requests() == before {
			return fmt.Errorf("the canary got no shadow yet")
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)

	const n = 500
	base := canary.Echo.Requests()
	for i := range n {
		name, err := call()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if name != backends[0].Opts.Name {
			t.Fatalf("call %d answered by %s: the client must see only the primary", i, name)
		}
	}
	sreq, _ := structpb.NewStruct(map[string]any{"count": float64(5)})
	replies, err := echo.Stream(ctx, cc, sreq)
	if err != nil || len(replies) != 5 || replies[0].GetFields()["name"].GetStringValue() != backends[0].Opts.Name {
		t.Fatalf("server stream through the mirroring route: %d replies, err %v", len(replies), err)
	}
	Eventually(t, 10*time.Second, "the canary receives every call", func() error {
		if d := canary.Echo.Requests() - base; d != n+1 {
			return fmt.Errorf("canary got %d of %d mirrored calls", d, n+1)
		}
		return nil
	})
	t.Logf("%d gRPC calls (and a stream): client saw %s only; canary got every one", n, backends[0].Opts.Name)

	m.WriteConfig("greeter-routes.yaml", vs("{host: grpc-recorder}"))
	Eventually(t, 10*time.Second, "shadows with :authority greeter-shadow carrying the message", func() error {
		if _, err := call(); err != nil {
			return err
		}
		if sink.count("greeter-shadow") == 0 || sink.withBody() == 0 {
			return fmt.Errorf("sink saw %s", sink.seen())
		}
		return nil
	})
}

// TestMirrorTargetDownOrStalled: with the mirror target refusing
// connections, or accepting them and never answering, the client's results
// and p99 latency stay those of an unmirrored route.
func TestMirrorTargetDownOrStalled(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	sinkAddr := sinkService(m, "sink", "HTTP")
	route := func(mirror bool) string {
		s := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: main
    route:
    - destination: {host: backend}
`
		if mirror {
			s += "    mirror: {host: sink}\n"
		}
		return s
	}
	m.WriteConfig("backend-routes.yaml", route(false))
	c := newClient()
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", nil, "v1")
	const sinkCluster = "outbound|8080||sink.default.svc.cluster.local"
	shadows := func(result string) float64 {
		n, _ := series(t, front, "weft_shadow_requests_total", map[string]string{"envoy_cluster_name": sinkCluster, "result": result})
		return n
	}

	const n = 300
	p99 := func(phase string) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		lat := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			code, r, err := Get(ctx, c, front, "backend", "/", nil)
			lat = append(lat, time.Since(start))
			if err != nil || code != 200 || r.Version != "v1" {
				t.Fatalf("%s: request %d: code %d version %q err %v", phase, i, code, r.Version, err)
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p := lat[n*99/100-1]
		t.Logf("%s: %d requests, all 200 from v1, p99 %v", phase, n, p)
		return p
	}
	base := p99("no mirror")
	bound := 2*base + 20*time.Millisecond

	// Down: nothing listens at the sink's address.
	m.WriteConfig("backend-routes.yaml", route(true))
	Eventually(t, 10*time.Second, "mirror to the down sink in force", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, _, err := Get(ctx, c, front, "backend", "/", nil); err != nil {
			return err
		}
		if shadows("failed") == 0 {
			return fmt.Errorf("no failed shadow counted yet")
		}
		return nil
	})
	failed := shadows("failed")
	if p := p99("mirror target down"); p > bound {
		t.Errorf("p99 with the mirror target down = %v, want ≤ %v (2× %v + 20ms)", p, bound, base)
	}
	Eventually(t, 5*time.Second, "failed shadows counted", func() error {
		if d := shadows("failed") - failed; d < n {
			return fmt.Errorf("%v of %d shadows counted as failed", d, n)
		}
		return nil
	})

	// Stalled: connections are accepted and never answered.
	stallAt(t, sinkAddr)
	Eventually(t, 10*time.Second, "shadows stalling", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, _, err := Get(ctx, c, front, "backend", "/", nil); err != nil {
			return err
		}
		if a, _ := series(t, front, "weft_shadow_requests_active", map[string]string{"envoy_cluster_name": sinkCluster}); a == 0 {
			return fmt.Errorf("no shadow in flight yet")
		}
		return nil
	})
	if p := p99("mirror target stalled"); p > bound {
		t.Errorf("p99 with the mirror target stalled = %v, want ≤ %v (2× %v + 20ms)", p, bound, base)
	}
	active, _ := series(t, front, "weft_shadow_requests_active", map[string]string{"envoy_cluster_name": sinkCluster})
	overflow := shadows("overflow")
	if active > 128 || overflow == 0 {
		t.Errorf("stalled shadows: %v in flight (limit 128), %v dropped; want the limit to hold and the rest dropped", active, overflow)
	}
	t.Logf("stalled mirror: %v shadows in flight (limit 128), %v dropped and counted", active, overflow)
}
