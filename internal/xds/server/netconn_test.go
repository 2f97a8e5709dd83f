package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// acceptedPair returns a connection accepted by a connListener with a
// 5 s user timeout and wrap, and the client end of it; both are closed
// when the test ends.
func acceptedPair(t *testing.T, wrap func(*net.TCPConn) net.Conn) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := connListener{Listener: l, userTimeout: 5 * time.Second, wrap: wrap}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, client
}

// TestListenerSetsTCPUserTimeout: accepted connections carry the
// keepalive timeout as TCP_USER_TIMEOUT.
func TestListenerSetsTCPUserTimeout(t *testing.T) {
	c, _ := acceptedPair(t, nil)
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil || got != 5000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms (%v), want 5000", got, gerr)
	}
}

// TestIdleConnectionsHoldNoBuffers checks what an idle ADS connection
// keeps on the heap. The server holds no read or write buffer between
// frames (h2rpc reads each frame into a pooled buffer and writes from
// one); under TLS, crypto/tls keeps its record buffer, one record of
// recordConn's. Both ends of each connection live in this process, so
// the bound is on their sum.
func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	cert, roots := selfSigned(t)
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials // nil: plaintext
		dial  grpc.DialOption
		// Measured with h2rpc: plaintext ~29 KB (~40 KB with gRPC-Go's
		// server reading into pooled buffers, ~72 KB with its bufio.Reader
		// of 32 KiB); TLS ~76 KB (~84 KB with gRPC-Go's server and a 4 KiB
		// read buffer; the client's end has a 32 KiB one of its own).
		max int64
	}{
		{"plaintext", nil, grpc.WithTransportCredentials(insecure.NewCredentials()), 40 << 10},
		{"TLS", credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})), 90 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			per := idleConnectionHeap(t, tc.creds, tc.dial)
			t.Logf("heap per idle connection, both ends: %d bytes", per)
			if per > tc.max {
				t.Errorf("an idle connection holds %d bytes of heap (both ends), want under %d", per, tc.max)
			}
		})
	}
}

// serveTestMesh serves testMesh(2) on a loopback port with creds (nil:
// plaintext) until the test ends, and returns its address.
func serveTestMesh(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	s.Update(testMesh(2))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeEndpoints(ctx, Endpoint{Listener: lis, Credentials: creds}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeEndpoints: %v", err)
		}
	})
	return lis.Addr().String()
}

// idleConnectionHeap opens 100 ADS connections to a server on creds,
// each after one response, and returns the heap they hold, per connection.
func idleConnectionHeap(t *testing.T, creds credentials.TransportCredentials, dial grpc.DialOption) int64 {
	addr := serveTestMesh(t, creds)

	const conns = 100
	var manyNames []string
	for i := range 2000 {
		manyNames = append(manyNames, fmt.Sprintf("outbound|8080|v1|service-%04d.namespace.svc.cluster.local", i))
	}
	var clients []*grpc.ClientConn
	defer func() {
		for _, cc := range clients {
			cc.Close()
		}
	}()
	streamCtx := withDeadline(t)
	connect := func(i int) {
		// weft-proxy's write buffer for the control plane
		// (xdsclient.WriteBufferSize): over TLS, records of 4 KiB.
		cc, err := grpc.NewClient(addr, dial, grpc.WithWriteBufferSize(4<<10))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cc)
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(streamCtx)
		if err != nil {
			t.Fatal(err)
		}
		node := &core.Node{Id: fmt.Sprintf("sidecar~10.0.%d.%d~idle-%d.default~default.svc.cluster.local", i/250, i%250+1, i)}
		// A subscription by name to 2,000 clusters first (~120 KB, as a
		// sidecar's EDS subscription in a large mesh), replaced by one of a
		// single name (so the server's own state of it is small again),
		// then the request that is answered: by the answer, the server has
		// read them all.
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNames: manyNames}); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: manyNames[:1]}); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	heap := func() int64 {
		var ms runtime.MemStats
		for range 2 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	connect(conns) // the first one initialises what every later one shares
	before := heap()
	for i := range conns {
		connect(i)
	}
	return (heap() - before) / conns
}

// TestRecordConnReadsOneRecordAtATime: however much has arrived, a read
// under TLS ends at the end of a record's header or body, and nothing is
// lost or reordered.
func TestRecordConnReadsOneRecordAtATime(t *testing.T) {
	c, client := acceptedPair(t, newRecordConn)
	if _, ok := c.(*recordConn); !ok {
		t.Fatalf("accepted %T, want *recordConn", c)
	}

	var sent []byte
	var ends []int // offsets where a header or a body ends
	for i, size := range []int{1, 300, 16384, 0, 4096, 17} {
		rec := []byte{23, 3, 3, byte(size >> 8), byte(size)}
		sent = append(sent, rec...)
		ends = append(ends, len(sent))
		sent = append(sent, bytes.Repeat([]byte{byte('a' + i)}, size)...)
		if size > 0 {
			ends = append(ends, len(sent))
		}
	}
	go client.Write(sent) // all of it at once: the reader must not run past a record

	var got []byte
	buf := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < len(sent) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
		next := ends[0]
		if len(got) > next {
			t.Fatalf("a read ran from %d to %d, past the boundary at %d", len(got)-n, len(got), next)
		}
		if len(got) == next {
			ends = ends[1:]
		}
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("the bytes read differ from those sent")
	}
}

// TestTLSLargeRecords: a client that writes full TLS records (gRPC-Go's
// default 32 KiB write buffer: 16 KiB records, four times the server's
// read buffer) and sends large messages back to back is read whole,
// through recordConn's record-by-record reads.
func TestTLSLargeRecords(t *testing.T) {
	cert, roots := selfSigned(t)
	addr := serveTestMesh(t, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(withDeadline(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 3000 {
		names = append(names, fmt.Sprintf("outbound|8080|v1|service-%04d.namespace.svc.cluster.local", i))
	}
	node := &core.Node{Id: "sidecar~10.0.0.1~big-1.default~default.svc.cluster.local"}
	for i := range 3 { // ~180 KB each, sent before any is answered
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNames: names[:len(names)-i]}); err != nil {
			t.Fatal(err)
		}
	}
	// The last message, large too, and then nothing: its last record
	// is read partly, and the rest is in crypto/tls, not the socket.
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNames: append([]string{"*"}, names...)}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("no CDS response after the large requests: %v", err)
		}
		if r.GetTypeUrl() == resource.ClusterType {
			return
		}
	}
}
