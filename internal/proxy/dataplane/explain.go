package dataplane

import (
	"net/http"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// MatchRoute reports which route of rc an HTTP request would take,
// deciding exactly as the proxy's router does: the virtual host by the
// request's Host, then the first route whose path, headers and query
// match. It returns the indexes of the virtual host and of the route in
// rc; route is -1 when the virtual host has no matching route, and both
// are -1 when no virtual host serves the Host. It is for operator tools
// (weft explain), not the request path, and compiles rc on every call.
func MatchRoute(rc *route.RouteConfiguration, r *http.Request) (vhost, routeIdx int, err error) {
	t, err := compileRouteTable(rc)
	if err != nil {
		return -1, -1, err
	}
	vh := t.virtualHost(strings.ToLower(r.Host))
	if vh == nil {
		return -1, -1, nil
	}
	vhost = -1
	for i, v := range rc.GetVirtualHosts() {
		if v.GetName() == vh.name {
			vhost = i
			break
		}
	}
	re := vh.match(r)
	for j, e := range vh.routes {
		if e == re {
			return vhost, j, nil
		}
	}
	return vhost, -1, nil
}
