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
// l's default host, and without one either it is answered 400, as a
// request without :authority is. It reports whether r goes on.
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
	if r.Host == "" {
		if q.logging {
			q.alog.details = detailsMissingHost
		}
		localReply(w, q, http.StatusBadRequest, "", "")
		return false
	}
	return true
}
