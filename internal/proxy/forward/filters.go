package forward

import (
	"net/http"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/route"
)

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

// runFilters runs the listener's HTTP filters on a request routed by re,
// in order, as Envoy's connection manager does before the router; the
// filters call services through clusters, those of the request's
// configuration (filter.Stream.Upstream). It
// reports whether a filter stopped the request; the request has then been
// answered, unless the client went away. Called on the request goroutine.
func runFilters(w http.ResponseWriter, r *http.Request, l *Listener, re *route.Entry, q *request, clusters map[string]*cluster.Cluster) bool {
	rh := &q.reply
	rh.chain, rh.entry = l.filters, re
	for i := range l.filters {
		hf := &l.filters[i]
		cfg := re.FilterConfig(hf.name)
		if cfg == nil && hf.perRouteOnly {
			rh.passed = i + 1
			continue
		}
		if rh.fs == nil {
			rh.fs = filter.NewStream(r, w.Header())
			rh.fs.RemoteIP = remoteIP(r, l)
			rh.fs.Connection = &q.ds.Conn
			rh.fs.Cluster = q.cluster
			rh.fs.Upstream = filterUpstream(clusters)
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
