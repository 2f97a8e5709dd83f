package forward

import (
	"net/http"
	"net/url"
)

// Refused records a request the listener's HTTP/1.1 server answered
// itself before Serve could see it — a malformed head, a request line
// and headers over the server's limit — as Envoy records its codec's
// refusals: in istio_requests_total and the listener's access logs, with
// the status the server answered and the response flag DPE. Nothing of
// the request is known (the server could not read it): no method, path
// or headers, so no source workload either, and no route, so the
// destination is unknown, as for NR.
func (f *Forwarder) Refused(l *Listener, ds *Downstream, status int) {
	if ds == nil {
		ds = plaintextDownstream
	}
	r := &http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, URL: &url.URL{}, Header: http.Header{}, Body: http.NoBody}
	w := refusedWriter{h: http.Header{"Connection": connectionClose}}
	q := f.newRequest(w, r, l, ds)
	q.code, q.flags = status, "DPE"
	f.recordRequest(&q)
}

// refusedWriter stands for the response the HTTP/1.1 server wrote to a
// request it refused: its headers, as far as the records read them.
type refusedWriter struct{ h http.Header }

func (w refusedWriter) Header() http.Header         { return w.h }
func (w refusedWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w refusedWriter) WriteHeader(int)             {}
