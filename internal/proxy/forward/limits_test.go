package forward

import (
	"net/http"
	"testing"
)

func TestValidHTTP1RequestLine(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		ok             bool
	}{
		{"GET", "/a/b?c=d&e=%20", true},
		{"OPTIONS", "*", true},
		{"GET", "http://svc:8080/x?y", true},
		{"GET", "HTTP://svc", true},
		{"CONNECT", "svc:443", true},
		{"PURGE", "/", true},
		{"MSEARCH", "/", true},
		{"FOO", "/", false},
		{"get", "/", false},
		{"GET", "/caf\xc3\xa9", false},
		{"GET", "/a\x7f", false},
		{"GET", "/a\tb", true},
		{"GET", "svc/x", false},
		{"GET", "1http://svc/", false},
		{"GET", "http:/svc", false},
		{"GET", "http://a@@b/", false},
		{"GET", "http://a@b/", true},
		{"GET", "http://a\"b/", false},
		{"GET", "", false},
	} {
		r := &http.Request{Method: tc.method, RequestURI: tc.target, ProtoMajor: 1, ProtoMinor: 1}
		if got := validHTTP1RequestLine(r); got != tc.ok {
			t.Errorf("%s %q: valid = %v, want %v", tc.method, tc.target, got, tc.ok)
		}
	}
	if !validHTTP1RequestLine(&http.Request{Method: "FOO", RequestURI: "/", ProtoMajor: 2}) {
		t.Error("HTTP/2 requests are not checked against the HTTP/1 method list")
	}
}
