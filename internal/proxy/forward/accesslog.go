package forward

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/proxy/cluster"
)

// accessLogState is what a request on a listener with access logs
// collects beyond its metrics: one allocation per request, none when the
// listener has no access log.
type accessLogState struct {
	w http.ResponseWriter
	r *http.Request
	l *Listener

	route, upstreamHost, cluster, failure string
	requestID                             []string // the x-request-id generated for the upstream request, if any
	viaUpstream                           bool
	body                                  countingBody // r.Body, counted (BYTES_RECEIVED)
}

func newAccessLogState(w http.ResponseWriter, r *http.Request, l *Listener) *accessLogState {
	a := &accessLogState{w: w, r: r, l: l}
	if r.Body != nil && r.Body != http.NoBody {
		a.body.rc = r.Body
		r.Body = &a.body
	}
	return a
}

// upstream records the endpoint of the current attempt.
func (a *accessLogState) upstream(c *cluster.Cluster, ep *cluster.Endpoint) {
	a.cluster, a.upstreamHost = c.Name(), ep.Addr()
}

// log hands the finished request to the listener's access logs. Called
// once, by recordRequest, on the request goroutine; never blocks.
func (a *accessLogState) log(q *request, flags string, d time.Duration) {
	if a.requestID != nil && len(a.r.Header["X-Request-Id"]) == 0 {
		a.r.Header["X-Request-Id"] = a.requestID // shared, never modified
	}
	e := accesslog.Entry{
		Start: q.start, Duration: d, Request: a.r, Code: q.code, Flags: flags,
		ViaUpstream: a.viaUpstream, BytesReceived: a.body.n.Load(), BytesSent: q.bytesSent,
		UpstreamHost: a.upstreamHost, UpstreamCluster: a.cluster, RouteName: a.route,
		UpstreamFailure:  a.failure,
		DownstreamRemote: q.ds.Conn.RemoteAddr, DownstreamLocal: q.ds.Conn.LocalAddr,
	}
	if q.code != 0 {
		e.ResponseHeader = a.w.Header()
	}
	if q.ds.Conn.TLS != nil {
		e.SNI = q.ds.Conn.TLS.ServerName
	}
	for _, lg := range a.l.AccessLogs {
		lg.Log(&e)
	}
}

// countingBody counts the request body bytes read. The upstream
// transport may read it on a goroutine of its own, hence the atomic.
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }
