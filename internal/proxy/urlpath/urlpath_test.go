package urlpath

import (
	"net/url"
	"testing"
)

func TestEscapedAndPin(t *testing.T) {
	for _, tc := range []struct{ target, want string }{
		{"/plain", "/plain"},
		{"/a%2Fb", "/a%2Fb"},
		{"/admin%2Fsecret|x", "/admin%2Fsecret|x"},
		{`/a%2Fb\c`, `/a%2Fb\c`},
		{"/a%2fb^c{d}", "/a%2fb^c{d}"},
		{"/a%7Cb", "/a%7Cb"},
	} {
		u, err := url.ParseRequestURI(tc.target + "?q=1")
		if err != nil {
			t.Fatal(err)
		}
		if got := Escaped(u); got != tc.want {
			t.Errorf("Escaped(%s) = %s, want %s", tc.target, got, tc.want)
		}
		u.Scheme, u.Host = "http", "upstream:80"
		Pin(u)
		if got := u.RequestURI(); got != tc.want+"?q=1" {
			t.Errorf("%s: pinned RequestURI %s, want %s?q=1", tc.target, got, tc.want)
		}
	}
	// A RawPath that no longer matches Path (Path set alone) is ignored.
	u := &url.URL{Path: "/new", RawPath: "/old%2F|"}
	if got := Escaped(u); got != "/new" {
		t.Errorf("stale RawPath: %s", got)
	}
	// "//x" stays with Go's escaping.
	u, _ = url.ParseRequestURI("//x|y")
	u.Scheme, u.Host = "http", "upstream:80"
	Pin(u)
	if u.Opaque != "" {
		t.Errorf("//x|y: Opaque %q", u.Opaque)
	}
}
