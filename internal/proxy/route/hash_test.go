package route

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRequestHash(t *testing.T) {
	pols, err := compileHashPolicies([]*route.RouteAction_HashPolicy{
		{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: &route.RouteAction_HashPolicy_Cookie{Name: "sticky", Path: "/", Ttl: durationpb.New(3600e9)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "http://svc/", nil)
	w := httptest.NewRecorder()
	k := requestHash(pols, r, w)
	sc := w.Header().Get("Set-Cookie")
	if !k.ok || !strings.HasPrefix(sc, `sticky="`) || !strings.Contains(sc, "Max-Age=3600; Path=/; HttpOnly") {
		t.Fatalf("no cookie: hash %v, Set-Cookie %q", k, sc)
	}
	val := strings.Trim(strings.SplitN(strings.TrimPrefix(sc, "sticky="), ";", 2)[0], `"`)
	r2 := httptest.NewRequest("GET", "http://svc/", nil)
	r2.AddCookie(&http.Cookie{Name: "sticky", Value: val})
	w2 := httptest.NewRecorder()
	if k2 := requestHash(pols, r2, w2); k2 != k || w2.Header().Get("Set-Cookie") != "" {
		t.Errorf("with the cookie: hash %v (want %v), Set-Cookie %q (want none)", k2, k, w2.Header().Get("Set-Cookie"))
	}

	for _, tc := range []struct {
		name string
		pol  *route.RouteAction_HashPolicy
		req  func(*http.Request)
		want bool
	}{
		{"header", &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}},
			func(r *http.Request) { r.Header.Set("X-User", "a") }, true},
		{"header absent", &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}},
			func(*http.Request) {}, false},
		{"query", &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &route.RouteAction_HashPolicy_QueryParameter{Name: "u"}}},
			func(r *http.Request) { r.URL.RawQuery = "u=7" }, true},
		{"source ip", &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}},
			func(*http.Request) {}, true},
		{"cookie without ttl is not generated", &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: &route.RouteAction_HashPolicy_Cookie{Name: "c"}}},
			func(*http.Request) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pols, err := compileHashPolicies([]*route.RouteAction_HashPolicy{tc.pol})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "http://svc/", nil)
			tc.req(r)
			if k := requestHash(pols, r, httptest.NewRecorder()); k.ok != tc.want {
				t.Errorf("hash ok = %v, want %v", k.ok, tc.want)
			}
		})
	}
}
