package h1strict

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// streams are byte streams a client may send, with the violation the
// scanner must find ("" for none) and where: the bytes before it.
var streams = []struct {
	name   string
	stream string
	bad    string
	before string // the stream's bytes returned before the error
}{
	{name: "simple GET", stream: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{name: "pipelined with bodies",
		stream: "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
			"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhe\nlo\r\n0\r\nX-T: 1\r\n\r\n" +
			"GET /c HTTP/1.1\r\nHost: a\r\n\r\n"},
	{name: "a body that looks like a bad head is a body",
		stream: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n\n x\nGET / \n\n" + "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{name: "Content-Length and Transfer-Encoding",
		stream: "POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		bad:    clAndTE, before: "POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n"},
	{name: "Transfer-Encoding then Content-Length, second request",
		stream: "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n0\r\n\r\n",
		bad:    clAndTE, before: "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n"},
	{name: "obsolete line folding",
		stream: "GET /fold HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		bad:    obsFold, before: "GET /fold HTTP/1.1\r\nHost: a\r\nX: a\r\n"},
	{name: "folding with a tab after a body",
		stream: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
		bad:    obsFold, before: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\nX: a\r\n"},
	{name: "bare LF in the request line",
		stream: "GET /lf HTTP/1.1\nHost: a\n\n",
		bad:    bareLF, before: "GET /lf HTTP/1.1"},
	{name: "bare LF in a header line",
		stream: "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
		bad:    bareLF, before: "GET / HTTP/1.1\r\nHost: a"},
	{name: "bare LF ending the head",
		stream: "GET / HTTP/1.1\r\nHost: a\r\n\n",
		bad:    bareLF, before: "GET / HTTP/1.1\r\nHost: a\r\n"},
	{name: "obsolete folding in a trailer",
		stream: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n 2\r\n\r\n",
		bad:    obsFold, before: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n"},
	// What net/http refuses itself: the scanner stops checking, and lets
	// net/http see it.
	{name: "invalid chunk size", stream: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\nX: a\n\n"},
	{name: "Content-Length not a number", stream: "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhelloGET / HTTP/1.1\nX: a\n\n"},
	{name: "differing Content-Length", stream: "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhelloGET /\n"},
	{name: "equal Content-Length twice",
		stream: "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\nX: a\n\n",
		bad:    bareLF, before: "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1"},
	// Where the connection leaves HTTP/1.1.
	{name: "HTTP/2 preface", stream: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\n \n"},
	{name: "CONNECT", stream: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\n \n"},
	{name: "Upgrade", stream: "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\n \n"},
	{name: "Upgrade without Connection", stream: "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\n \n"},
	// An h2c upgrade is served as a plain request: the connection stays
	// HTTP/1.1, and what follows is checked.
	{name: "Upgrade: h2c",
		stream: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade:  H2C \r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\nGET / HTTP/1.1\nX: a\n\n",
		bad:    bareLF, before: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade:  H2C \r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\nGET / HTTP/1.1"},
	{name: "Upgrade: h2c and websocket", stream: "GET / HTTP/1.1\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n\r\n\n \n"},
	{name: "Upgrade: h2cx", stream: "GET / HTTP/1.1\r\nUpgrade: h2cx\r\n\r\n\n \n"},
}

func TestScanner(t *testing.T) {
	for _, tc := range streams {
		t.Run(tc.name, func(t *testing.T) {
			// Whole, then in every split into two reads, then a byte at
			// a time: the same answer.
			check := func(how string, parts ...string) {
				t.Helper()
				s := scanner{}
				var got strings.Builder
				bad := ""
				for _, p := range parts {
					n, b := s.scan([]byte(p))
					got.WriteString(p[:n])
					if b != "" {
						bad = b
						break
					}
				}
				if bad != tc.bad {
					t.Fatalf("%s: violation %q, want %q", how, bad, tc.bad)
				}
				if bad != "" && got.String() != tc.before {
					t.Fatalf("%s: returned %q before the error, want %q", how, got.String(), tc.before)
				}
			}
			check("whole", tc.stream)
			for i := 1; i < len(tc.stream); i++ {
				check(fmt.Sprintf("split at %d", i), tc.stream[:i], tc.stream[i:])
			}
			bytes := make([]string, len(tc.stream))
			for i := range tc.stream {
				bytes[i] = tc.stream[i : i+1]
			}
			check("byte by byte", bytes...)
		})
	}
}

// TestNetHTTPAnswers400: behind a real net/http server, each violation is
// answered 400 and the connection closed, with no request served; and a
// pipelined stream of good requests is served whole.
func TestNetHTTPAnswers400(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan string, 100)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			served <- fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, len(b))
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(strictListener{ln})
	t.Cleanup(func() { srv.Close() })

	exchange := func(raw string) []int {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var codes []int
		for range 10 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes = append(codes, resp.StatusCode)
			if resp.Close {
				break
			}
		}
		return codes
	}
	drain := func() []string {
		var got []string
		for {
			select {
			case s := <-served:
				got = append(got, s)
			default:
				return got
			}
		}
	}
	for _, tc := range streams {
		if tc.bad == "" || strings.Contains(tc.name, "trailer") {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			codes := exchange(tc.stream)
			if len(codes) == 0 || codes[len(codes)-1] != 400 {
				t.Errorf("answers %v, want the last one 400", codes)
			}
			got := drain()
			if len(got) != len(codes)-1 {
				t.Errorf("served %q before the refused request; answers %v", got, codes)
			}
		})
	}
	codes := exchange(streams[1].stream + "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if fmt.Sprint(codes) != "[200 200 200 200]" {
		t.Errorf("pipelined good requests: answers %v", codes)
	}
	if got := drain(); fmt.Sprint(got) != "[POST /a 5 POST /b 5 GET /c 0 GET /last 0]" {
		t.Errorf("served %q", got)
	}
}

type strictListener struct{ net.Listener }

func (l strictListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, Options{}), nil
}

// TestConnReadsRefusal: after a violation the connection reads the bytes
// before it, the refusal, and then nothing until the connection ends;
// Violation says what and where, and Refused heard of it.
func TestConnReadsRefusal(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	go func() {
		io.WriteString(c2, "GET / HTTP/1.1\nHost: a\n\nGET /next HTTP/1.1\r\n\r\n")
		c2.Close()
	}()
	var heard *Error
	c := NewConn(c1, Options{Refused: func(e *Error) { heard = e }})
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "GET / HTTP/1.1"+refusal {
		t.Fatalf("read %q, %v", b, err)
	}
	e := c.Violation()
	if e == nil || heard != e || e.Offset != int64(len("GET / HTTP/1.1")) {
		t.Fatalf("violation %v, heard %v", e, heard)
	}
	if want := "malformed HTTP/1.1 request: " + bareLF; e.Error() != want {
		t.Errorf("error %q, want %q", e, want)
	}
}

func FuzzScannerSplits(f *testing.F) {
	for _, tc := range streams {
		f.Add(tc.stream, uint16(3))
	}
	f.Fuzz(func(t *testing.T, stream string, split uint16) {
		var whole scanner
		n1, bad1 := whole.scan([]byte(stream))
		var parts scanner
		k := int(split) % (len(stream) + 1)
		n2, bad2 := parts.scan([]byte(stream[:k]))
		if bad2 == "" {
			m, b := parts.scan([]byte(stream[k:]))
			n2, bad2 = k+m, b
		}
		if n1 != n2 || bad1 != bad2 {
			t.Fatalf("whole: %d %q; split at %d: %d %q", n1, bad1, k, n2, bad2)
		}
	})
}

// BenchmarkScanHead is the check's cost per request: a typical
// sidecar-to-sidecar request head (about 400 bytes) and a 1 KiB body of
// known length.
func BenchmarkScanHead(b *testing.B) {
	req := []byte("POST /api/v1/orders?id=7 HTTP/1.1\r\nHost: orders.shop.svc.cluster.local:8080\r\n" +
		"User-Agent: Go-http-client/1.1\r\nContent-Length: 1024\r\nContent-Type: application/json\r\n" +
		"X-Request-Id: 3f1c9a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b\r\nX-B3-Traceid: 80f198ee56343ba864fe8b2a57d3eff7\r\n" +
		"X-B3-Spanid: e457b5a2e4d86bd1\r\nX-B3-Sampled: 1\r\nX-Forwarded-Proto: http\r\nAccept-Encoding: gzip\r\n\r\n" +
		strings.Repeat("x", 1024))
	b.SetBytes(int64(len(req)))
	var s scanner
	for b.Loop() {
		if _, bad := s.scan(req); bad != "" || s.state != lineStart {
			b.Fatal(bad)
		}
	}
}
