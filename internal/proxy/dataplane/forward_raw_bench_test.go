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
// answering 1 KiB with a Content-Length. Client and upstream speak raw
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
	req := []byte("GET /?size=1024 HTTP/1.1\r\nHost: up\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")

	for _, par := range []int{1, 16} {
		b.Run(map[int]string{1: "serial", 16: "parallel16"}[par], func(b *testing.B) {
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

// fixedUpstream answers every request head read on c with rsp until c
// fails. It assumes GETs without a body.
func fixedUpstream(c net.Conn, rsp []byte) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 8<<10)
	for {
		if err := skipRawHead(br); err != nil {
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

// skipRawHead reads one message head, up to its empty line.
func skipRawHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
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
