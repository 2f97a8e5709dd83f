package dataplane

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"weft.dev/weft/internal/xds/contract"
)

// corsFaultListener has Istio's filter order: cors, fault, router.
func corsFaultListener(t *testing.T, rds string) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix:     "out",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: rds}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: corsFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &corsv3.Cors{})}},
			{Name: faultFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &faultv3.HTTPFault{})}},
			{Name: routerFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}},
		},
	}
	return &listener.Listener{
		Name: "out", Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: hcmFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}}},
	}
}

// TestLocalReplyHeaders: the proxy's own replies after routing carry the
// route's (and the weighted cluster's) response headers and the CORS
// headers, as Envoy's router local replies do; fault aborts carry CORS
// only; NR carries nothing.
func TestLocalReplyHeaders(t *testing.T) {
	var hits atomic.Int64
	slow := statusUpstream(t, 200, 2*time.Second, &hits)
	policy := &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcher.StringMatcher{exact("https://good.example")}, ExposeHeaders: "x-route"}
	decorate := func(r *route.Route, v string) *route.Route {
		r.ResponseHeadersToAdd = []*core.HeaderValueOption{hvo("x-route", v, overwriteOrAdd)}
		r.TypedPerFilterConfig = corsAny(t, policy)
		return r
	}
	uh := decorate(toCluster("uh", prefixMatch("/uh"), "empty"), "uh")
	ut := decorate(withRetry(toCluster("ut", prefixMatch("/ut"), "slow"), nil, 100*time.Millisecond), "ut")
	nc := decorate(toCluster("nc", prefixMatch("/nc"), "missing"), "nc")
	split := decorate(toWeighted("split", prefixMatch("/split"), map[string]uint32{"empty": 1}), "split")
	split.GetRoute().GetWeightedClusters().Clusters[0].ResponseHeadersToAdd = []*core.HeaderValueOption{hvo("x-dest", "empty", overwriteOrAdd)}
	fi := decorate(toCluster("fi", prefixMatch("/fi"), "slow"), "fi")
	fi.TypedPerFilterConfig[faultFilterName] = mustAny(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: &typev3.FractionalPercent{Numerator: 100}}})

	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(
		edsCluster(t, "empty", false, ""), cla("empty"),
		edsCluster(t, "slow", false, ""), cla("slow", ep{Addr: slow}),
		routeConfig("r", vhost("svc", []string{"svc"}, uh, ut, nc, split, fi)),
		corsFaultListener(t, "r")))
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	good := map[string]string{"Origin": "https://good.example"}

	tests := []struct {
		name, path string
		hdr        map[string]string
		code       int
		want       map[string]string // response header → value ("" = absent)
	}{
		{"UH", "/uh", good, 503, map[string]string{"X-Route": "uh",
			"Access-Control-Allow-Origin": "https://good.example", "Access-Control-Expose-Headers": "x-route"}},
		{"UH other origin", "/uh", map[string]string{"Origin": "https://evil.example"}, 503,
			map[string]string{"X-Route": "uh", "Access-Control-Allow-Origin": ""}},
		{"UH no origin", "/uh", nil, 503, map[string]string{"X-Route": "uh", "Access-Control-Allow-Origin": ""}},
		{"UH grpc", "/uh", map[string]string{"Origin": "https://good.example", "Content-Type": "application/grpc"}, 200,
			map[string]string{"X-Route": "uh", "Grpc-Status": "14", "Access-Control-Allow-Origin": "https://good.example"}},
		{"UT", "/ut", good, 504, map[string]string{"X-Route": "ut", "Access-Control-Allow-Origin": "https://good.example"}},
		{"NC", "/nc", good, 503, map[string]string{"X-Route": "nc", "Access-Control-Allow-Origin": "https://good.example"}},
		{"weighted cluster UH", "/split", good, 503, map[string]string{"X-Route": "split", "X-Dest": "empty",
			"Access-Control-Allow-Origin": "https://good.example"}},
		{"fault abort: CORS, no route headers", "/fi", good, 418, map[string]string{"X-Route": "",
			"Content-Type": "text/plain", "Access-Control-Allow-Origin": "https://good.example"}},
		{"NR", "/nothing", good, 404, map[string]string{"X-Route": "", "Access-Control-Allow-Origin": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := do(t, c, "GET", base+tc.path, "svc", tc.hdr)
			if res.code != tc.code {
				t.Fatalf("status %d, want %d (body %q)", res.code, tc.code, res.body)
			}
			for k, v := range tc.want {
				if got := strings.Join(res.header.Values(k), ","); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}
