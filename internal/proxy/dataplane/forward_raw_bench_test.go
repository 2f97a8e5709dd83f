package dataplane

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkForwardHTTP1Raw measures what bench/throughput.sh loads: a
// keep-alive HTTP/1.1 GET through an outbound listener to an upstream
// answering 1 KiB with a Content-Length; the post1k cases send what
// bench/memory.sh does, a 1 KiB POST body with the head. Client and upstream speak raw
// bytes over loopback sockets and allocate nothing per request, so
// allocs/op and B/op are the proxy's alone.
func BenchmarkForwardHTTP1Raw(b *testing.B) {
	body := strings.Repeat("x", 1024)
	rsp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	upstream := fixedRawUpstream(b, rsp) // forward_h2_bench_test.go

	d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
	mustApply(b, d, resourcesAny(staticCluster(b, "outbound|80||up", upstream),
		httpListener(b, "out", core.TrafficDirection_OUTBOUND, "",
			routeConfig("out", vhost("up", []string{"*"}, toCluster("default", prefixMatch("/"), "outbound|80||up"))))))
	addr := d.ListenerAddr("out").String()
	get := []byte("GET /?size=1024 HTTP/1.1\r\nHost: up\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	post := []byte("POST / HTTP/1.1\r\nHost: up\r\nUser-Agent: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n" + body)

	for _, bc := range []struct {
		name string
		req  []byte
		par  int
	}{{"serial", get, 1}, {"parallel16", get, 16}, {"post1k/serial", post, 1}, {"post1k/parallel16", post, 16}} {
		req, par := bc.req, bc.par
		b.Run(bc.name, func(b *testing.B) {
			dial := func() *rawClient {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				rc := &rawClient{c: c, br: bufio.NewReaderSize(c, 8<<10), req: req, want: len(body)}
				if err := rc.do(); err != nil { // warm both connections
					b.Fatal(err)
				}
				return rc
			}
			if par == 1 {
				rc := dial()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := rc.do(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.ReportAllocs()
			b.SetParallelism(par / 2) // GOMAXPROCS=2 on the bench box: 16 goroutines
			b.RunParallel(func(pb *testing.PB) {
				rc := dial()
				for pb.Next() {
					if err := rc.do(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// fixedUpstream answers every request read on c with rsp until c fails.
// It assumes requests without a body or with a Content-Length one.
func fixedUpstream(c net.Conn, rsp []byte) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 8<<10)
	for {
		n, err := skipRawHead(br)
		if err != nil {
			return
		}
		if _, err := br.Discard(n); err != nil {
			return
		}
		if br.Buffered() > 0 {
			continue // pipelined: answer after the last one read
		}
		if _, err := c.Write(rsp); err != nil {
			return
		}
	}
}

// skipRawHead reads one message head, up to its empty line, and returns
// its Content-Length (0 without one).
func skipRawHead(br *bufio.Reader) (int, error) {
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			return n, nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
}

// rawClient sends one GET at a time and reads a response with a
// Content-Length of want bytes.
type rawClient struct {
	c    net.Conn
	br   *bufio.Reader
	req  []byte
	want int
}

var errRawStatus = io.ErrUnexpectedEOF

func (rc *rawClient) do() error {
	if _, err := rc.c.Write(rc.req); err != nil {
		return err
	}
	status, err := rc.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return errRawStatus
	}
	n := -1
	for {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n != rc.want {
		return errRawStatus
	}
	_, err = rc.br.Discard(n)
	return err
}
