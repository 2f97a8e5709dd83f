package forward

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Envoy's path_utility_test.cc cases, and the ones Istio's path-based
// authorization depends on.
func TestCanonicalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/xyz":               "/xyz",
		"/x/y/z":             "/x/y/z",
		"/a/b/../c":          "/a/c",
		"/a/b/./c":           "/a/b/c",
		"a/b/../c":           "/a/c",
		"/a/b/../../../../c": "/c",
		`/a/..\c`:            "/c",
		"/%c0%af":            "/%c0%af",
		"/%5c%25":            "/%5c%25",
		"/a/b/%2E%2E/c":      "/a/c",
		"/a/b/%2e%2e/c":      "/a/c",
		"/a/b/%2E./c":        "/a/c",
		"/a/b/%2E/c":         "/a/b/c",
		"..":                 "/",
		"/../a/b":            "/a/b",
		"/./a/b":             "/a/b",
		"/A/B/C":             "/A/B/C",
		"/a/%2F%2f/c":        "/a/%2F%2f/c",
		"/a/.":               "/a/",
		"/a/..":              "/",
		"/.":                 "/",
		"":                   "/",
		"/.hidden/x":         "/.hidden/x",
		"/a/..b/c":           "/a/..b/c",
		"/%41%62c":           "/Abc",
		"/a b":               "/a%20b",
		"/\xc3\xa9":          "/%C3%A9",
		"/public/../admin/x": "/admin/x",
		`/public\..\admin`:   "/admin",
		"//admin":            "//admin", // merge_slashes' job, not normalize_path's
		"/%%300":             "/%2500",  // Chromium's nested escapes: never "%00"
		"/%%30%30":           "/%2500",
		"/%%3041":            "/%25041",
	} {
		got, ok := canonicalPath(in)
		if !ok || got != want {
			t.Errorf("canonicalPath(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"} {
		if got, ok := canonicalPath(in); ok {
			t.Errorf("canonicalPath(%q) = %q, want invalid", in, got)
		}
	}
}

func TestMergeSlashes(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"a//b/c":    "a/b/c",
		"/a//b/c/":  "/a/b/c/",
		"a//b/c/":   "a/b/c/",
		"/a":        "/a",
		"//a/b/c":   "/a/b/c",
		"/a//b/c":   "/a/b/c",
		"/a/b/c//":  "/a/b/c/",
		"/a///b/c":  "/a/b/c",
		"/a////b/c": "/a/b/c",
		"//admin/x": "/admin/x",
	} {
		if got := mergeSlashes(in); got != want {
			t.Errorf("mergeSlashes(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPathOptions(t *testing.T) {
	norm := PathOptions{Normalize: true}
	merge := PathOptions{Normalize: true, MergeSlashes: true}
	for _, tc := range []struct {
		o       PathOptions
		in      string
		want    string
		verdict pathVerdict
	}{
		{PathOptions{}, "/a/../b", "/a/../b", pathContinue},
		{norm, "/a/../b", "/b", pathContinue},
		{norm, "//a/./b", "//a/b", pathContinue},
		{merge, "//a/./b//", "/a/b/", pathContinue},
		{merge, "/a/%2e%2e//b", "/b", pathContinue},
		{norm, "/a%00", "", pathReject},
		{PathOptions{EscapedSlashes: RejectEscapedSlashes}, "/a%2fb", "", pathReject},
		{PathOptions{EscapedSlashes: RejectEscapedSlashes}, "/a/b", "/a/b", pathContinue},
		{PathOptions{EscapedSlashes: UnescapeAndForward}, "/a%2Fb%5cc", `/a/b\c`, pathContinue},
		{PathOptions{Normalize: true, EscapedSlashes: UnescapeAndForward}, "/a%2F..%5Cb", "/b", pathContinue},
		{PathOptions{Normalize: true, EscapedSlashes: UnescapeAndRedirect}, "/x/a%2F..%2Fb", "/x/b", pathRedirect},
		{PathOptions{EscapedSlashes: UnescapeAndRedirect}, "/a/b", "/a/b", pathContinue},
		{PathOptions{EscapedSlashes: KeepEscapedSlashes, Normalize: true}, "/admin%2Fx", "/admin%2Fx", pathContinue},
	} {
		got, v := tc.o.apply(tc.in)
		if v != tc.verdict || (v != pathReject && got != tc.want) {
			t.Errorf("%+v.apply(%q) = %q, %v; want %q, %v", tc.o, tc.in, got, v, tc.want, tc.verdict)
		}
	}
}

// TestNormalizeRequestPath: the request's URL and RequestURI change
// together, the query is kept, and refusals and redirects are answered.
func TestNormalizeRequestPath(t *testing.T) {
	o := PathOptions{Normalize: true, MergeSlashes: true, EscapedSlashes: UnescapeAndRedirect}
	for _, tc := range []struct {
		target                    string
		code                      int // 0: goes on
		path, rawPath, requestURI string
		location                  string
	}{
		{target: "/a/b?x=1", path: "/a/b", requestURI: "/a/b?x=1"},
		{target: "/public/..//admin/%41?q=/../", path: "/admin/A", rawPath: "/admin/A", requestURI: "/admin/A?q=/../"},
		{target: "/a/%2Fb?x", code: 307, location: "/a/b?x"},
		{target: "/a%00", code: 400},
		{target: "/a#frag", code: 400},
	} {
		r := httptest.NewRequest("GET", "http://svc"+tc.target, nil)
		r.RequestURI = tc.target
		w := httptest.NewRecorder()
		var q request
		ok := normalizeRequestPath(w, r, &o, &q)
		if tc.code != 0 {
			if ok || w.Code != tc.code || w.Header().Get("Location") != tc.location {
				t.Errorf("%s: goes on %v, %d Location %q; want %d %q", tc.target, ok, w.Code, w.Header().Get("Location"), tc.code, tc.location)
			}
			continue
		}
		if !ok || r.URL.Path != tc.path || r.URL.RawPath != tc.rawPath || r.RequestURI != tc.requestURI {
			t.Errorf("%s: goes on %v, Path %q RawPath %q RequestURI %q; want %q %q %q", tc.target, ok,
				r.URL.Path, r.URL.RawPath, r.RequestURI, tc.path, tc.rawPath, tc.requestURI)
		}
	}
	// A fragment is refused even when the listener normalizes nothing.
	r := httptest.NewRequest("GET", "/a", nil)
	r.RequestURI = "/a#b"
	w := httptest.NewRecorder()
	var q request
	if normalizeRequestPath(w, r, &PathOptions{}, &q) || w.Code != http.StatusBadRequest {
		t.Errorf("fragment: %d, want 400", w.Code)
	}
}

func TestRemoteIP(t *testing.T) {
	for _, tc := range []struct {
		l    Listener
		xff  []string
		want string
	}{
		{Listener{}, nil, ""},
		{Listener{}, []string{"10.0.0.1"}, "10.0.0.1"},
		{Listener{}, []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.2"},
		{Listener{}, []string{"10.0.0.1", "10.0.0.3"}, "10.0.0.3"},
		{Listener{XFFTrustedHops: 1}, []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{Listener{XFFTrustedHops: 1}, []string{"10.0.0.1", "10.0.0.2"}, "10.0.0.1"},
		{Listener{XFFTrustedHops: 2}, []string{"10.0.0.1, 10.0.0.2"}, ""},
		{Listener{}, []string{"not-an-ip"}, ""},
		{Listener{}, []string{" ::ffff:10.0.0.9 "}, "10.0.0.9"},
		{Listener{UseRemoteAddress: true}, []string{"10.0.0.1"}, ""},
		{Listener{UseRemoteAddress: true, XFFTrustedHops: 1}, []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.2"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.xff != nil {
			r.Header["X-Forwarded-For"] = tc.xff
		}
		got := remoteIP(r, &tc.l)
		if (tc.want == "" && got.IsValid()) || (tc.want != "" && got.String() != tc.want) {
			t.Errorf("%+v %q: %v, want %q", tc.l, tc.xff, got, tc.want)
		}
	}
}

// FuzzCanonicalPath: whatever a client sends, a normalized path starts
// with '/', has no dot segment left, and normalizing it again changes
// nothing (a policy and the application see the same path).
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/a/b/../c", `/a/..\c`, "/%2e%2E/x", "a/./b", "/%41%zz%", "/\xff/ /.", "//a//..//b/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := canonicalPath(in)
		if !ok {
			return
		}
		if out == "" || out[0] != '/' {
			t.Fatalf("canonicalPath(%q) = %q: not absolute", in, out)
		}
		for seg := range strings.SplitSeq(out, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("canonicalPath(%q) = %q: dot segment left", in, out)
			}
		}
		if again, ok := canonicalPath(out); !ok || again != out {
			t.Fatalf("canonicalPath(%q) = %q, then %q (%v)", in, out, again, ok)
		}
		if m := mergeSlashes(out); mergeSlashes(m) != m {
			t.Fatalf("mergeSlashes not idempotent on %q", out)
		}
	})
}
