package forward

import (
	"net/http"
	"strings"
	"time"

	"weft.dev/weft/internal/proxy/tracing"
)

// endSpan ends a traced request's span with what the request path
// learned: the route's decorator as its name (Envoy's "ingress" or
// "egress <host>" without one), the cluster and endpoint, the status and
// response flags. Deferred by Serve for sampled requests only.
func endSpan(r *http.Request, l *Listener, q *request) {
	op := q.op
	if op == "" {
		if l.Inbound {
			op = "ingress"
		} else {
			op = "egress " + r.Host
		}
	}
	scheme := "http://"
	if q.ds.Conn.TLS != nil {
		scheme = "https://"
	}
	uri := r.RequestURI
	if uri == "" || !strings.HasPrefix(uri, "/") {
		uri = r.URL.RequestURI()
	}
	proto := "HTTP/1.1"
	switch {
	case r.ProtoMajor == 2:
		proto = "HTTP/2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		proto = "HTTP/1.0"
	}
	f := tracing.Finish{
		Operation: op,
		Method:    r.Method,
		URL:       scheme + r.Host + uri,
		Protocol:  proto,
		Code:      q.code,
		GRPCCode:  q.grpcCode,
		Flags:     q.flags,
		Cluster:   q.cluster,
	}
	if a := q.ds.Conn.RemoteAddr; a.IsValid() {
		f.PeerAddr = a.Addr().String()
	}
	if q.ep != nil {
		f.Upstream = q.ep.Addr()
	}
	if fs := q.reply.fs; fs != nil && len(fs.ResponseFlags()) > 0 {
		f.Flags = joinFlags(append(strings.Split(f.Flags, ","), fs.ResponseFlags()...)...)
	}
	q.span.End(f, time.Now())
}
