package dataplane

import (
	"net/http"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/route"
)

// MatchRoute reports which route of rc an HTTP request would take,
// deciding exactly as the proxy's router does: the virtual host by the
// request's Host, then the first route whose path, headers and query
// match. It returns the indexes of the virtual host and of the route in
// rc; route is -1 when the virtual host has no matching route, and both
// are -1 when no virtual host serves the Host. It is for operator tools
// (weft explain), not the request path, and compiles rc on every call.
func MatchRoute(rc *routev3.RouteConfiguration, r *http.Request) (vhost, routeIdx int, err error) {
	t, err := route.Compile(rc, httpFilters)
	if err != nil {
		return -1, -1, err
	}
	vhost, routeIdx = t.Match(r)
	return vhost, routeIdx, nil
}
