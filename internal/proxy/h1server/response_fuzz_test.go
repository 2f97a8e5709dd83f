package h1server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzResponseFraming: whatever a handler does — any status, a right,
// short, long or absent Content-Length, trailers, writes of any size with
// flushes between them — the bytes the server sends are responses a
// client (http.ReadResponse) reads back as the handler meant them, and the
// connection stays in step: the pipelined request after it gets its own
// response, or the connection ends. A response framed wrongly would make
// a client (or a proxy in front) read one response's bytes as the next.
func FuzzResponseFraming(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(0), false, []byte("hello"))
	f.Add(uint8(1), uint8(1), uint8(1), false, []byte("0123456789"))
	f.Add(uint8(2), uint8(2), uint8(0), true, []byte("abc"))
	f.Add(uint8(3), uint8(3), uint8(2), false, bytes.Repeat([]byte("x"), 5000))
	f.Add(uint8(4), uint8(0), uint8(3), false, []byte{})
	f.Fuzz(func(t *testing.T, status, length, opts uint8, head bool, body []byte) {
		codes := []int{0, 200, 204, 304, 404, 500, 201, 206, 103}
		code := codes[int(status)%len(codes)]
		// length: 0 none, 1 exact, 2 one short, 3 one long.
		cl := -1
		switch length % 4 {
		case 1:
			cl = len(body)
		case 2:
			cl = max(len(body)-1, 0)
		case 3:
			cl = len(body) + 1
		}
		trailer, http10 := opts&1 != 0, opts&2 != 0
		flushEvery := 1 + int(opts>>2)
		method, proto := "GET", "HTTP/1.1"
		if head {
			method = "HEAD"
		}
		if http10 {
			proto = "HTTP/1.0"
		}
		keep := ""
		if http10 {
			keep = "Connection: keep-alive\r\n"
		}
		reqs := method + " /1 " + proto + "\r\nHost: a\r\n" + keep + "\r\nGET /2 " + proto + "\r\nHost: a\r\n" + keep + "\r\n"

		first := true
		var out bytes.Buffer
		var sent []byte // what the handler's writes took
		s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !first {
				io.WriteString(w, "second")
				return
			}
			first = false
			h := w.Header()
			if cl >= 0 {
				h.Set("Content-Length", strconv.Itoa(cl))
			}
			if trailer {
				h.Set("Trailer", "X-T")
			}
			if code == http.StatusEarlyHints {
				h.Set("Link", "</a>; rel=preload")
				w.WriteHeader(code)
				code = 0
			}
			if code != 0 {
				w.WriteHeader(code)
			}
			for i := 0; i < len(body); {
				n := min(len(body)-i, 1+int(body[i])%7*flushEvery)
				k, _ := w.Write(body[i : i+n])
				sent = append(sent, body[i:i+k]...)
				i += n
				if i/n%flushEvery == 0 {
					w.(http.Flusher).Flush()
				}
			}
			if trailer {
				h.Set("X-T", "v")
			}
		})}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.ServeConn(ctx, &bytesConn{r: strings.NewReader(reqs), w: &out}, ConnOptions{}); err != nil {
			t.Fatal(err)
		}

		br := bufio.NewReader(bytes.NewReader(out.Bytes()))
		req1, _ := http.NewRequest(method, "http://a/1", nil)
		resp, err := http.ReadResponse(br, req1)
		for err == nil && resp.StatusCode < 200 { // 1xx first
			resp, err = http.ReadResponse(br, req1)
		}
		if err != nil {
			t.Fatalf("first response unreadable: %v\n%q", err, out.String())
		}
		wantCode := code
		if wantCode == 0 {
			wantCode = 200
		}
		if resp.StatusCode != wantCode {
			t.Fatalf("status %d, want %d\n%q", resp.StatusCode, wantCode, out.String())
		}
		got, rerr := io.ReadAll(resp.Body)
		noBody := head || wantCode == http.StatusNoContent || wantCode == http.StatusNotModified
		want := sent
		if noBody {
			want = nil
		}
		if rerr != nil {
			// Only a promised length the handler did not fill may end
			// the body early, where its writes ended; the connection
			// then closes.
			if noBody || cl < 0 || len(sent) >= cl || !bytes.Equal(got, sent) {
				t.Fatalf("body %q: %v (sent %q)\n%q", got, rerr, sent, out.String())
			}
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("body %q, want %q\n%q", got, want, out.String())
		}
		if trailer && !noBody && cl < 0 && !http10 && resp.Trailer.Get("X-T") != "v" {
			t.Fatalf("trailer %v, want X-T: v\n%q", resp.Trailer, out.String())
		}
		if resp.Close {
			if rest, _ := io.ReadAll(br); len(rest) > 0 {
				t.Fatalf("%q after a response that closes the connection\n%q", rest, out.String())
			}
			return
		}
		req2, _ := http.NewRequest("GET", "http://a/2", nil)
		resp2, err := http.ReadResponse(br, req2)
		if err == io.EOF {
			return // closed without saying so: in step still
		}
		if err != nil {
			t.Fatalf("second response unreadable: %v\n%q", err, out.String())
		}
		if b, _ := io.ReadAll(resp2.Body); string(b) != "second" {
			t.Fatalf("second response's body %q\n%q", b, out.String())
		}
	})
}
