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

// ParseRequestURI gives what url.ParseRequestURI gives, fast path or not.
func TestParseRequestURI(t *testing.T) {
	for _, raw := range requestTargets {
		checkParseRequestURI(t, raw)
	}
}

var requestTargets = []string{
	"/", "/a/b", "/a/b?x=1&y=2", "/a?", "/a??", "/a?b?c", "/a?#f", "/a#f", "/a%2Fb", "/a%zz",
	"/a b", "/a\tb", "/a?x\x01", "/a?x\x7f", "/a\x7f", "/a|b", "/a!b*c(d)'", "/~user/$x&y+z,w:v;u=t@s",
	"//double", "*", "", "a/b", "http://host/p?q", "http://[::1]:80/", "/ü", "/a?ü=1", "/a?%zz",
	"/a/./b/../c", "/.well-known/x", "/a;b=c", "/p?q=a:b@c/d",
}

func checkParseRequestURI(t *testing.T, raw string) {
	t.Helper()
	want, wantErr := url.ParseRequestURI(raw)
	var got url.URL
	gotErr := ParseRequestURI(raw, &got)
	if (wantErr != nil) != (gotErr != nil) {
		t.Fatalf("%q: error %v, url.ParseRequestURI's %v", raw, gotErr, wantErr)
	}
	if wantErr != nil {
		if gotErr.Error() != wantErr.Error() {
			t.Errorf("%q: error %q, want %q", raw, gotErr, wantErr)
		}
		return
	}
	if got != *want {
		t.Errorf("%q: %#v, want %#v", raw, got, *want)
	}
}

func FuzzParseRequestURI(f *testing.F) {
	for _, raw := range requestTargets {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkParseRequestURI(t, raw) })
}

// The plain target of most requests costs no allocation.
func TestParseRequestURIAllocs(t *testing.T) {
	var u url.URL
	if n := testing.AllocsPerRun(100, func() { ParseRequestURI("/api/v1/items?limit=10", &u) }); n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
}

func BenchmarkParseRequestURI(b *testing.B) {
	const raw = "/api/v1/items/1234?limit=10&offset=20"
	b.Run("url", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			url.ParseRequestURI(raw)
		}
	})
	b.Run("urlpath", func(b *testing.B) {
		b.ReportAllocs()
		var u url.URL
		for b.Loop() {
			ParseRequestURI(raw, &u)
		}
	})
}
