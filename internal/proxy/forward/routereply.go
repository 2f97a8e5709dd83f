package forward

import (
	"net/http"

	"weft.dev/weft/internal/proxy/route"
)

// routeReply answers a request whose route is a redirect or a direct
// response, with the route's response headers and the HTTP filters'
// (CORS) applied.
func routeReply(w http.ResponseWriter, r *http.Request, re *route.Entry, q *request) {
	h := w.Header()
	re.ApplyResponseHeaders(h, "")
	q.reply.encode(h) // the filters' response headers
	if re.IsRedirect() {
		code, location := re.RedirectTo(r)
		h["Location"] = []string{location}
		q.code = code
		w.WriteHeader(code)
		return
	}
	q.reply.decorated = true // localReply must not decorate twice
	localReply(w, q, re.Direct.Status, re.Direct.Body, "")
}
