package h1server

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseHead: a head the server accepts is one net/http's
// ReadRequest accepts too, parsed the same (method, target, Host,
// header fields); the server refuses more (bare LF, obsolete folding),
// never less.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"GET /a?b=c HTTP/1.0\r\nx-a: 1\r\nX-A: 2\r\n\r\n",
		"POST http://h:1/p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
		"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: svc\r\nX:  a b \t\r\nPragma: no-cache\r\nConnection: close, x\r\n\r\n",
		"GET / HTTP/1.0\n\n", // bare LFs, as Istio's "http10 to http" test sends
		"GET /lf HTTP/1.1\nHost: svc\r\nX: y\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		end, _ := headEnd([]byte(raw), 0)
		if end < 0 {
			return
		}
		head := raw[:end]
		var r http.Request
		if parseHead(&r, head, &ConnOptions{}) != nil {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			// net/http's ReadRequest also checks the body's framing
			// (Content-Length, Transfer-Encoding), which the server
			// does after the head (setBody): it must refuse it there.
			r2 := r
			r2.Header = r.Header.Clone()
			if (&conn{}).setBody(&r2) == nil {
				t.Fatalf("%q: accepted, net/http refuses: %v", head, err)
			}
			return
		}
		// net/http's transfer handling changes these; the server's own
		// (setBody) is tested end to end.
		for _, k := range []string{"Transfer-Encoding", "Content-Length", "Trailer", "Expect"} {
			delete(r.Header, k)
			delete(want.Header, k)
		}
		if r.Method != want.Method || r.RequestURI != want.RequestURI || r.Host != want.Host ||
			r.URL.String() != want.URL.String() || r.Close != want.Close || !reflect.DeepEqual(r.Header, want.Header) {
			t.Fatalf("%q:\n got %s %s host %q url %v close %v %v\nwant %s %s host %q url %v close %v %v", head,
				r.Method, r.RequestURI, r.Host, r.URL, r.Close, r.Header,
				want.Method, want.RequestURI, want.Host, want.URL, want.Close, want.Header)
		}
	})
}
