package h1server

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// bytesByPath serves /bytes itself, hands /next to next and declines
// everything else.
type bytesByPath struct{ next http.Handler }

func (b *bytesByPath) ServeBytes(_ context.Context, head []byte, w *bufio.Writer) (BytesResult, http.Handler) {
	switch {
	case strings.HasPrefix(string(head), "GET /bytes "):
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbytes")
		return BytesServed, nil
	case strings.HasPrefix(string(head), "GET /next "):
		return BytesDeclined, b.next
	}
	return BytesDeclined, nil
}

// abandoning counts how it was used.
type abandoning struct{ served, abandoned atomic.Int32 }

func (a *abandoning) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.served.Add(1)
	io.WriteString(w, "next")
}

func (a *abandoning) Abandon() { a.abandoned.Add(1) }

// TestBytesHandler: a bytes handler answers the requests it serves, the
// ones it declines reach the handler it names or the server's, on one
// keep-alive connection; a request it handed over that cannot be parsed
// is abandoned, not served, and refused.
func TestBytesHandler(t *testing.T) {
	next := &abandoning{}
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "general") })}
	c, br := dial(t, serveWith(t, s, ConnOptions{Bytes: &bytesByPath{next: next}}))
	for _, tc := range []struct{ path, want string }{{"/bytes", "bytes"}, {"/other", "general"}, {"/next", "next"}, {"/bytes", "bytes"}} {
		io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != tc.want {
			t.Errorf("%s: got %q, want %q", tc.path, b, tc.want)
		}
	}
	if next.served.Load() != 1 || next.abandoned.Load() != 0 {
		t.Errorf("next served %d, abandoned %d; want 1, 0", next.served.Load(), next.abandoned.Load())
	}
	// A name with a space: the parser refuses what the bytes handler
	// handed over.
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("got %v %v, want 400", resp, err)
	}
	if next.served.Load() != 1 || next.abandoned.Load() != 1 {
		t.Errorf("next served %d, abandoned %d; want 1, 1", next.served.Load(), next.abandoned.Load())
	}
}
