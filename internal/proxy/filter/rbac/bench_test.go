package rbac

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// benchConfig is an ALLOW filter with ten policies shaped like Istio's
// translation of ten AuthorizationPolicy rules: each allows one service
// account (a regex on the peer's SPIFFE ID) some methods on some paths.
var benchConfig = func() string {
	var b strings.Builder
	b.WriteString("rules:\n  policies:\n")
	for i := range 10 {
		fmt.Fprintf(&b, `    ns[prod]-policy[svc%d]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - header: {name: ":method", stringMatch: {exact: GET}}
              - header: {name: ":method", stringMatch: {exact: HEAD}}
          - orRules:
              rules:
              - urlPath: {path: {prefix: "/api/v%d/"}}
              - urlPath: {path: {exact: "/healthz"}}
          - notRule:
              orRules:
                rules:
                - urlPath: {path: {prefix: "/api/v%d/admin"}}
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.+/ns/prod/(.+/|)sa/client%d(/.+)?"}}}
          - orIds:
              ids:
              - directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}
`, i, i, i, i)
	}
	return b.String()
}()

type benchRequest struct {
	name string
	req  *Request
	want bool
}

func benchRequests() []benchRequest {
	mk := func(sa, path string) *Request {
		return &Request{
			Method:          "GET",
			Path:            path,
			Authority:       "api.prod.svc.cluster.local:8080",
			Scheme:          "http",
			Header:          http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}, "X-Request-Id": {"5f1c"}},
			DestinationIP:   netip.MustParseAddr("10.0.0.5"),
			DestinationPort: 8080,
			DirectRemoteIP:  netip.MustParseAddr("10.0.0.9"),
			Peer:            &Peer{URISANs: []string{"spiffe://cluster.local/ns/prod/sa/" + sa}},
		}
	}
	return []benchRequest{
		{"last policy matches", mk("client9", "/api/v9/items?page=2"), true},
		{"first policy matches", mk("client0", "/api/v0/items"), true},
		{"no policy matches", mk("stranger", "/api/v9/items"), false},
		{"excluded path", mk("client9", "/api/v9/admin/users"), false},
	}
}

// BenchmarkEvaluate measures one decision with ten Istio-shaped policies.
func BenchmarkEvaluate(b *testing.B) {
	f := compileConfig(b, benchConfig)
	for _, r := range benchRequests() {
		b.Run(strings.ReplaceAll(r.name, " ", "_"), func(b *testing.B) {
			if d := f.Evaluate(r.req); d.Allowed != r.want {
				b.Fatalf("Allowed = %v, want %v", d.Allowed, r.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				f.Evaluate(r.req)
			}
		})
	}
}

// BenchmarkCompile measures compiling the ten-policy config, which a
// config push pays once per listener.
func BenchmarkCompile(b *testing.B) {
	cfg := parseConfig(b, benchConfig)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(cfg); err != nil {
			b.Fatal(err)
		}
	}
}
