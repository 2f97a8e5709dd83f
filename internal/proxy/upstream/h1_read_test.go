package upstream

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestReadResponseMatchesReadResponse: the synchronous path's response
// reader gives what http.ReadResponse gives — status, header, length,
// body and what is left after it — for the responses it parses itself
// and for those it hands over.
func TestReadResponseMatchesReadResponse(t *testing.T) {
	get, _ := http.NewRequest("GET", "http://up/", nil)
	head, _ := http.NewRequest("HEAD", "http://up/", nil)
	body := strings.Repeat("x", 1024)
	var shared Scratch
	for _, tc := range []struct {
		name   string
		raw    string
		req    *http.Request
		simple bool // parsed without http.ReadResponse
	}{
		{"nginx 1 KiB", "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 05:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: x\r\nETag: \"a\"\r\nAccept-Ranges: bytes\r\n\r\n" + body + "NEXT", get, true},
		{"lower-case names, repeated, trimmed", "HTTP/1.1 201 Created\r\ncontent-length: 3\r\nset-cookie: a=1\r\nSet-Cookie: b=2 \t\r\nx-empty:\r\nx-odd_name: v:w\r\n\r\nabcNEXT", get, true},
		{"no reason", "HTTP/1.1 503\r\nContent-Length: 0\r\n\r\nNEXT", get, true},
		{"reason with spaces", "HTTP/1.1 404 Not  Found \r\nContent-Length: 2\r\n\r\nnoNEXT", get, true},
		{"leading zeros", "HTTP/1.1 200 OK\r\nContent-Length: 0003\r\n\r\nabcNEXT", get, true},
		{"obs-text value", "HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\nContent-Length: 1\r\n\r\naNEXT", get, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\nNEXT", get, false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", get, false},
		{"connection close in a list", "HTTP/1.1 200 OK\r\nConnection: foo, Close \r\nContent-Length: 1\r\n\r\na", get, false},
		{"connection keep-alive (nginx)", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\naNEXT", get, true},
		{"no length", "HTTP/1.1 200 OK\r\nX: y\r\n\r\nto the end", get, false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\naNEXT", get, false},
		{"pragma", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\nNEXT", get, false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nNEXT", get, false},
		{"100 first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", get, false},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\nNEXT", head, false},
		{"folded line", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"space before colon", "HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 1\n\naNEXT", get, false},
		{"control byte in value", "HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"bad status", "HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\naNEXT", get, false},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", get, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pbr := bufio.NewReaderSize(strings.NewReader(tc.raw), 4<<10)
			pbr.Peek(1)
			if got := readSimpleResponse(pbr, tc.req, nil) != nil; got != tc.simple {
				t.Errorf("parsed without http.ReadResponse: %v, want %v", got, tc.simple)
			}
			sameAsReadResponse(t, tc.raw, tc.req, nil)
			// Into storage lent for one request and reused by the next
			// (a retry's response reuses it without a Reset).
			sameAsReadResponse(t, tc.raw, tc.req, &shared)
			sameAsReadResponse(t, tc.raw, tc.req, &shared)
			shared.Reset()
			sameAsReadResponse(t, tc.raw, tc.req, &shared)
		})
	}
}

// FuzzReadResponse: whatever an upstream sends on a kept-alive
// connection, the response reader frames it as http.ReadResponse does —
// status, header, body and what is left for the next response. A reader
// that ended a body elsewhere would hand the rest of one response to the
// next request on the connection, maybe another client's.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nset-cookie: a=1\r\nSet-Cookie: b=2 \t\r\nx-empty:\r\n\r\nabcNEXT",
		"HTTP/1.1 404 Not  Found \r\nContent-Length: 0002\r\n\r\nnoNEXT",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\nNEXT",
		"HTTP/1.1 200 OK\r\nConnection: foo, Close \r\nContent-Length: 1\r\n\r\na",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\naNEXT",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 1\r\n\r\naNEXT",
	} {
		f.Add(s, false)
	}
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\nNEXT", true)
	var shared Scratch // lent to every input in turn, as to a connection's requests
	f.Fuzz(func(t *testing.T, raw string, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		req, _ := http.NewRequest(method, "http://up/", nil)
		sameAsReadResponse(t, raw, req, nil)
		sameAsReadResponse(t, raw, req, &shared)
		shared.Reset()
	})
}

// sameAsReadResponse reads raw with readResponse, as send does (after a
// first byte is in), and with http.ReadResponse, and fails t where they
// differ: the error or not, status line, header, length, Close, body,
// trailer, and the bytes left after the body. s is the storage lent, or
// nil.
func sameAsReadResponse(t *testing.T, raw string, req *http.Request, s *Scratch) {
	t.Helper()
	wbr := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	gbr := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	gbr.Peek(1) // as send: at least the first byte is in
	want, werr := http.ReadResponse(wbr, req)
	got, _, gerr := readResponse(gbr, req, s)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%q: error %v, http.ReadResponse's %v", raw, gerr, werr)
	}
	if werr != nil {
		return
	}
	if got.Status != want.Status || got.StatusCode != want.StatusCode || got.Proto != want.Proto ||
		got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor ||
		got.ContentLength != want.ContentLength || got.Close != want.Close || got.Request != want.Request {
		t.Fatalf("%q: got %+v\nwant %+v", raw, got, want)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("%q: header %q, want %q", raw, got.Header, want.Header)
	}
	gb, gerr := io.ReadAll(got.Body)
	wb, werr := io.ReadAll(want.Body)
	if string(gb) != string(wb) || (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: body %q (%v), want %q (%v)", raw, gb, gerr, wb, werr)
	}
	if !reflect.DeepEqual(got.Trailer, want.Trailer) {
		t.Fatalf("%q: trailer %q, want %q", raw, got.Trailer, want.Trailer)
	}
	grest, _ := io.ReadAll(gbr)
	wrest, _ := io.ReadAll(wbr)
	if string(grest) != string(wrest) {
		t.Fatalf("%q: left %q, want %q", raw, grest, wrest)
	}
}

func BenchmarkReadResponse(b *testing.B) {
	raw := "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 05:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Thu, 03 Dec 2026 04:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6930-400\"\r\nAccept-Ranges: bytes\r\n\r\n" + strings.Repeat("x", 1024)
	req, _ := http.NewRequest("GET", "http://up/", nil)
	sr := strings.NewReader(raw)
	br := bufio.NewReaderSize(sr, 4<<10)
	buf := make([]byte, 32<<10)
	var scratch Scratch
	for _, impl := range []struct {
		name string
		fn   func(*bufio.Reader, *http.Request) (*http.Response, error)
	}{{"http.ReadResponse", http.ReadResponse}, {"readResponse", func(br *bufio.Reader, req *http.Request) (*http.Response, error) {
		resp, _, err := readResponse(br, req, nil)
		return resp, err
	}}, {"readResponse-scratch", func(br *bufio.Reader, req *http.Request) (*http.Response, error) {
		resp, _, err := readResponse(br, req, &scratch)
		return resp, err
	}}} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(raw)
				br.Reset(sr)
				br.Peek(1)
				resp, err := impl.fn(br, req)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
			}
		})
	}
}
