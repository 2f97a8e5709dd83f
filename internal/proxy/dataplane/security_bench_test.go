package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/xds/contract"
)

// rbacTenPolicies is an ALLOW filter with ten policies shaped like Istio's
// translation of ten AuthorizationPolicy rules: each admits the request
// principals of one issuer to GET and HEAD under its own /api/v<i>/
// prefix, but not to /api/v<i>/admin. The benchmark's request matches the
// last one, so all ten are tried.
var rbacTenPolicies = func() string {
	var b strings.Builder
	b.WriteString("rules:\n  action: ALLOW\n  policies:\n")
	for i := range 10 {
		fmt.Fprintf(&b, `    ns[bench]-policy[api-v%d]-rule[0]:
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
          - notRule:
              orRules:
                rules:
                - urlPath: {path: {prefix: "/api/v%d/admin"}}
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {exact: "https://issuer.example"}}}
`, i, i, i)
	}
	return b.String()
}()

// BenchmarkForwardInboundSecurity is the inbound hop of
// BenchmarkForwardHTTP1 (8 clients in parallel over keep-alive
// connections, a 1 KiB answer) with Istio's security filters in front of
// the router, against the same hop without them:
//
//   - filters=none: the router only;
//   - filters=rbac-deny: one DENY policy (/admin), which the request
//     does not match;
//   - filters=jwt+rbac10: RequestAuthentication and AuthorizationPolicy
//     as Istio translates them — the JWT filter (one provider, ES256), a
//     DENY filter, then an ALLOW filter of ten policies on request
//     principals, methods and paths; the request carries a valid token
//     (verified once, then from the cache) and matches the tenth policy.
func BenchmarkForwardInboundSecurity(b *testing.B) {
	upstream := benchUpstream(b)
	sg := newSigner(b)
	tok := "Bearer " + sg.token(b, nil)
	for _, tc := range []struct {
		name    string
		filters func() []*hcm.HttpFilter
		hdr     string
	}{
		{"filters=none", func() []*hcm.HttpFilter { return nil }, ""},
		{"filters=rbac-deny", func() []*hcm.HttpFilter { return []*hcm.HttpFilter{rbacFilter(b, rbacDenyAdmin)} }, ""},
		{"filters=jwt+rbac10", func() []*hcm.HttpFilter {
			return []*hcm.HttpFilter{jwtConfig(b, sg.jwks), rbacFilter(b, rbacDenyAdmin), rbacFilter(b, rbacTenPolicies)}
		}, tok},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "bench"}, nil)
			mustApply(b, d, resourcesAny(staticCluster(b, "inbound|9080||", upstream), inboundWithFilters(b, tc.filters()...)))
			url := "http://" + d.ListenerAddr("in").String() + "/api/v9/items?page=2"
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "api.bench.svc.cluster.local:9080"
				if tc.hdr != "" {
					req.Header.Set("Authorization", tc.hdr)
				}
				for pb.Next() {
					resp, err := cl.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}

// BenchmarkInboundSecurityFilters is the CPU the security filters of
// BenchmarkForwardInboundSecurity's jwt+rbac10 chain add to one request,
// without the sockets: JWT (a cached token), RBAC DENY, RBAC ALLOW with ten
// policies, run on a fresh stream as the chain runner does.
func BenchmarkInboundSecurityFilters(b *testing.B) {
	sg := newSigner(b)
	tok := []string{"Bearer " + sg.token(b, nil)}
	reg := newHTTPFilters(filterOptions{})
	var chain []filter.Filter
	for _, hf := range []*hcm.HttpFilter{jwtConfig(b, sg.jwks), rbacFilter(b, rbacDenyAdmin), rbacFilter(b, rbacTenPolicies)} {
		f, err := reg[hf.GetName()].New(hf.GetTypedConfig())
		if err != nil {
			b.Fatal(err)
		}
		chain = append(chain, f)
	}
	r := httptest.NewRequest("GET", "http://api.bench.svc.cluster.local:9080/api/v9/items?page=2", nil)
	r.RequestURI = "/api/v9/items?page=2"
	r.RemoteAddr = "127.0.0.1:40000"
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 9080}))
	respHeader := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		r.Header = http.Header{"Authorization": tok, "User-Agent": {"bench"}}
		s := filter.NewStream(r, respHeader)
		for _, f := range chain {
			if f.DecodeHeaders(s) != filter.Continue {
				b.Fatal("refused")
			}
		}
	}
}
