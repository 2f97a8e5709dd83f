package h1server

import (
	"bufio"
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exchange is what one side made of one request of a connection's byte
// stream: where its head and body ended is what request smuggling plays
// on, so the method, target, body and trailers are compared.
type exchange struct {
	method, target, body string
	trailer              http.Header
	bodyErr              bool // the body could not be read whole
}

// FuzzFraming: fed the same bytes as one connection, the server frames
// the requests as net/http's ReadRequest does — the same requests, with
// the same bodies, in the same order. It may refuse more (then it stops
// earlier), never accept a request or a body net/http would not, nor end
// a body elsewhere: a proxy hop that frames differently from the server
// behind it lets a request be smuggled past its routing and policies.
func FuzzFraming(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: v\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if strings.HasPrefix(raw, "PRI ") {
			return // HTTP/2's preface: handed off, not framed here
		}
		got := serverFraming(t, raw)
		want := netHTTPFraming(raw)
		for i, g := range got {
			if g.bodyErr {
				return // refused within the body: the server stops here, stricter or not
			}
			if i >= len(want) {
				t.Fatalf("%q:\nrequest %d accepted: %+v\nnet/http stops after %d: %+v", raw, i, g, len(want), want)
			}
			w := want[i]
			if w.bodyErr || g.method != w.method || g.target != w.target || g.body != w.body || !reflect.DeepEqual(g.trailer, w.trailer) {
				t.Fatalf("%q: request %d\n got %+v\nwant %+v", raw, i, g, w)
			}
		}
	})
}

// serverFraming serves raw as one connection's bytes and returns what the
// handler saw, up to the first request that switches protocols.
func serverFraming(t *testing.T, raw string) []exchange {
	var out []exchange
	stopped := false
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stopped || switches(r.Method, r.Header) {
			stopped = true
			return
		}
		b, err := io.ReadAll(r.Body)
		out = append(out, exchange{method: r.Method, target: r.RequestURI, body: string(b), trailer: cloneTrailer(r.Trailer), bodyErr: err != nil})
	})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.ServeConn(ctx, &bytesConn{r: strings.NewReader(raw)}, ConnOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

// netHTTPFraming reads raw as net/http's server reads a connection:
// ReadRequest, then the whole body, until an error, a request that says
// the connection closes, or one that switches protocols.
func netHTTPFraming(raw string) []exchange {
	br := bufio.NewReader(strings.NewReader(raw))
	var out []exchange
	for {
		r, err := http.ReadRequest(br)
		if err != nil || switches(r.Method, r.Header) {
			return out
		}
		b, err := io.ReadAll(r.Body)
		out = append(out, exchange{method: r.Method, target: r.RequestURI, body: string(b), trailer: cloneTrailer(r.Trailer), bodyErr: err != nil})
		if err != nil || r.Close {
			return out
		}
	}
}

// switches reports a request after which the connection carries another
// protocol (CONNECT, Upgrade): neither side frames what follows as HTTP.
func switches(method string, h http.Header) bool {
	return method == http.MethodConnect || len(h["Upgrade"]) > 0
}

// cloneTrailer is t with its nil values (declared, never sent) left out,
// nil when that leaves nothing: how the two sides list an unsent trailer
// is not framing.
func cloneTrailer(t http.Header) http.Header {
	out := http.Header{}
	for k, v := range t {
		if v != nil {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return maps.Clone(out)
}

// bytesConn is a connection whose client sent r and then closed its side;
// what the server writes goes to w (nil: discarded).
type bytesConn struct {
	r *strings.Reader
	w io.Writer
}

func (c *bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error) {
	if c.w == nil {
		return len(p), nil
	}
	return c.w.Write(p)
}
func (c *bytesConn) Close() error        { return nil }
func (c *bytesConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *bytesConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }
