package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
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

// framePair returns a frameConn accepted by a connListener and the
// client end of its connection.
func framePair(t *testing.T, userTimeout time.Duration) (*frameConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fl := connListener{Listener: l, userTimeout: userTimeout, wrap: newFrameConn}
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := fl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fc, ok := c.(*frameConn)
	if !ok {
		t.Fatalf("accepted %T, want *frameConn", c)
	}
	return fc, client
}

// frameHeader is an HTTP/2 frame header of the given payload length.
func frameHeader(typ byte, length int) []byte {
	h := make([]byte, 9)
	h[0], h[1], h[2] = byte(length>>16), byte(length>>8), byte(length)
	h[3] = typ
	binary.BigEndian.PutUint32(h[5:], 1)
	return h
}

func TestFrameConnHoldsOnlyUnfinishedFrames(t *testing.T) {
	fc, client := framePair(t, 0)
	payload := func(n int) []byte { return bytes.Repeat([]byte{'p'}, n) }
	writes := []struct {
		name string
		b    []byte
		held int // bytes held back after the write
	}{
		{"whole SETTINGS frame", append(frameHeader(4, 6), payload(6)...), 0},
		{"DATA header", frameHeader(0, 105), 9},
		{"gRPC message prefix", []byte{0, 0, 0, 0, 100}, 14},
		{"message", payload(100), 0},
		{"empty DATA frame", frameHeader(0, 0), 0},
		{"DATA header of a large frame", frameHeader(0, 16384), 9},
		{"small piece", payload(3), 12},
		{"piece larger than what is held", payload(100), 0},
		{"rest of the frame", payload(16384 - 103), 0},
		{"PING ack split in two", frameHeader(6, 8)[:4], 4},
		{"its second half", append(frameHeader(6, 8)[4:], payload(8)...), 0},
	}
	var want []byte
	for _, w := range writes {
		n, err := fc.Write(w.b)
		if err != nil || n != len(w.b) {
			t.Fatalf("%s: Write = %d, %v; want %d, nil", w.name, n, err, len(w.b))
		}
		if fc.npend != w.held {
			t.Errorf("%s: %d bytes held back, want %d", w.name, fc.npend, w.held)
		}
		want = append(want, w.b...)
	}
	got := make([]byte, len(want))
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("reading what was written: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the peer read other bytes than were written")
	}
}

func TestFrameListenerSetsTCPUserTimeout(t *testing.T) {
	fc, _ := framePair(t, 5*time.Second)
	var got int
	var gerr error
	if err := fc.raw.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil || got != 5000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms (%v), want 5000", got, gerr)
	}
}

func TestFrameConnReadsOnReady(t *testing.T) {
	fc, client := framePair(t, 0)
	pool := newBoundedPool(10, 16, 1<<20)
	go client.Write([]byte("hello"))
	buf, n, err := fc.ReadOnReady(4096, pool)
	if err != nil || string((*buf)[:n]) != "hello" {
		t.Fatalf("ReadOnReady = %q, %v; want hello", (*buf)[:n], err)
	}
	pool.Put(buf)
	client.Close()
	if _, _, err := fc.ReadOnReady(4096, pool); err != io.EOF {
		t.Fatalf("ReadOnReady after the peer closed: %v, want EOF", err)
	}
}

// TestIdleConnectionsHoldNoBuffers checks what an idle ADS connection
// keeps on the heap. In plaintext, gRPC reads through frameConn's
// ReadOnReady, taking a pooled buffer only while there is something to
// read; over TLS, through a read buffer of tlsReadBufferSize. Both ends
// of each connection live in this process, so the bound is on their sum.
func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	cert, roots := selfSigned(t)
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials // nil: plaintext
		dial  grpc.DialOption
		// Measured: plaintext ~40 KB with ReadOnReady, ~72 KB without (gRPC
		// then gives each connection a bufio.Reader of 32 KiB).
		max int64
	}{
		{"plaintext", nil, grpc.WithTransportCredentials(insecure.NewCredentials()), 52 << 10},
		// TLS: ~84 KB with a 4 KiB read buffer of its own for its life,
		// ~113 KB with gRPC's 32 KiB (the client's end has its own 32 KiB
		// one).
		{"TLS", credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})), 100 << 10},
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

// writeLog records each Write as the record a tls.Conn would make of it.
type writeLog struct {
	net.Conn
	writes [][]byte
}

func (c *writeLog) Write(b []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(b))
	return len(b), nil
}

func TestTLSFrameConnWritesAFrameAsOneRecord(t *testing.T) {
	rc := &writeLog{}
	c := newTLSFrameConn(rc, nil)
	msg := bytes.Repeat([]byte{'m'}, 1000)
	big := bytes.Repeat([]byte{'b'}, scratchMax)
	for _, w := range [][]byte{
		frameHeader(0, 5+len(msg)), {0, 0, 0, 3, 232}, msg, // a DATA frame in three writes
		append(frameHeader(6, 8), make([]byte, 8)...), // a PING ack in one
		frameHeader(0, len(big)), big,                 // too large to join: header, then payload
	} {
		if n, err := c.Write(w); err != nil || n != len(w) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(w))
		}
	}
	want := [][]byte{
		slices.Concat(frameHeader(0, 5+len(msg)), []byte{0, 0, 0, 3, 232}, msg),
		append(frameHeader(6, 8), make([]byte, 8)...),
		frameHeader(0, len(big)), big,
	}
	if len(rc.writes) != len(want) {
		t.Fatalf("%d records, want %d", len(rc.writes), len(want))
	}
	for i := range want {
		if !bytes.Equal(rc.writes[i], want[i]) {
			t.Errorf("record %d: %d bytes, not the %d expected", i, len(rc.writes[i]), len(want[i]))
		}
	}
}

// countingWriter counts the writes that reach the socket.
type countingWriter struct {
	w      io.Writer
	writes int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.writes++
	return c.w.Write(b)
}

// TestTLSFrameConnSendsAFullFrameInOneWrite: a full DATA frame (9 + 16,384
// bytes) is two TLS records, sent in one write to the socket, and the
// peer reads the frames as written; writes of one record are sent as
// they are.
func TestTLSFrameConnSendsAFullFrameInOneWrite(t *testing.T) {
	cert, roots := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type dialed struct {
		c   *tls.Conn
		err error
	}
	dc := make(chan dialed, 1)
	go func() {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: roots})
		dc <- dialed{c, err}
	}()
	raw, err := connListener{Listener: l, wrap: newRecordConn}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rc := raw.(*recordConn)
	server := tls.Server(rc, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	d := <-dc
	if d.err != nil {
		t.Fatal(d.err)
	}
	client := d.c
	defer client.Close()
	// Past crypto/tls's first 128 KiB, written in small records.
	warm := make([]byte, 160<<10)
	go server.Write(warm)
	if _, err := io.ReadFull(client, make([]byte, len(warm))); err != nil {
		t.Fatal(err)
	}

	count := &countingWriter{w: rc.out}
	rc.out = count
	c := newTLSFrameConn(server, rc)
	full := bytes.Repeat([]byte{'f'}, 16<<10)
	small := bytes.Repeat([]byte{'s'}, 100)
	writes := [][]byte{
		frameHeader(0, len(full)), full, // two records
		frameHeader(0, len(small)), small, // one
	}
	wantWrites := []int{0, 1, 0, 1}
	var sent []byte
	for i, w := range writes {
		before := count.writes
		if n, err := c.Write(w); err != nil || n != len(w) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(w))
		}
		if got := count.writes - before; got != wantWrites[i] {
			t.Errorf("write %d (%d bytes): %d writes to the socket, want %d", i, len(w), got, wantWrites[i])
		}
		sent = append(sent, w...)
	}
	got := make([]byte, len(sent))
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("the peer read other bytes than were written")
	}
}

// TestRecordConnReadsOneRecordAtATime: however much has arrived, a read
// under TLS ends at the end of a record's header or body, and nothing is
// lost or reordered.
func TestRecordConnReadsOneRecordAtATime(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := connListener{Listener: l, userTimeout: 5 * time.Second, wrap: newRecordConn}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
