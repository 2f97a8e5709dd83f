package dataplane

import (
	"fmt"
	"net/http"
	"sort"

	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/cors"
	"weft.dev/weft/internal/proxy/filter/fault"
)

// httpFilters are the HTTP filters the proxy implements, besides the
// router. Immutable.
var httpFilters = filter.NewRegistry(cors.Factory{}, fault.Factory{})

// httpFilter is one filter of a listener's chain.
type httpFilter struct {
	name         string
	f            filter.Filter
	enc          filter.Encoder // nil when the filter does not see responses
	perRouteOnly bool           // skipped on routes without config for it
}

func newHTTPFilter(name string, f filter.Filter) httpFilter {
	hf := httpFilter{name: name, f: f}
	hf.enc, _ = f.(filter.Encoder)
	_, hf.perRouteOnly = f.(filter.PerRouteOnly)
	return hf
}

// filterConfig is a route's compiled config for one HTTP filter.
type filterConfig struct {
	name string
	cfg  any
}

// compileFilterConfigs compiles a route's typed_per_filter_config for the
// filters the proxy implements, in name order; entries for other filters
// are ignored.
func compileFilterConfigs(tpfc map[string]*anypb.Any) ([]filterConfig, error) {
	if len(tpfc) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(tpfc))
	for n := range tpfc {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []filterConfig
	for _, n := range names {
		cfg, known, err := httpFilters.ParsePerRoute(n, tpfc[n])
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%s]: %w", n, err)
		}
		if known && cfg != nil {
			out = append(out, filterConfig{n, cfg})
		}
	}
	return out, nil
}

// filterConfig returns the route's config for the filter named name, or
// nil.
func (re *routeEntry) filterConfig(name string) any {
	for i := range re.filterConfigs {
		if re.filterConfigs[i].name == name {
			return re.filterConfigs[i].cfg
		}
	}
	return nil
}

// runFilters runs the listener's HTTP filters on a request routed by re,
// in order, as Envoy's connection manager does before the router. It
// reports whether a filter stopped the request; the request has then been
// answered, unless the client went away. Called on the request goroutine.
func runFilters(w http.ResponseWriter, r *http.Request, lc *listenerConfig, re *routeEntry, q *request) bool {
	rh := &q.reply
	rh.chain, rh.entry = lc.filters, re
	for i := range lc.filters {
		hf := &lc.filters[i]
		cfg := re.filterConfig(hf.name)
		if cfg == nil && hf.perRouteOnly {
			rh.passed = i + 1
			continue
		}
		if rh.fs == nil {
			rh.fs = filter.NewStream(r, w.Header())
		}
		rh.fs.PerRoute = cfg
		if hf.f.DecodeHeaders(rh.fs) == filter.Stop {
			answerFilterStop(w, r, q)
			return true
		}
		rh.passed = i + 1
	}
	return false
}

// answerFilterStop sends what the filter that stopped the chain asked for.
func answerFilterStop(w http.ResponseWriter, r *http.Request, q *request) {
	switch a, reply := q.reply.fs.Answer(); a {
	case filter.AnsweredLocalReply:
		localReplyGRPC(w, q, reply.Status, reply.GRPCStatus, reply.Body, reply.Flag)
	case filter.AnsweredStatus:
		q.code = reply.Status
		w.WriteHeader(reply.Status)
	default:
		if r.Context().Err() != nil {
			q.flags = "DC" // the client went away; nobody to answer
			return
		}
		// A filter that stops must answer: do it for it.
		localReply(w, q, http.StatusInternalServerError, "", "")
	}
}
