package dataplane

import (
	"io"
	"net/http"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkForwardOutboundFilters is the one-hop request of
// BenchmarkResilienceOverhead on an outbound listener with the HTTP
// filters the control plane generates (cors, fault, router): on a route
// that configures none of them (the common case: the filters must cost
// nothing), and on a route with a CORS policy the request's Origin
// triggers (the filter chain runs and decorates the response).
func BenchmarkForwardOutboundFilters(b *testing.B) {
	up := benchUpstream(b)
	m := &hcm.HttpConnectionManager{
		StatPrefix:     "out",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: "r"}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: corsFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(b, &corsv3.Cors{})}},
			{Name: faultFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(b, &faultv3.HTTPFault{})}},
			{Name: routerFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(b, &routerv3.Router{})}},
		},
	}
	out := &listener.Listener{
		Name: "out", Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: hcmFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(b, m)}}}}},
	}
	for _, tc := range []struct {
		name string
		cors bool
	}{{"route=plain", false}, {"route=cors", true}} {
		b.Run(tc.name, func(b *testing.B) {
			r := toCluster("default", prefixMatch("/"), "outbound|80||svc")
			if tc.cors {
				r.TypedPerFilterConfig = corsAny(b, &corsv3.CorsPolicy{
					AllowOriginStringMatch: []*matcher.StringMatcher{exact("https://app.example")}, ExposeHeaders: "x-trace"})
			}
			d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
			mustApply(b, d, resources(staticCluster(b, "outbound|80||svc", up),
				routeConfig("r", vhost("v", []string{"*"}, r)), out))
			url := "http://" + d.ListenerAddr("out").String() + "/"
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "svc"
				req.Header.Set("Origin", "https://app.example")
				for pb.Next() {
					resp, err := cl.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || (tc.cors && resp.Header.Get("Access-Control-Allow-Origin") == "") {
						b.Fatalf("status %d, CORS headers %v", resp.StatusCode, resp.Header)
					}
				}
			})
		})
	}
}
