package forward

import (
	"net/http"
	"time"

	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/proxy/cluster"
)

// accessLogState is what a request on a listener with access logs
// collects beyond its metrics. It lives in the request (on the handler's
// stack): no allocation.
type accessLogState struct {
	w http.ResponseWriter
	r *http.Request
	l *Listener

	route, upstreamHost, cluster, failure string
	details                               string   // response code details the flags do not say
	requestID                             []string // the x-request-id generated for the upstream request, if any
	viaUpstream                           bool
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
		ViaUpstream: a.viaUpstream, BytesReceived: q.reqBody.bytes() + q.tunnelIn, BytesSent: q.rspBody,
		UpstreamHost: a.upstreamHost, UpstreamCluster: a.cluster, RouteName: a.route,
		UpstreamFailure: a.failure, Details: a.details,
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
