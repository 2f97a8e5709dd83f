package route

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"

	"weft.dev/weft/internal/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	mustAny     = proxytest.MustAny
	routeConfig = proxytest.RouteConfig
	vhost       = proxytest.VHost
	prefixMatch = proxytest.PrefixMatch
	toCluster   = proxytest.ToCluster
	toWeighted  = proxytest.ToWeighted
)

func hdr(name string, sm *matcherv3.StringMatcher, invert bool) *route.HeaderMatcher {
	return &route.HeaderMatcher{Name: name, InvertMatch: invert,
		HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func hvo(k, v string, a core.HeaderValueOption_HeaderAppendAction) *core.HeaderValueOption {
	return &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: v}, AppendAction: a}
}
