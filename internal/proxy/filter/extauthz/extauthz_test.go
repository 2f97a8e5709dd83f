package extauthz

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
)

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// upstreamFunc serves a filter's calls with a handler, recording them.
type upstreamFunc struct {
	h     http.HandlerFunc
	calls []*http.Request
}

func (u *upstreamFunc) RoundTrip(_ context.Context, cluster string, req *http.Request) (*http.Response, error) {
	u.calls = append(u.calls, req)
	rec := httptest.NewRecorder()
	u.h(rec, req)
	return rec.Result(), nil
}

func httpConfig(cluster string) *extauthzv3.ExtAuthz {
	return &extauthzv3.ExtAuthz{
		TransportApiVersion: core.ApiVersion_V3,
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			PathPrefix: "/check",
			ServerUri:  &core.HttpUri{Uri: "http://authz", HttpUpstreamType: &core.HttpUri_Cluster{Cluster: cluster}},
			AuthorizationResponse: &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "x-user-"}, IgnoreCase: true}}},
			},
		}},
		AllowedHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x-ext-authz"}, IgnoreCase: true}}},
		FilterEnabledMetadata: &matcherv3.MetadataMatcher{
			Filter: "envoy.filters.http.rbac",
			Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "istio_ext_authz_shadow_effective_policy_id"}}},
			Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "istio-ext-authz-p-ns["}}}},
		},
	}
}

func stream(target string, hdr map[string]string, matched bool, up filter.Upstream) *filter.Stream {
	r := httptest.NewRequest("GET", "http://orders"+target, nil)
	r.RequestURI = target
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	s := filter.NewStream(r, http.Header{})
	s.Upstream = up
	if matched {
		s.SetMetadata("envoy.filters.http.rbac", map[string]any{"istio_ext_authz_shadow_effective_policy_id": "istio-ext-authz-p-ns[default]-policy[x]-rule[0]"})
	}
	return s
}

// The HTTP check: only requests the shadow rules matched are sent, with
// the path prefix, the allowed headers and no others; an allow copies the
// allowed headers upstream; a denial is answered with the service's
// status, body and headers, flag UAEX; a 5xx is an error (403).
func TestHTTPCheck(t *testing.T) {
	up := &upstreamFunc{h: func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Ext-Authz") {
		case "allow":
			w.Header().Set("X-User-Id", "alice")
			w.Header().Set("X-Other", "no")
		case "crash":
			w.WriteHeader(500)
		default:
			w.Header().Set("X-Reason", "no")
			w.WriteHeader(401)
			io.WriteString(w, "go away")
		}
	}}
	f, err := Factory{}.New(anyOf(t, httpConfig("outbound|8000||authz")))
	if err != nil {
		t.Fatal(err)
	}

	if got := f.DecodeHeaders(stream("/a", nil, false, up)); got != filter.Continue || len(up.calls) != 0 {
		t.Fatalf("not matched: %v, %d calls; want Continue without a call", got, len(up.calls))
	}

	s := stream("/a?b=1", map[string]string{"x-ext-authz": "allow", "cookie": "secret", "authorization": "Bearer t"}, true, up)
	if got := f.DecodeHeaders(s); got != filter.Continue {
		t.Fatalf("allowed: %v", got)
	}
	call := up.calls[0]
	if call.URL.RequestURI() != "/check/a?b=1" || call.Host != "orders" || call.Header.Get("Cookie") != "" ||
		call.Header.Get("Authorization") != "Bearer t" || call.Header.Get("Content-Length") != "0" {
		t.Errorf("check request %s %s host %q headers %v", call.Method, call.URL.RequestURI(), call.Host, call.Header)
	}
	if s.Request.Header.Get("X-User-Id") != "alice" || s.Request.Header.Get("X-Other") != "" {
		t.Errorf("request headers after allow: %v", s.Request.Header)
	}

	s = stream("/a", nil, true, up)
	if got := f.DecodeHeaders(s); got != filter.Stop {
		t.Fatalf("denied: %v", got)
	}
	a, reply := s.Answer()
	if a != filter.AnsweredLocalReply || reply.Status != 401 || reply.Body != "go away" || reply.Flag != FlagUnauthorized || s.ResponseHeader().Get("X-Reason") != "no" {
		t.Errorf("denial %v %+v headers %v", a, reply, s.ResponseHeader())
	}

	s = stream("/a", map[string]string{"x-ext-authz": "crash"}, true, up)
	f.DecodeHeaders(s)
	if _, reply := s.Answer(); reply.Status != 403 || reply.Flag != FlagUnauthorized {
		t.Errorf("5xx: %+v, want 403 UAEX (status_on_error's default)", reply)
	}
}

// Fields the proxy cannot honour are refused, naming them.
func TestNewRefuses(t *testing.T) {
	for field, mutate := range map[string]func(*extauthzv3.ExtAuthz){
		"with_request_body": func(c *extauthzv3.ExtAuthz) { c.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: 10} },
		"clear_route_cache": func(c *extauthzv3.ExtAuthz) { c.ClearRouteCache = true },
		"cluster":           func(c *extauthzv3.ExtAuthz) { c.GetHttpService().ServerUri.HttpUpstreamType = nil },
		"path_prefix":       func(c *extauthzv3.ExtAuthz) { c.GetHttpService().PathPrefix = "check" },
		"services":          func(c *extauthzv3.ExtAuthz) { c.Services = nil },
	} {
		c := httpConfig("outbound|8000||authz")
		mutate(c)
		if _, err := (Factory{}).New(anyOf(t, c)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming it", field, err)
		}
	}
}
