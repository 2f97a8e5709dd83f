package cors

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func TestCORSPolicy(t *testing.T) {
	pol := &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://good.example"),
			{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".trusted.example"}}},
		AllowMethods: "GET,POST", AllowHeaders: "x-token", ExposeHeaders: "x-trace", MaxAge: "600",
		AllowCredentials: wrapperspb.Bool(true),
	}
	tests := []struct {
		name      string
		pol       func(*corsv3.CorsPolicy)
		method    string
		hdr       map[string]string
		preflight bool
		want      http.Header // after preflight (if answered) or decorate
	}{
		{"preflight allowed", nil, "OPTIONS", map[string]string{"Origin": "https://good.example", "Access-Control-Request-Method": "POST"}, true,
			http.Header{"Access-Control-Allow-Origin": {"https://good.example"}, "Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Allow-Methods": {"GET,POST"}, "Access-Control-Allow-Headers": {"x-token"}, "Access-Control-Max-Age": {"600"},
				"Access-Control-Expose-Headers": {"x-trace"}}},
		{"preflight suffix", nil, "OPTIONS", map[string]string{"Origin": "https://a.trusted.example", "Access-Control-Request-Method": "GET"}, true,
			http.Header{"Access-Control-Allow-Origin": {"https://a.trusted.example"}, "Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Allow-Methods": {"GET,POST"}, "Access-Control-Allow-Headers": {"x-token"}, "Access-Control-Max-Age": {"600"},
				"Access-Control-Expose-Headers": {"x-trace"}}},
		// "*" answers with what the preflight asks for (Envoy's rule).
		{"preflight wildcard methods and headers", func(p *corsv3.CorsPolicy) { p.AllowMethods, p.AllowHeaders, p.ExposeHeaders = "*", "*", "" },
			"OPTIONS", map[string]string{"Origin": "https://good.example", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-a, x-b"}, true,
			http.Header{"Access-Control-Allow-Origin": {"https://good.example"}, "Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Allow-Methods": {"PUT"}, "Access-Control-Allow-Headers": {"x-a, x-b"}, "Access-Control-Max-Age": {"600"}}},
		{"preflight other origin forwarded", nil, "OPTIONS", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, false, http.Header{}},
		{"preflight other origin ignored", func(p *corsv3.CorsPolicy) { p.ForwardNotMatchingPreflights = wrapperspb.Bool(false) },
			"OPTIONS", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, true, http.Header{}},
		{"options without request method", nil, "OPTIONS", map[string]string{"Origin": "https://good.example"}, false,
			http.Header{"Access-Control-Allow-Origin": {"https://good.example"}, "Access-Control-Allow-Credentials": {"true"}, "Access-Control-Expose-Headers": {"x-trace"}}},
		{"actual request", nil, "GET", map[string]string{"Origin": "https://good.example"}, false,
			http.Header{"Access-Control-Allow-Origin": {"https://good.example"}, "Access-Control-Allow-Credentials": {"true"}, "Access-Control-Expose-Headers": {"x-trace"}}},
		{"actual request other origin", nil, "GET", map[string]string{"Origin": "https://evil.example"}, false, http.Header{}},
		{"no origin", nil, "GET", nil, false, http.Header{}},
		{"star allows all", func(p *corsv3.CorsPolicy) {
			p.AllowOriginStringMatch = []*matcherv3.StringMatcher{exact("*")}
			p.AllowCredentials = nil
			p.ExposeHeaders = ""
		},
			"GET", map[string]string{"Origin": "https://any.example"}, false, http.Header{"Access-Control-Allow-Origin": {"https://any.example"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := proto.Clone(pol).(*corsv3.CorsPolicy)
			if tc.pol != nil {
				tc.pol(p)
			}
			c, err := Factory{}.ParsePerRoute(proxytest.MustAny(t, p))
			if err != nil {
				t.Fatal(err)
			}
			f, err := Factory{}.New(nil)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(tc.method, "/", nil)
			for k, v := range tc.hdr {
				r.Header.Set(k, v)
			}
			s := filter.NewStream(r, http.Header{})
			s.PerRoute = c
			answered := f.DecodeHeaders(s) == filter.Stop
			if answered != tc.preflight {
				t.Fatalf("preflight answered = %v, want %v", answered, tc.preflight)
			}
			h := s.ResponseHeader()
			if answered {
				if a, reply := s.Answer(); a != filter.AnsweredStatus || reply.Status != 200 {
					t.Errorf("preflight answered %v %d, want status 200", a, reply.Status)
				}
			} else {
				h = http.Header{}
				f.(filter.Encoder).EncodeHeaders(s, h)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("headers = %v, want %v", h, tc.want)
			}
		})
	}
}

func TestParsePerRouteErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) any
		want string
	}{
		{"wrong type", func(t *testing.T) any { return proxytest.MustAny(t, &corsv3.Cors{}) }, "want *corsv3.CorsPolicy"},
		{"bad origin matcher", func(t *testing.T) any {
			return proxytest.MustAny(t, &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{{}}})
		}, "allow_origin_string_match[0]: missing match pattern"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Factory{}.ParsePerRoute(tc.cfg(t).(*anypb.Any))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
}
