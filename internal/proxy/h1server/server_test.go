package h1server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve starts s on a loopback listener and returns its address; every
// connection is served on a goroutine of its own until the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	return serveWith(t, s, ConnOptions{})
}

// serveWith is serve with the connections' options o.
func serveWith(t *testing.T, s *Server, o ConnOptions) string {
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
			wg.Go(func() { s.ServeConn(context.Background(), c, o) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// seen is what a handler saw of a request, to compare with net/http's.
type seen struct {
	Method, RequestURI, Host, Path, RawQuery, Proto string
	ProtoMajor, ProtoMinor                          int
	Header, Trailer                                 http.Header
	ContentLength                                   int64
	TransferEncoding                                []string
	Close                                           bool
	Body                                            string
}

func see(r *http.Request) seen {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		b = []byte("error: " + err.Error())
	}
	return seen{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor, Header: r.Header, Trailer: r.Trailer,
		ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding, Close: r.Close, Body: string(b)}
}

// TestParseLikeNetHTTP: valid requests reach the handler as net/http's
// ReadRequest (and its server) would give them: same method, target,
// headers, body and trailers.
func TestParseLikeNetHTTP(t *testing.T) {
	corpus := []string{
		"GET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"GET /a/b?x=1&y=%20z HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
		"GET /p%2Fq HTTP/1.1\r\nHost: svc\r\nx-lower-case: v\r\nX-MiXeD-cAsE:   padded value \t\r\n\r\n",
		"GET /multi HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n",
		"GET http://other:81/abs?q HTTP/1.1\r\nHost: svc\r\n\r\n",
		"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n",
		"POST /cl HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello",
		"POST /cl2 HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST /ch HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
		"POST /tr HTTP/1.1\r\nHost: svc\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
		"GET /close HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
		"GET /10 HTTP/1.0\r\n\r\n",
		"GET /10ka HTTP/1.0\r\nConnection: keep-alive\r\nHost: svc\r\n\r\n",
		"GET /pragma HTTP/1.1\r\nHost: svc\r\nPragma: no-cache\r\n\r\n",
		"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: svc\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
		"FOO /m HTTP/1.1\r\nHost: svc\r\nEmpty:\r\n\r\n",
		// Lines ending in a bare LF (RFC 9112 section 2.2), all or some.
		"GET /lf HTTP/1.1\nHost: svc\nX-A: 1\n\n",
		"GET /mixed HTTP/1.1\r\nHost: svc\nX-A: 1\r\n\n",
		"POST /lfcl HTTP/1.1\nHost: svc\nContent-Length: 2\n\r\nok",
	}
	for _, raw := range corpus {
		// net/http's server.
		want := make(chan seen, 1)
		ref := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { want <- see(r) })}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go ref.Serve(ln)
		c, _ := dial(t, ln.Addr().String())
		io.WriteString(c, raw)
		var w seen
		select {
		case w = <-want:
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: net/http served nothing", raw)
		}
		ref.Close()

		got := make(chan seen, 1)
		addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- see(r) })})
		c, _ = dial(t, addr)
		io.WriteString(c, raw)
		select {
		case g := <-got:
			if !reflect.DeepEqual(g, w) {
				t.Errorf("%q:\n got %+v\nwant %+v", raw, g, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: served nothing", raw)
		}
	}
}

// TestRefused: malformed heads get net/http's (or Envoy's) status, and
// the connection closes; the handler never runs.
func TestRefused(t *testing.T) {
	addr := serve(t, &Server{MaxHeaderBytes: 1 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler ran for %s %s", r.Method, r.RequestURI)
	})})
	for _, tc := range []struct {
		raw  string
		code int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400}, // a CR before the CRLF: not a version
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX Y: v\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"GET svc/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", 417},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 6<<10) + "\r\n\r\n", 431},
	} {
		c, br := dial(t, addr)
		go io.WriteString(c, tc.raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("%q: %v", tc.raw, err)
			continue
		}
		if resp.StatusCode != tc.code || !resp.Close {
			t.Errorf("%q: %d (close %v), want %d and close", tc.raw, resp.StatusCode, resp.Close, tc.code)
		}
	}
}

// TestPipelining: requests sent at once are answered in order, each
// with its own body.
func TestPipelining(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", r.URL.Path, b)
	})})
	c, br := dial(t, addr)
	var raw strings.Builder
	for i := range 20 {
		fmt.Fprintf(&raw, "POST /%d HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n%d", i, i%10)
	}
	go io.WriteString(c, raw.String())
	for i := range 20 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("/%d:%d", i, i%10); string(b) != want {
			t.Fatalf("response %d: %q, want %q", i, b, want)
		}
	}
}

// TestExpectContinue: "100 Continue" is sent when the handler reads the
// body, not before; a handler that answers without reading gets no 100
// and the connection closes.
func TestExpectContinue(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/noread" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})})
	c, br := dial(t, addr)
	io.WriteString(c, "POST /read HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v; want 100 Continue", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after 100: %q", l)
	}
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}

	c, br = dial(t, addr)
	io.WriteString(c, "POST /noread HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 || !resp.Close {
		t.Fatalf("%d close %v, want 403 and close", resp.StatusCode, resp.Close)
	}
}

// TestClientGoneCancels: a client that closes its connection while its
// request is served cancels the request's context.
func TestClientGoneCancels(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})})
	c, _ := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context was not cancelled")
	}
}

// TestBaseContextCancels: the context a connection is served with reaches
// the request being served when it ends (one watch per connection, not a
// child context per request), and its values reach the handler.
func TestBaseContextCancels(t *testing.T) {
	type key struct{}
	base, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "conn"))
	defer cancel()
	started, cancelled := make(chan string, 1), make(chan error, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := r.Context().Value(key{}).(string)
		started <- v
		select {
		case <-r.Context().Done():
			cancelled <- context.Cause(r.Context())
		case <-time.After(10 * time.Second):
			cancelled <- nil
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		if c, err := ln.Accept(); err == nil {
			s.ServeConn(base, c, ConnOptions{})
		}
	}()
	c, _ := dial(t, ln.Addr().String())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if v := <-started; v != "conn" {
		t.Errorf("the handler saw value %q of the connection's context, want conn", v)
	}
	cancel()
	if err := <-cancelled; err != context.Canceled {
		t.Errorf("request context after the base context ended: cause %v, want Canceled", err)
	}
	c.Close()
	s.Close()
	<-served
}

// TestHijack: a handler takes the connection over with what the client
// sent after the head, and the server leaves it alone.
func TestHijack(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		go func() {
			defer nc.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo " + line)
			brw.Flush()
		}()
	})})
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	if line, err := br.ReadString('\n'); line != "echo early\n" {
		t.Fatalf("%q %v", line, err)
	}
}

// TestResponseFraming: a small body gets a Content-Length, a flushed or
// long one chunked framing with its trailers, HEAD no body, HTTP/1.0 a
// close.
func TestResponseFraming(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "small")
		case "/stream":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
			w.Header().Set(http.TrailerPrefix+"X-Sum", "2")
		case "/trailer-only":
			w.Header().Set(http.TrailerPrefix+"X-Sum", "0")
		case "/head":
			w.Header().Set("Content-Length", "10")
		}
	})})
	c, br := dial(t, addr)
	io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\nGET /stream HTTP/1.1\r\nHost: a\r\n\r\nHEAD /head HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "small" || resp.ContentLength != 5 || resp.Header.Get("Content-Type") == "" || resp.Header.Get("Date") == "" {
		t.Errorf("small: %q %d %v", b, resp.ContentLength, resp.Header)
	}
	resp, err = http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "ab" || resp.TransferEncoding == nil || resp.Trailer.Get("X-Sum") != "2" {
		t.Errorf("stream: %q %v trailer %v", b, resp.TransferEncoding, resp.Trailer)
	}
	resp, err = http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || resp.ContentLength != 10 {
		t.Errorf("head: %v %v", resp, err)
	}
	io.WriteString(c, "GET /trailer-only HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err = http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); len(b) != 0 || resp.Trailer.Get("X-Sum") != "0" {
		t.Errorf("trailer only: %q trailer %v", b, resp.Trailer)
	}

	c, br = dial(t, addr)
	io.WriteString(c, "GET /small HTTP/1.0\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("HTTP/1.0: read %q, %v after the response; want the connection closed", b, err)
	}
}

// TestHandoffPreface: a connection starting with HTTP/2's preface is
// handed off with every byte.
func TestHandoffPreface(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	s := &Server{Handler: http.NotFoundHandler()}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.ServeConn(context.Background(), c, ConnOptions{Handoff: func(h2 net.Conn) {
			defer h2.Close()
			b := make([]byte, len(preface)+4)
			io.ReadFull(h2, b)
			got <- string(b)
		}})
	}()
	c, _ := dial(t, ln.Addr().String())
	io.WriteString(c, preface[:5])
	time.Sleep(10 * time.Millisecond) // in two reads
	io.WriteString(c, preface[5:]+"abcd")
	select {
	case b := <-got:
		if b != preface+"abcd" {
			t.Errorf("handed %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handed off")
	}
}

// TestTimeouts: a head that does not come whole within
// ReadHeaderTimeout, and a connection idle past IdleTimeout, are closed;
// Shutdown closes idle connections.
func TestTimeouts(t *testing.T) {
	s := &Server{ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: 100 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	addr := serve(t, s)
	c, _ := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHo")
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("slow head: %q %v", b, err)
	}
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.Close {
		t.Fatalf("%v %v", resp, err)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("idle: %q %v", b, err)
	}

	s2 := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	addr = serve(t, s2)
	c, br = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("after Shutdown: %q %v", b, err)
	}
}

// TestBodyInMemory: a length-framed body that arrived with its head says
// it is in memory (the upstream then sends it with the head in one
// write); one still on its way, a chunked one, and one behind an
// unanswered Expect: 100-continue do not.
func TestBodyInMemory(t *testing.T) {
	inMemory := make(chan bool, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, ok := r.Body.(interface{ InMemory() bool })
		inMemory <- ok && m.InMemory()
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})})
	for _, tc := range []struct {
		name       string
		head, rest string // rest is sent once the handler has looked
		want       bool
	}{
		{"with its head", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "", true},
		{"still to come", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel", "lo", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "", false},
		{"expect continue", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", "hello", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			io.WriteString(c, tc.head)
			if got := <-inMemory; got != tc.want {
				t.Errorf("InMemory() = %v, want %v", got, tc.want)
			}
			io.WriteString(c, tc.rest)
			resp, err := http.ReadResponse(br, nil)
			for err == nil && resp.StatusCode == http.StatusContinue {
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := io.ReadAll(resp.Body); string(b) != "hello" {
				t.Errorf("echoed %q", b)
			}
		})
	}
}

// TestRequestHeaderPerRequest: the connection's next request is parsed
// into the map of the one before (cleared), and gets exactly its own
// fields, whatever the handler of the one before added.
func TestRequestHeaderPerRequest(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := slices.Sorted(maps.Keys(r.Header))
		r.Header.Set("X-Added-By-Handler", "1")
		fmt.Fprint(w, strings.Join(keys, ","), " ", r.Header.Get("X-N"))
	})})
	c, br := dial(t, addr)
	heads := []string{
		"GET / HTTP/1.1\r\nHost: a\r\nX-N: 1\r\nX-Only-First: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-N: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-N: 3\r\nX-N: 4\r\nX-Third: z\r\n\r\n",
	}
	want := []string{"X-N,X-Only-First 1", "X-N 2", "X-N,X-Third 3"} // Host is r.Host
	for i, h := range heads {
		io.WriteString(c, h)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want[i] {
			t.Errorf("request %d saw %q, want %q", i, b, want[i])
		}
	}
}

// A response header value goes out trimmed, its CR and LF as spaces: no
// response splitting.
func TestAppendValue(t *testing.T) {
	for v, want := range map[string]string{
		"a": "a", " a\t": "a", "a\r\nX-Injected: 1": "a  X-Injected: 1", "a\nb": "a b", "\r": " ", "": "",
	} {
		if got := string(appendValue(nil, v)); got != want {
			t.Errorf("appendValue(%q) = %q, want %q", v, got, want)
		}
	}
}
