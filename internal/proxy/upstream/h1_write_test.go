package upstream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestWriteRequestHeadMatchesRequestWrite: the synchronous path's request
// writer sends the bytes Request.Write sends, for the requests it writes
// itself and for those it hands to Request.Write.
func TestWriteRequestHeadMatchesRequestWrite(t *testing.T) {
	mk := func(method, target, host string, h http.Header) *http.Request {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			h = http.Header{}
		}
		return &http.Request{Method: method, URL: u, Host: host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	}
	closeReq := mk("GET", "http://up/", "up", http.Header{"Connection": {"keep-alive"}})
	closeReq.Close = true
	closeAlready := mk("GET", "http://up/", "up", http.Header{"Connection": {"Close"}})
	closeAlready.Close = true
	noHost := mk("GET", "http://10.0.0.1:8080/a", "", nil)
	forceQuery := mk("GET", "http://up/a?", "up", nil)
	withBody := mk("POST", "http://up/p", "up", nil)
	withBody.ContentLength = 3
	withBody.Body = http.NoBody // Request.Write's error is compared too
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"plain GET", mk("GET", "http://10.0.0.1:8080/?size=1024", "up", http.Header{"Accept": {"*/*"}, "X-Request-Id": {"abc"}, "User-Agent": {"wrk"}})},
		{"no method", mk("", "http://up/x", "up", nil)},
		{"default user agent", mk("GET", "http://up/", "up", nil)},
		{"empty user agent", mk("GET", "http://up/", "up", http.Header{"User-Agent": {}})},
		{"user agent cleaned", mk("GET", "http://up/", "up", http.Header{"User-Agent": {" a\r\nb ", "second"}})},
		{"sorted, repeated, cleaned values", mk("DELETE", "http://up/d", "up", http.Header{"Zz": {"1"}, "Aa": {"2", " 3 "}, "X-Nl": {"a\nb"}, "Mm": {}})},
		{"excluded names", mk("GET", "http://up/", "up", http.Header{"Host": {"h"}, "Content-Length": {"9"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"T"}})},
		{"invalid name dropped", mk("GET", "http://up/", "up", http.Header{"Bad Name": {"x"}, "Ok": {"y"}})},
		{"escaped path", mk("GET", "http://up/a%2Fb/c%20d?q=1", "up", nil)},
		{"path to escape", mk("GET", "http://up/", "up", nil)},
		{"no path", mk("GET", "http://up", "up", nil)},
		{"force query", forceQuery},
		{"POST without body", mk("POST", "http://up/p", "up", nil)},
		{"PUT without body", mk("PUT", "http://up/p", "up", nil)},
		{"PATCH without body", mk("PATCH", "http://up/p", "up", nil)},
		{"OPTIONS without body", mk("OPTIONS", "http://up/p", "up", nil)},
		{"close", closeReq},
		{"close already said", closeAlready},
		{"host from URL", noHost},
		{"IPv6 host", mk("GET", "http://[::1]:80/", "[::1]:80", nil)},
		{"zone: Request.Write", mk("GET", "http://up/", "[fe80::1%25eth0]:80", nil)},
		{"non-ASCII host: Request.Write", mk("GET", "http://up/", "bücher.example:80", nil)},
		{"invalid host: Request.Write", mk("GET", "http://up/", "a b", nil)},
		{"opaque: Request.Write", mk("GET", "http:opaque", "up", nil)},
		{"body: Request.Write", withBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "path to escape" {
				tc.req.URL.Path, tc.req.URL.RawPath = "/a b/ü", ""
			}
			var want, got bytes.Buffer
			wbw, gbw := bufio.NewWriter(&want), bufio.NewWriter(&got)
			werr := tc.req.Write(wbw)
			gerr := writeRequestHead(gbw, tc.req)
			wbw.Flush()
			gbw.Flush()
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("error %v, Request.Write's %v", gerr, werr)
			}
			if got.String() != want.String() {
				t.Errorf("wrote\n%q\nRequest.Write wrote\n%q", got.String(), want.String())
			}
		})
	}
}

// FuzzWriteRequestHead: for any method, target, Host, header fields and
// Close, the request writer sends the bytes Request.Write sends (or fails
// as it does), with and without a body in memory. Header values with CR
// or LF must not start a second request upstream.
func FuzzWriteRequestHead(f *testing.F) {
	f.Add("GET", "http://10.0.0.1:8080/?size=1024", "up", "X-Request-Id", "abc", "User-Agent", "wrk", false)
	f.Add("POST", "http://up/a%2Fb/c%20d?q=1", "", "Connection", "keep-alive", "X-Nl", "a\r\nGET /x HTTP/1.1", true)
	f.Add("", "http://[::1]:80/", "[::1]:80", "Bad Name", "x", "Aa", " 3 ", false)
	f.Add("DELETE", "http://up", "bücher.example:80", "Host", "h", "Transfer-Encoding", "chunked", false)
	f.Fuzz(func(t *testing.T, method, target, host, k1, v1, k2, v2 string, close bool) {
		u, err := url.Parse(target)
		if err != nil {
			return
		}
		h := http.Header{}
		h[k1] = append(h[k1], v1)
		h[k2] = append(h[k2], v2)
		req := &http.Request{Method: method, URL: u, Host: host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Close: close}
		var want, got bytes.Buffer
		wbw, gbw := bufio.NewWriter(&want), bufio.NewWriter(&got)
		werr := req.Write(wbw)
		gerr := writeRequestHead(gbw, req)
		wbw.Flush()
		gbw.Flush()
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%+v: error %v, Request.Write's %v", req, gerr, werr)
		}
		if werr == nil && got.String() != want.String() {
			t.Fatalf("wrote\n%q\nRequest.Write wrote\n%q", got.String(), want.String())
		}

		// The same request with a body in memory, as the synchronous path
		// sends it when plainHead accepts the head.
		body := target + v1 + v2
		if body == "" || !plainHead(req) {
			return
		}
		req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
		want.Reset()
		got.Reset()
		if err := req.Write(wbw); err != nil {
			return // refused for its head: the synchronous path checks the same with plainHead
		}
		if err := writeHead(gbw, req, req.ContentLength); err != nil {
			t.Fatal(err)
		}
		gbw.WriteString(body)
		wbw.Flush()
		gbw.Flush()
		if got.String() != want.String() {
			t.Fatalf("with a body, wrote\n%q\nRequest.Write wrote\n%q", got.String(), want.String())
		}
	})
}

func BenchmarkWriteRequestHead(b *testing.B) {
	u, _ := url.Parse("http://10.0.0.1:8080/?size=1024")
	req := &http.Request{Method: "GET", URL: u, Host: "up", Header: http.Header{
		"Accept": {"*/*"}, "User-Agent": {"wrk"}, "X-Request-Id": {"0f8fad5b-d9cb-469f-a165-70867728950e"},
		"X-Forwarded-Proto": {"http"}, "X-Envoy-Peer-Metadata": {"ChwKDkFQUF9DT05UQUlORVJTEgoaCGNsaWVudA"}, "X-Envoy-Peer-Metadata-Id": {"sidecar~10.0.0.2~client.default~default.svc.cluster.local"},
	}}
	bw := bufio.NewWriterSize(discard{}, 4<<10)
	b.Run("RequestWrite", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req.Write(bw)
			bw.Flush()
		}
	})
	b.Run("writeRequestHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeRequestHead(bw, req)
			bw.Flush()
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestWriteHeadWithBodyMatchesRequestWrite: a head and an in-memory body
// written by the synchronous path are the bytes Request.Write sends.
func TestWriteHeadWithBodyMatchesRequestWrite(t *testing.T) {
	for _, tc := range []struct {
		method string
		h      http.Header
		close  bool
		body   string
	}{
		{"POST", http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"abc"}}, false, `{"a":1}`},
		{"PUT", http.Header{"User-Agent": {"fortio"}, "Content-Length": {"99"}, "Transfer-Encoding": {"chunked"}}, false, strings.Repeat("x", 1024)},
		{"PATCH", nil, true, "p"},
		{"DELETE", http.Header{"Connection": {"close"}}, true, strings.Repeat("y", 70000)},
		{"GET", http.Header{"Zz": {"1"}, "Aa": {"2"}}, false, "q"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			u, _ := url.Parse("http://up/p?x=1")
			h := tc.h
			if h == nil {
				h = http.Header{}
			}
			req := &http.Request{Method: tc.method, URL: u, Host: "up", Header: h, Close: tc.close,
				ContentLength: int64(len(tc.body)), Body: io.NopCloser(strings.NewReader(tc.body))}
			var want, got bytes.Buffer
			wbw, gbw := bufio.NewWriter(&want), bufio.NewWriter(&got)
			if err := req.Write(wbw); err != nil {
				t.Fatal(err)
			}
			if !plainHead(req) {
				t.Fatal("plainHead refused a plain head")
			}
			if err := writeHead(gbw, req, int64(len(tc.body))); err != nil {
				t.Fatal(err)
			}
			gbw.WriteString(tc.body)
			wbw.Flush()
			gbw.Flush()
			if got.String() != want.String() {
				t.Errorf("wrote\n%.300q\nRequest.Write wrote\n%.300q", got.String(), want.String())
			}
		})
	}
}

// cleanValue is what Request.Write sends for a header value: CR and LF
// as spaces, surrounding whitespace trimmed.
func TestCleanValue(t *testing.T) {
	want := func(v string) string {
		return strings.Trim(strings.NewReplacer("\n", " ", "\r", " ").Replace(v), " \t\n\r")
	}
	for _, v := range []string{"", "a", " a ", "\ta\t", "a\r\nb", "\r\n", " \r\n a \r\n ", "a b", "x\ny", "\t \t", "a\rb\nc"} {
		if got := cleanValue(v); got != want(v) {
			t.Errorf("cleanValue(%q) = %q, want %q", v, got, want(v))
		}
	}
}
