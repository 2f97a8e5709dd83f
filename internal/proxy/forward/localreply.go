package forward

import (
	"net/http"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/route"
)

// replyHeaders is what decorates the proxy's own replies to one request, as
// Envoy decorates its local replies:
//
//   - once the router has the request (after the HTTP filters), the
//     router's local replies (503 NC/UH/UO/UF/UC, 504 UT) carry the route's
//     response_headers_to_add/remove, and the weighted cluster's when the
//     destination is known: the router passes its modify_headers_ (which
//     runs finalizeResponseHeaders) to sendLocalReply;
//   - the HTTP filters that saw the request (their DecodeHeaders let it
//     pass) encode every response that passes back through them, local
//     replies included (filter.Encoder): that is how the CORS filter
//     decorates the fault filter's aborts (Istio places
//     envoy.filters.http.cors before envoy.filters.http.fault), which carry
//     no route response headers because the fault filter sends its reply
//     without modify_headers.
//
// No route (NR) means no decoration at all. The zero value does nothing.
type replyHeaders struct {
	route   *route.Entry // set when the router runs
	cluster string       // the picked destination cluster ("" = route-level only)

	// The HTTP filters (filters.go): the listener's chain, the route whose
	// per-filter configs apply, how many filters the request passed, and
	// their view of the request (nil until a filter ran).
	chain  []httpFilter
	entry  *route.Entry
	passed int
	fs     *filter.Stream

	decorated bool // the reply's headers are already decorated (route replies)
}

// routed records that the router took the request for cluster.
func (rh *replyHeaders) routed(re *route.Entry, cluster string) {
	rh.route, rh.cluster = re, cluster
}

// apply decorates a local reply's headers, after the reply's own headers
// are set and before they are written: the route's mutations (as Envoy's
// modify_headers_), then the filters' (encode).
func (rh *replyHeaders) apply(h http.Header) {
	if rh.decorated {
		return
	}
	if rh.route != nil {
		rh.route.ApplyResponseHeaders(h, rh.cluster)
	}
	rh.encode(h)
}

// encode runs EncodeHeaders of the filters the request passed, last
// first, on response headers h.
func (rh *replyHeaders) encode(h http.Header) {
	if rh.fs == nil {
		return // no filter ran: those skipped have nothing to add
	}
	for i := rh.passed - 1; i >= 0; i-- {
		hf := &rh.chain[i]
		if hf.enc == nil {
			continue
		}
		cfg := rh.entry.FilterConfig(hf.name)
		if cfg == nil && hf.perRouteOnly {
			continue
		}
		rh.fs.PerRoute = cfg
		hf.enc.EncodeHeaders(rh.fs, h)
	}
}
