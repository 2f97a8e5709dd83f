package h2server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/h2wire"
)

// serve starts s on a loopback listener; it returns the address. The
// listener and the connections end with the test.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.ServeConn(context.Background(), c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// client is Go's HTTP/2 client over h2c with prior knowledge.
func client(t testing.TB) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestRequestAndResponse(t *testing.T) {
	var got *http.Request
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context()) // the server reuses the header map once the handler returns
		w.Header().Set("X-Answer", "42")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		io.WriteString(w, "hello")
	})})
	req, _ := http.NewRequest("GET", "http://"+addr+"/a/b%2Fc?x=1&y=2", nil)
	req.Host = "example.com:8080"
	req.Header.Add("Cookie", "c=1")
	req.Header.Add("Cookie", "d=2")
	req.Header.Set("X-Custom-Name", "v")
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello" || resp.ProtoMajor != 2 {
		t.Fatalf("got %d %q proto %d", resp.StatusCode, body, resp.ProtoMajor)
	}
	if resp.Header.Get("X-Answer") != "42" || len(resp.Header["Set-Cookie"]) != 2 || resp.Header.Get("Date") == "" ||
		resp.ContentLength != 5 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("response header %v, length %d", resp.Header, resp.ContentLength)
	}
	if got.Method != "GET" || got.Host != "example.com:8080" || got.URL.Path != "/a/b/c" || got.URL.RawQuery != "x=1&y=2" ||
		got.RequestURI != "/a/b%2Fc?x=1&y=2" || got.Proto != "HTTP/2.0" || got.ContentLength != 0 || got.Body != http.NoBody {
		t.Errorf("request %s %s %q %q length %d", got.Method, got.Host, got.URL, got.RequestURI, got.ContentLength)
	}
	if got.Header.Get("Cookie") != "c=1; d=2" || got.Header.Get("X-Custom-Name") != "v" {
		t.Errorf("request header %v", got.Header)
	}
	if a, ok := got.Context().Value(http.LocalAddrContextKey).(net.Addr); !ok || a.String() != addr {
		t.Errorf("local address %v", a)
	}
}

// A body larger than every window, both ways, echoed as it is read: flow
// control is given back as the handler reads, and respected as it
// writes.
func TestLargeBodiesBothWays(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		n, err := io.Copy(w, r.Body)
		if err != nil || n != r.ContentLength {
			t.Errorf("handler read %d of %d: %v", n, r.ContentLength, err)
		}
	})})
	src := make([]byte, 5<<20)
	rand.Read(src)
	c := client(t)
	for range 3 { // on one connection: the connection window comes back
		resp, err := c.Post("http://"+addr+"/echo", "application/octet-stream", bytes.NewReader(src))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("echoed %d bytes of %d: %v", len(got), len(src), err)
		}
	}
}

func TestTrailersBothWays(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Declared")
		w.Header().Set("Content-Type", "application/grpc")
		w.Write(b)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Declared", "yes")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-Got", r.Trailer.Get("X-Client"))
	})})
	req, _ := http.NewRequest("POST", "http://"+addr+"/", io.NopCloser(strings.NewReader("payload")))
	req.Trailer = http.Header{"X-Client": {"sent"}}
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "payload" || resp.Trailer.Get("X-Declared") != "yes" || resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("X-Got") != "sent" {
		t.Fatalf("body %q trailers %v", body, resp.Trailer)
	}
}

// A trailers-only answer (headers that end the stream) and an empty
// body.
func TestEmptyResponses(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/head":
			io.WriteString(w, "not sent")
		}
	})})
	c := client(t)
	for _, tc := range []struct {
		method, path string
		status       int
	}{{"GET", "/204", 204}, {"GET", "/empty", 200}, {"HEAD", "/head", 200}} {
		req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || len(body) != 0 {
			t.Errorf("%s %s: %d %q", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

// Flushed writes reach the client while the handler still runs.
func TestFlushStreams(t *testing.T) {
	next := make(chan struct{})
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})})
	resp, err := client(t).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	for i := range 3 {
		n, err := resp.Body.Read(buf)
		if want := fmt.Sprintf("chunk %d\n", i); err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
		next <- struct{}{}
	}
}

// A client's cancel ends the handler's context; a handler's panic
// resets its stream only. The connection serves on.
func TestCancelAndPanic(t *testing.T) {
	cancelled := make(chan struct{})
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wait":
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			close(cancelled)
		case "/panic":
			panic(http.ErrAbortHandler)
		default:
			io.WriteString(w, "ok")
		}
	})})
	c := client(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/wait", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context did not end")
	}
	if _, err := c.Get("http://" + addr + "/panic"); err == nil {
		t.Fatal("a panicking handler's stream answered")
	}
	resp, err = c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("after the reset: %q", b)
	}
}

func TestExpectContinue(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			t.Errorf("Expect reached the handler")
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})})
	tr := &http.Transport{Protocols: new(http.Protocols), ExpectContinueTimeout: time.Minute}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("PUT", "http://"+addr+"/", strings.NewReader("body after 100"))
	req.Header.Set("Expect", "100-continue")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body after 100" {
		t.Fatalf("got %q", b)
	}
}

// A client that ignores SETTINGS_MAX_HEADER_LIST_SIZE is answered 431,
// and its connection serves on.
func TestRequestHeadersTooLarge(t *testing.T) {
	addr := serve(t, &Server{MaxHeaderBytes: 1 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	rc := dialRaw(t, addr)
	rc.headers(1, true, "x-big", strings.Repeat("x", 4<<10), "x-big-2", strings.Repeat("x", 4<<10))
	rc.headers(3, true)
	for _, want := range []struct {
		id     uint32
		status string
	}{{1, "431"}, {3, "200"}} {
		if id, status := rc.response(); id != want.id || status != want.status {
			t.Fatalf("stream %d answered %s; want stream %d %s", id, status, want.id, want.status)
		}
	}
}

// rawClient speaks HTTP/2 frame by frame, for what Go's client does not
// send.
type rawClient struct {
	t    testing.TB
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func dialRaw(t testing.TB, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, h2wire.Preface)
	rc := &rawClient{t: t, fr: http2.NewFramer(c, c)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	rc.fr.WriteSettings()
	return rc
}

// headers opens stream id with a GET of / and extra fields (name, value
// pairs).
func (rc *rawClient) headers(id uint32, end bool, kv ...string) {
	rc.hbuf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "test"}, kv...)
	for i := 0; i < len(fields); i += 2 {
		rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	block := rc.hbuf.Bytes()
	first := min(len(block), 16<<10)
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:first], EndStream: end, EndHeaders: first == len(block)}); err != nil {
		rc.t.Fatal(err)
	}
	for block = block[first:]; len(block) > 0; {
		n := min(len(block), 16<<10)
		rc.fr.WriteContinuation(id, n == len(block), block[:n])
		block = block[n:]
	}
}

// response reads frames to the next response's headers: its stream and
// status ("RST <code>" for a reset).
func (rc *rawClient) response() (uint32, string) {
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			return f.StreamID, f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			return f.StreamID, "RST " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
}

// "Connection: close" from the handler: the answer arrives, then the
// client is told to go (GOAWAY) and the connection closes.
func TestConnectionCloseGoesAway(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})}
	addr := serve(t, s)
	resp, err := client(t).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "bye" || resp.Header.Get("Connection") != "" {
		t.Fatalf("got %q, %v", b, resp.Header)
	}
	waitConns(t, s, 0)
}

// Shutdown lets a stream in progress finish, refuses nothing it had
// accepted, and returns once the connections are closed.
func TestShutdownIsGraceful(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})}
	addr := serve(t, s)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client(t).Get("http://" + addr + "/")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // GOAWAY on its way; the stream still runs
	close(release)
	if r := <-done; r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := s.ServeConn(context.Background(), nopConn{}); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ServeConn after Shutdown: %v", err)
	}
}

func TestIdleTimeoutCloses(t *testing.T) {
	s := &Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	addr := serve(t, s)
	resp, err := client(t).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitConns(t, s, 0)
}

func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	for range 500 {
		if s.Conns() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d connections, want %d", s.Conns(), n)
}

type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

// A body shorter than its Content-Length fails the handler's read; one
// longer resets the stream. The connection serves on.
func TestContentLengthMismatch(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			w.WriteHeader(400)
		}
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, false, "content-length", "10")
	rc.fr.WriteData(1, true, []byte("abc"))
	if id, status := rc.response(); id != 1 || status != "400" {
		t.Fatalf("short body: stream %d %s", id, status)
	}
	rc.headers(3, false, "content-length", "2")
	rc.fr.WriteData(3, true, []byte("abc"))
	if id, status := rc.response(); id != 3 || status != "RST PROTOCOL_ERROR" {
		t.Fatalf("long body: stream %d %s", id, status)
	}
	rc.headers(5, true)
	if id, status := rc.response(); id != 5 || status != "200" {
		t.Fatalf("after: stream %d %s", id, status)
	}
}

// Streams past the limit are refused — also while the handlers of
// streams the client reset still run (CVE-2023-44487).
func TestStreamLimitCountsHandlers(t *testing.T) {
	release := make(chan struct{})
	addr := serve(t, &Server{MaxConcurrentStreams: 2, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // ignores its context ending
	})})
	defer close(release)
	rc := dialRaw(t, addr)
	rc.headers(1, true)
	rc.headers(3, true)
	rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.fr.WriteRSTStream(3, http2.ErrCodeCancel)
	rc.headers(5, true)
	if id, status := rc.response(); id != 5 || status != "RST REFUSED_STREAM" {
		t.Fatalf("stream %d %s", id, status)
	}
}

// A write deadline that passes resets the stream (INTERNAL_ERROR), as in
// Go's server; the dataplane's stream idle timeout relies on it.
func TestWriteDeadlineResets(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := io.WriteString(w, strings.Repeat("x", 32<<10)); err == nil {
			t.Errorf("a write past the deadline succeeded")
		}
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, true)
	if id, status := rc.response(); id != 1 || status != "RST INTERNAL_ERROR" {
		t.Fatalf("stream %d %s", id, status)
	}
}

// The client's trailers that cross the server's early answer (and its
// RST_STREAM NO_ERROR) reset that stream only.
func TestLateTrailersResetOnlyTheirStream(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "early")
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, false)
	if id, status := rc.response(); id != 1 || status != "200" {
		t.Fatalf("stream %d %s", id, status)
	}
	rc.hbuf.Reset()
	rc.enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	rc.headers(3, true)
	for {
		id, status := rc.response()
		if id == 3 {
			if status != "200" {
				t.Fatalf("stream 3: %s", status)
			}
			return
		}
	}
}

// A request with a body waits to start its handler for the frames read
// with it; when one of those is a connection error, the handler still
// runs — on a request whose context has ended — and the connection's
// goroutine ends after it, answering with GOAWAY.
func TestWaitingHandlerAfterConnectionError(t *testing.T) {
	ran := make(chan error, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			ran <- nil
		case <-time.After(10 * time.Second):
			ran <- errors.New("the request's context did not end")
		}
	})})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var out bytes.Buffer
	out.WriteString(h2wire.Preface)
	fr := http2.NewFramer(&out, nil)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/"}, {":authority", "test"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	out.Write([]byte{0, 0, 8, byte(http2.FramePing), 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}) // PING on a stream: a connection error
	if _, err := c.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting handler never ran")
	}
	cfr := http2.NewFramer(nil, c)
	for {
		f, err := cfr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeProtocol {
				t.Errorf("GOAWAY %v, want PROTOCOL_ERROR", ga.ErrCode)
			}
			return
		}
	}
}

// Handlers of a connection's streams run on goroutines the connection
// keeps for the next stream (their stacks already grown), at most
// maxIdleWorkers waiting, and every one of them ends with the
// connection.
func TestHandlerGoroutinesReused(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]int{}
	release := make(chan struct{})
	var wait sync.WaitGroup
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		id, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:runtime.Stack(buf, false)]), "goroutine "), " ")
		mu.Lock()
		ids[id]++
		mu.Unlock()
		if r.URL.Path == "/hold" {
			wait.Done()
			<-release
		}
	})}
	addr := serve(t, s)
	c := client(t)
	get := func(path string) {
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 20 {
		get("/")
	}
	// Mostly one: a request may come before the goroutine of the one
	// before has put itself back (its response is out by then).
	if len(ids) > 5 {
		t.Errorf("20 requests one after another ran on %d goroutines, want one or a few: %v", len(ids), ids)
	}

	// 2×maxIdleWorkers at once: as many goroutines, of which
	// maxIdleWorkers stay.
	const n = 2 * maxIdleWorkers
	wait.Add(n)
	var all sync.WaitGroup
	for range n {
		all.Go(func() { get("/hold") })
	}
	wait.Wait()
	close(release)
	all.Wait()
	for i := 0; workers() > maxIdleWorkers; i++ { // those past the bound are on their way out
		if i == 200 {
			t.Fatalf("%d handler goroutines wait, want at most %d", workers(), maxIdleWorkers)
		}
		time.Sleep(10 * time.Millisecond)
	}

	c.CloseIdleConnections()
	waitConns(t, s, 0)
	for range 200 {
		if workers() == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d handler goroutines outlive their connection", workers())
}

// workers counts the goroutines in conn.work.
func workers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "h2server.(*conn).work(")
}

// A handler goroutine's response header map, reused for its next
// stream, starts empty for it.
func TestReusedResponseHeaderStartsEmpty(t *testing.T) {
	var n atomic.Int32
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(w.Header()) != 0 {
			t.Errorf("request %s: the response header starts with %v", r.URL.Path, w.Header())
		}
		if n.Add(1)%2 == 1 {
			w.Header().Set("X-Odd", r.URL.Path)
			w.Header().Set(http.TrailerPrefix+"X-Trailer", "t")
		}
	})})
	c := client(t)
	for i := range 10 {
		resp, err := c.Get(fmt.Sprintf("http://%s/%d", addr, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		odd := i%2 == 0 // the first request is the first odd one
		if got := resp.Header.Get("X-Odd"); (got != "") != odd || resp.Trailer.Get("X-Trailer") != map[bool]string{true: "t"}[odd] {
			t.Errorf("response %d: X-Odd %q, trailer %v", i, got, resp.Trailer)
		}
	}
}

// The contexts of a connection's streams end with the context given to
// ServeConn: those open when it ends, and those opened after.
func TestServeConnContextEndsStreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 2)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			w.WriteHeader(http.StatusServiceUnavailable)
		case <-time.After(10 * time.Second):
		}
	})}
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.ServeConn(ctx, c)
	})
	defer func() { ln.Close(); s.Close(); wg.Wait() }()

	c := client(t)
	get := func() int {
		resp, err := c.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	codes := make(chan int, 2)
	go func() { codes <- get() }()
	<-started
	cancel()
	if code := <-codes; code != http.StatusServiceUnavailable {
		t.Errorf("open stream: %d, want its context ended (503)", code)
	}
	go func() { codes <- get() }()
	if code := <-codes; code != http.StatusServiceUnavailable {
		t.Errorf("stream opened after: %d, want its context ended (503)", code)
	}
}

// StreamIdleTimeout resets a stream on which nothing moves — a body
// that never comes, a response the client never opens a window for,
// also once its handler has returned — and keeps one that moves, however
// long it lasts. 200 ms here; no timing is asserted, and every wait is
// bounded by the raw client's deadline or the handler's own.
func TestStreamIdleTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	type idled struct{ path string }
	newServer := func(h http.HandlerFunc) (*Server, chan idled) {
		ch := make(chan idled, 4)
		return &Server{StreamIdleTimeout: timeout, Handler: h,
			OnStreamIdle: func(_, path string) { ch <- idled{path} }}, ch
	}

	t.Run("a body that never comes", func(t *testing.T) {
		readErr := make(chan error, 1)
		s, ch := newServer(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			readErr <- err
			<-r.Context().Done() // the reset ends the request
		})
		rc := dialRaw(t, serve(t, s))
		rc.hbuf.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/upload"}, {":authority", "test"}, {"content-length", "10"}} {
			rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true})
		if id, status := rc.response(); id != 1 || status != "RST INTERNAL_ERROR" {
			t.Fatalf("stream %d %s, want reset", id, status)
		}
		if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the handler's read: %v, want os.ErrDeadlineExceeded", err)
		}
		if got := <-ch; got.path != "/upload" {
			t.Errorf("OnStreamIdle with path %q", got.path)
		}
	})

	t.Run("a response nobody reads, after its handler", func(t *testing.T) {
		s, ch := newServer(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "waits for a window that never opens")
		})
		rc := dialRaw(t, serve(t, s))
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		rc.headers(1, true)
		if id, status := rc.response(); id != 1 || status != "200" {
			t.Fatalf("stream %d %s, want its headers first", id, status)
		}
		if id, status := rc.response(); id != 1 || status != "RST INTERNAL_ERROR" {
			t.Fatalf("stream %d %s, want reset", id, status)
		}
		<-ch
	})

	t.Run("a stream that moves lives on", func(t *testing.T) {
		const chunks = 30 // 30 × 20 ms: three timeouts
		s, ch := newServer(func(w http.ResponseWriter, r *http.Request) {
			for i := range chunks {
				fmt.Fprintf(w, "chunk %d\n", i)
				w.(http.Flusher).Flush()
				select {
				case <-time.After(20 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		})
		resp, err := client(t).Get("http://" + serve(t, s) + "/slow")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || strings.Count(string(body), "chunk ") != chunks {
			t.Fatalf("body %q, %v: want all %d chunks", body, err, chunks)
		}
		select {
		case got := <-ch:
			t.Errorf("a moving stream was reset (%s)", got.path)
		default:
		}
	})
}
