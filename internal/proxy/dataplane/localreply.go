package dataplane

import "net/http"

// replyHeaders is what decorates the proxy's own replies to one request, as
// Envoy decorates its local replies:
//
//   - once the router has the request (after the fault filter), the
//     router's local replies (503 NC/UH/UO/UF/UC, 504 UT) carry the route's
//     response_headers_to_add/remove, and the weighted cluster's when the
//     destination is known: the router passes its modify_headers_ (which
//     runs finalizeResponseHeaders) to sendLocalReply;
//   - the CORS filter decorates every response that passes back through it,
//     local replies included, once it has seen the request: that covers the
//     fault filter's aborts (Istio places envoy.filters.http.cors before
//     envoy.filters.http.fault), which carry no route response headers
//     because the fault filter sends its reply without modify_headers.
//
// No route (NR) means no decoration at all. The zero value does nothing.
type replyHeaders struct {
	route   *routeEntry // set when the router runs
	cluster string      // the picked destination cluster ("" = route-level only)
	cors    *corsPolicy // set when the CORS filter saw the request
	r       *http.Request
}

// corsSaw records that the CORS filter saw the request routed by re.
func (rh *replyHeaders) corsSaw(lc *listenerConfig, re *routeEntry, r *http.Request) {
	if lc.cors && re.cors != nil {
		rh.cors, rh.r = re.cors, r
	}
}

// routed records that the router took the request for cluster.
func (rh *replyHeaders) routed(re *routeEntry, cluster string) {
	rh.route, rh.cluster = re, cluster
}

// apply decorates a local reply's headers, after the reply's own headers
// are set and before they are written: the route's mutations (as Envoy's
// modify_headers_), then CORS (as the CORS filter's encodeHeaders).
func (rh *replyHeaders) apply(h http.Header) {
	if rh.route != nil {
		rh.route.applyResponseHeaders(h, rh.cluster) // headers.go
	}
	if rh.cors != nil {
		rh.cors.decorate(h, rh.r) // cors.go
	}
}
