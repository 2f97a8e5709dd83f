package dataplane

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"weft.dev/weft/internal/xds/contract"
)

// The HTTP/2 paths of bench/run.sh, in process: h2c from the client to
// an HTTP/1.1 upstream (the h2c scenario: protocol HTTP behind the
// sidecar), and gRPC end to end (the grpc scenario: h2c on both sides,
// 1 KiB payloads each way). Like BenchmarkForwardHTTP1Raw, every hop is
// a real loopback socket; unlike it, the clients (and the gRPC upstream)
// are Go's HTTP/2 and grpc-go, so allocs/op include theirs: compare
// runs of the same benchmark, not these with the HTTP/1.1 ones.
// parallel16 uses 16 connections, one per client goroutine, as fortio
// -c 16 does.

// BenchmarkForwardH2C: GET over h2c with prior knowledge through an
// inbound listener to an HTTP/1.1 upstream answering 1 KiB.
func BenchmarkForwardH2C(b *testing.B) {
	body := strings.Repeat("x", 1024)
	rsp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	up := fixedRawUpstream(b, rsp)

	d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
	mustApply(b, d, resourcesAny(staticCluster(b, "inbound|8080||", up),
		httpListener(b, "in", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))))
	url := "http://" + d.ListenerAddr("in").String() + "/?size=1024"

	newClient := func(b *testing.B) (func() error, func()) {
		tr := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true}
		tr.Protocols.SetUnencryptedHTTP2(true)
		c := &http.Client{Transport: tr}
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "bench"
		get := func() error {
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != 1024 || resp.ProtoMajor != 2 {
				return errRawStatus
			}
			return nil
		}
		return get, tr.CloseIdleConnections
	}
	benchSerialAndParallel(b, newClient)
}

// BenchmarkForwardGRPC: unary gRPC calls (1 KiB request and response
// payloads) through an outbound listener to an h2c cluster (a grpc-go
// server).
func BenchmarkForwardGRPC(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(s, benchService{})
	var wg sync.WaitGroup
	wg.Go(func() { s.Serve(ln) })
	b.Cleanup(func() { s.Stop(); wg.Wait() })

	d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
	c := edsCluster(b, "outbound|8079||grpc", true, "")
	mustApply(b, d, resourcesAny(c, cla("outbound|8079||grpc", ep{Addr: ln.Addr().String()}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "outbound|8079||grpc"))),
		httpListener(b, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	addr := d.ListenerAddr("out").String()
	req := &testpb.SimpleRequest{ResponseSize: 1024, Payload: &testpb.Payload{Body: make([]byte, 1024)}}

	newClient := func(b *testing.B) (func() error, func()) {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc"))
		if err != nil {
			return func() error { return err }, func() {}
		}
		bc := testpb.NewBenchmarkServiceClient(conn)
		call := func() error {
			resp, err := bc.UnaryCall(context.Background(), req)
			if err != nil {
				return err
			}
			if len(resp.GetPayload().GetBody()) != 1024 {
				return errRawStatus
			}
			return nil
		}
		return call, func() { conn.Close() }
	}
	benchSerialAndParallel(b, newClient)
}

// benchService answers UnaryCall with a payload of the size asked.
type benchService struct {
	testpb.UnimplementedBenchmarkServiceServer
}

func (benchService) UnaryCall(_ context.Context, r *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, r.GetResponseSize())}}, nil
}

// benchSerialAndParallel runs one request at a time on one connection
// (serial), then 16 goroutines with a connection each (parallel16).
// newClient returns a connection's request function and its closer.
func benchSerialAndParallel(b *testing.B, newClient func(*testing.B) (do func() error, close func())) {
	for _, par := range []int{1, 16} {
		b.Run(map[int]string{1: "serial", 16: "parallel16"}[par], func(b *testing.B) {
			dial := func() (func() error, error) {
				do, closeFn := newClient(b)
				b.Cleanup(closeFn)
				return do, do() // warm the connections
			}
			if par == 1 {
				do, err := dial()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := do(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			var mu sync.Mutex
			b.ReportAllocs()
			b.SetParallelism(par / 2) // GOMAXPROCS=2 on the bench box: 16 goroutines
			b.RunParallel(func(pb *testing.PB) {
				mu.Lock()
				do, err := dial()
				mu.Unlock()
				if err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					if err := do(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// fixedRawUpstream accepts connections and answers every request head with
// rsp (fixedUpstream); it returns its address. All is closed at cleanup.
func fixedRawUpstream(b *testing.B, rsp []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { fixedUpstream(c, rsp) })
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
