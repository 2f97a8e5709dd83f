package forward

import "net/http"

// Envoy's response code details of the HTTP/1.0 refusals.
const (
	detailsLowVersion  = "low_version"
	detailsMissingHost = "missing_host_header"
)

// http10 applies the connection manager's HTTP/1.0 options to r, an
// HTTP/1.0 request, as Envoy's connection manager does before routing:
// unless l accepts HTTP/1.0 it is answered 426 Upgrade Required (Envoy's
// default, and Istio's unless PILOT_HTTP10 or the proxy's HTTP10
// metadata turns it on), and the connection closes, since every request
// after it would get the same; accepted, a request without a Host takes
// l's default host (without one either, hasHost answers it 400, as a
// request without :authority). It reports whether r goes on.
func (l *Listener) http10(w http.ResponseWriter, r *http.Request, q *request) bool {
	if !l.AcceptHTTP10 {
		if q.logging {
			q.alog.details = detailsLowVersion
		}
		w.Header()["Connection"] = connectionClose
		localReply(w, q, http.StatusUpgradeRequired, "", "")
		return false
	}
	if r.Host == "" {
		r.Host = l.DefaultHostHTTP10
	}
	return true
}

// hasHost reports whether r names a host (Host, :authority, or an
// absolute request target's), and answers it 400 with an empty body if
// not, as Envoy's connection manager answers a request it finds none in
// after HTTP/1.0's default: a local reply without a response flag
// (missing_host_header), not a protocol error of the codec's.
func hasHost(w http.ResponseWriter, r *http.Request, q *request) bool {
	if r.Host != "" {
		return true
	}
	if q.logging {
		q.alog.details = detailsMissingHost
	}
	localReply(w, q, http.StatusBadRequest, "", "")
	return false
}
