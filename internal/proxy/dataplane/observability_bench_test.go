package dataplane

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkObservability is the cost of tracing and access logs on the
// proxy's HTTP path, against the same path without them: one inbound hop,
// keep-alive HTTP/1.1, 1 KiB answers, over real loopback sockets. The
// client and the upstream are minimal hand-written HTTP/1.1 (one canned
// request and response on one connection each), so that little but the
// proxy's own work is measured; the spans go over OTLP/gRPC through the
// OpenTelemetry SDK's batch processor and exporter to a real OTLP/gRPC
// receiver on loopback (in this process: it decodes each batch and counts
// its spans), the access log lines to a file.
//
// Besides ns/op (wall time of one request, serial) it reports cpu-ns/op:
// the process's user+system CPU time (getrusage) per request — client,
// proxy, upstream, receiver and the garbage collector together.
//
// Cases:
//
//	plain               no tracing, no access log
//	trace0              tracing configured, 0% sampling
//	trace1, trace100    1% and 100% of requests sampled
//	logtext, logjson    an access log to a file: Istio's text format, Istio's JSON format
//	plain-hop2          as plain, the request carrying x-request-id and
//	trace1-hop2         traceparent ...-00 (not sampled), as a server
//	                    sidecar receives 99% of requests when its client's
//	                    sidecar samples 1%
func BenchmarkObservability(b *testing.B) {
	up := newCannedUpstream(b, 1024)
	sink := newOTLPSink(b, false)
	dir := b.TempDir()
	const (
		fresh = "GET /api/items?size=1024 HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"
		hop2  = "GET /api/items?size=1024 HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n" +
			"X-Request-Id: 7d0c4f3e-2b7a-4c1e-9f3a-5b6d7e8f9a0b\r\n" +
			"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r\nX-B3-Sampled: 0\r\n\r\n"
	)
	for _, tc := range []struct {
		name string
		pct  float64 // <0: no tracing
		log  string  // "", "text", "json"
		req  string
	}{
		{"plain", -1, "", fresh},
		{"trace0", 0, "", fresh},
		{"trace1", 1, "", fresh},
		{"trace100", 100, "", fresh},
		{"logtext", -1, "text", fresh},
		{"logjson", -1, "json", fresh},
		{"plain-hop2", -1, "", hop2},
		{"trace1-hop2", 1, "", hop2},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d := newDataplane(b, contract.Identity{ID: "sidecar~127.0.0.1~bench.default~default.svc.cluster.local", WorkloadName: "bench", Namespace: "default"}, nil)
			l := httpListener(b, "in", core.TrafficDirection_INBOUND, "",
				routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))
			if tc.pct >= 0 {
				l = tracedListener(b, l, tc.pct)
			}
			l = withBenchLog(b, l, tc.log, filepath.Join(dir, tc.name+".log"))
			mustApply(b, d, resourcesAny(staticCluster(b, "inbound|8080||", up), staticCluster(b, "otel", sink.addr), l))
			c := dialCanned(b, d.ListenerAddr("in").String(), tc.req)
			for range 100 { // warm the pools, the buffers and the exporter
				c.do(b)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
			for b.Loop() {
				c.do(b)
			}
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// withBenchLog adds an access log in Istio's text or JSON format (the
// formats of its built-in envoy provider) writing to path; "" leaves l
// alone.
func withBenchLog(b *testing.B, l *listener.Listener, format, path string) *listener.Listener {
	switch format {
	case "":
		return l
	case "text":
		return withAccessLogs(b, l, fileLog(b, path, &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: accesslog.IstioDefaultFormat}}}}, nil))
	case "json":
		fields := map[string]any{}
		for k, v := range accesslog.IstioDefaultJSON {
			fields[k] = v
		}
		return withAccessLogs(b, l, fileLog(b, path, jsonFormat(b, fields), nil))
	}
	b.Fatalf("unknown log format %q", format)
	return nil
}

// processCPU is the process's user and system CPU time so far, in
// nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// newCannedUpstream is a minimal HTTP/1.1 server on loopback: it reads
// request heads (no bodies) and answers each with 200 and size bytes, on
// keep-alive connections, until the benchmark ends.
func newCannedUpstream(b *testing.B, size int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	resp := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", size)
	resp = append(resp, bytes.Repeat([]byte("x"), size)...)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if err := skipHead(br); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			})
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// skipHead reads one request or response head up to its blank line.
func skipHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return nil
		}
	}
}

// cannedClient sends one request over and over on one keep-alive
// connection and reads each response (status 200, Content-Length body).
type cannedClient struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

func dialCanned(b *testing.B, addr, req string) *cannedClient {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &cannedClient{c: c, br: bufio.NewReaderSize(c, 8<<10), req: []byte(req)}
}

var clHeader = []byte("content-length:")

func (cc *cannedClient) do(b *testing.B) {
	if err := cc.c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		b.Fatal(err)
	}
	if _, err := cc.c.Write(cc.req); err != nil {
		b.Fatal(err)
	}
	status, err := cc.br.ReadSlice('\n')
	if err != nil {
		b.Fatal(err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		b.Fatalf("status line %q", status)
	}
	n := -1
	for {
		line, err := cc.br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(clHeader) && bytes.EqualFold(line[:len(clHeader)], clHeader) {
			n = 0
			for _, ch := range bytes.TrimSpace(line[len(clHeader):]) {
				if ch < '0' || ch > '9' {
					b.Fatalf("content-length %q", line)
				}
				n = n*10 + int(ch-'0')
			}
		}
	}
	if n < 0 {
		b.Fatal(errors.New("response without content-length"))
	}
	if _, err := cc.br.Discard(n); err != nil {
		b.Fatal(err)
	}
}
