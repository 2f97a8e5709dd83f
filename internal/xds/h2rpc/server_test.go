package h2rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"weft.dev/weft/internal/proxy/proxytest"
)

const echoMethod = "/test.Echo/Stream"

// echo is a callback stream: each request (a BytesValue) is answered
// with a BytesValue of the size the request names in its first bytes
// ("size:N"), or the request itself; "fail" ends the stream with
// PermissionDenied. Sends run on a goroutine of their own, in order.
type echo struct {
	st     *Stream
	mu     sync.Mutex
	queue  chan []byte
	closed chan error
}

func openEcho(st *Stream) StreamHandler {
	if st.Method() != echoMethod {
		return nil
	}
	e := &echo{st: st, queue: make(chan []byte, 64), closed: make(chan error, 1)}
	go e.run()
	return e
}

func (e *echo) Message(b []byte) { e.queue <- b }
func (e *echo) Closed(err error) { e.closed <- err }

func (e *echo) run() {
	for {
		select {
		case b := <-e.queue:
			var in wrapperspb.BytesValue
			if err := proto.Unmarshal(b, &in); err != nil {
				_ = e.st.Finish(codes.Internal, err.Error())
				return
			}
			out := in.Value
			var n int
			if _, err := fmtSscanf(string(in.Value), &n); err == nil {
				out = bytes.Repeat([]byte{'x'}, n)
			}
			if string(in.Value) == "fail" {
				_ = e.st.Finish(codes.PermissionDenied, "refused: 100% sure")
				return
			}
			if string(in.Value) == "peer" {
				p, _ := peer.FromContext(e.st.Context())
				out = []byte(authType(p))
			}
			resp, _ := proto.Marshal(wrapperspb.Bytes(out))
			// Two pieces, to exercise a message written from several.
			if err := e.st.Send(resp[:len(resp)/2], resp[len(resp)/2:]); err != nil {
				return
			}
		case err := <-e.closed:
			if errors.Is(err, io.EOF) {
				_ = e.st.Finish(codes.OK, "")
			}
			return
		}
	}
}

func fmtSscanf(s string, n *int) (int, error) {
	rest, ok := strings.CutPrefix(s, "size:")
	if !ok {
		return 0, errors.New("no size")
	}
	v := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, errors.New("bad size")
		}
		v = v*10 + int(c-'0')
	}
	*n = v
	return 1, nil
}

func authType(p *peer.Peer) string {
	if p == nil || p.AuthInfo == nil {
		return "none"
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].DNSNames) > 0 {
		return "tls:" + ti.State.PeerCertificates[0].DNSNames[0]
	}
	return p.AuthInfo.AuthType()
}

// whoService is a unary gRPC service served by the fallback: it answers
// with the caller's authentication as the fallback's request carried it.
var whoService = grpc.ServiceDesc{
	ServiceName: "test.Who",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Am",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in wrapperspb.StringValue
			if err := dec(&in); err != nil {
				return nil, err
			}
			if in.Value == "deny" {
				return nil, status.Error(codes.PermissionDenied, "denied")
			}
			p, _ := peer.FromContext(ctx)
			return wrapperspb.String(in.Value + " " + authType(p)), nil
		},
	}},
}

// serve starts a server on loopback; creds nil is cleartext.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.Open == nil {
		s.Open = openEcho
	}
	if s.Fallback == nil {
		gs := grpc.NewServer()
		gs.RegisterService(&whoService, struct{}{})
		s.Fallback = gs
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func echoStream(t *testing.T, ctx context.Context, cc *grpc.ClientConn) grpc.ClientStream {
	t.Helper()
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, echoMethod)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func roundTrip(t *testing.T, cs grpc.ClientStream, req string) []byte {
	t.Helper()
	if err := cs.SendMsg(wrapperspb.Bytes([]byte(req))); err != nil {
		t.Fatalf("send %q: %v", req, err)
	}
	var resp wrapperspb.BytesValue
	if err := cs.RecvMsg(&resp); err != nil {
		t.Fatalf("recv for %q: %v", req, err)
	}
	return resp.Value
}

// TestStreamsAndFallback: a gRPC-Go client's calls on one connection, in
// cleartext: callback streams answer in order, large responses cross
// frames and flow-control windows, a status ends a stream, a half-close
// ends it OK, and a unary call of another service is served by the
// fallback gRPC server.
func TestStreamsAndFallback(t *testing.T) {
	addr := serve(t, &Server{})
	cc := dial(t, addr, nil)
	ctx := ctxFor(t)

	cs := echoStream(t, ctx, cc)
	if got := roundTrip(t, cs, "hello"); string(got) != "hello" {
		t.Fatalf("echo: %q", got)
	}
	// 3 MiB: past the client's initial 64 KiB windows and many frames.
	if got := roundTrip(t, cs, "size:3145728"); len(got) != 3<<20 || got[0] != 'x' {
		t.Fatalf("large response: %d bytes", len(got))
	}
	if got := roundTrip(t, cs, "peer"); string(got) != "none" {
		t.Fatalf("peer in cleartext: %q", got)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(new(wrapperspb.BytesValue)); err != io.EOF {
		t.Fatalf("after a half-close: %v, want EOF (status OK)", err)
	}

	cs = echoStream(t, ctx, cc)
	if err := cs.SendMsg(wrapperspb.Bytes([]byte("fail"))); err != nil {
		t.Fatal(err)
	}
	err := cs.RecvMsg(new(wrapperspb.BytesValue))
	if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != "refused: 100% sure" {
		t.Fatalf("status: %v", err)
	}

	var who wrapperspb.StringValue
	if err := cc.Invoke(ctx, "/test.Who/Am", wrapperspb.String("me"), &who); err != nil || who.Value != "me none" {
		t.Fatalf("fallback: %q, %v", who.Value, err)
	}
	err = cc.Invoke(ctx, "/test.Who/Am", wrapperspb.String("deny"), &who)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("fallback status: %v", err)
	}
	err = cc.Invoke(ctx, "/test.Nobody/Here", wrapperspb.String("x"), &who)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown service: %v", err)
	}
}

// TestTLSPeer: over TLS, both kinds of stream see the client's
// certificate.
func TestTLSPeer(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	addr := serve(t, &Server{Credentials: credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{*ca.Issue(t, "", time.Hour, "server")},
		ClientAuth:   tls.RequireAnyClientCert,
	})})
	cc := dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, ServerName: "server",
		Certificates: []tls.Certificate{*ca.Issue(t, "", time.Hour, "client-a")}}))
	ctx := ctxFor(t)
	cs := echoStream(t, ctx, cc)
	if got := roundTrip(t, cs, "peer"); string(got) != "tls:client-a" {
		t.Fatalf("stream peer: %q", got)
	}
	if got := roundTrip(t, cs, "size:200000"); len(got) != 200000 {
		t.Fatalf("large response over TLS: %d", len(got))
	}
	var who wrapperspb.StringValue
	if err := cc.Invoke(ctx, "/test.Who/Am", wrapperspb.String("me"), &who); err != nil || who.Value != "me tls:client-a" {
		t.Fatalf("fallback peer: %q, %v", who.Value, err)
	}
}

// TestClientCancel: a client that cancels its stream is seen as the
// stream closing with an error, and the stream's context ends.
func TestClientCancel(t *testing.T) {
	opened := make(chan *Stream, 1)
	closed := make(chan error, 1)
	addr := serve(t, &Server{Open: func(st *Stream) StreamHandler {
		opened <- st
		return handlerFuncs{closed: func(err error) { closed <- err }}
	}})
	cc := dial(t, addr, nil)
	ctx, cancel := context.WithCancel(ctxFor(t))
	cs := echoStream(t, ctx, cc)
	if err := cs.SendMsg(wrapperspb.Bytes(nil)); err != nil {
		t.Fatal(err)
	}
	st := <-opened
	cancel()
	select {
	case err := <-closed:
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("closed with %v, want a reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Closed not called")
	}
	<-st.Context().Done()
	if err := st.Send([]byte("late")); !errors.Is(err, ErrStreamDone) {
		t.Fatalf("send after reset: %v", err)
	}
}

type handlerFuncs struct {
	message func([]byte)
	closed  func(error)
}

func (h handlerFuncs) Message(b []byte) {
	if h.message != nil {
		h.message(b)
	}
}

func (h handlerFuncs) Closed(err error) {
	if h.closed != nil {
		h.closed(err)
	}
}

// TestIdleStreamsHoldNoGoroutine: idle streams on one connection cost
// the server one goroutine, the connection's.
func TestIdleStreamsHoldNoGoroutine(t *testing.T) {
	addr := serve(t, &Server{Open: func(st *Stream) StreamHandler { return handlerFuncs{} }})
	cc := dial(t, addr, nil)
	ctx := ctxFor(t)
	for range 20 {
		cs := echoStream(t, ctx, cc)
		if err := cs.SendMsg(wrapperspb.Bytes(nil)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the server read them
	var serving int
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "h2rpc.(*") {
			serving++
		}
	}
	if serving != 2 { // the accept loop and the connection's reader
		t.Errorf("%d server goroutines for 20 idle streams, want 2 (accept loop, connection)\n%s", serving, buf)
	}
}

// TestGracefulStop: GOAWAY, then the server waits for open streams to
// finish; a new connection is refused.
func TestGracefulStop(t *testing.T) {
	var mu sync.Mutex
	var streams []*Stream
	s := &Server{Open: func(st *Stream) StreamHandler {
		mu.Lock()
		streams = append(streams, st)
		mu.Unlock()
		return handlerFuncs{}
	}}
	addr := serve(t, s)
	cc := dial(t, addr, nil)
	ctx := ctxFor(t)
	cs := echoStream(t, ctx, cc)
	if err := cs.SendMsg(wrapperspb.Bytes(nil)); err != nil {
		t.Fatal(err)
	}
	for {
		mu.Lock()
		n := len(streams)
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a stream open")
	case <-time.After(200 * time.Millisecond):
	}
	if err := streams[0].Finish(codes.OK, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop did not return after the last stream finished")
	}
	if err := cs.RecvMsg(new(wrapperspb.BytesValue)); err != io.EOF {
		t.Fatalf("stream: %v, want a clean end", err)
	}
}
