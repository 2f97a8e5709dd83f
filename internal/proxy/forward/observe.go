package forward

import (
	"context"
	"errors"

	"weft.dev/weft/internal/proxy/cluster"
)

// observeAttempt feeds the result of one upstream attempt to ep of c to
// the cluster's counters and to its outlier detector. Called by forward
// after every attempt, on the request goroutine; lock-free unless it
// ejects. downstream is the downstream request's context: an attempt cut
// short because the client left says nothing about the host.
func observeAttempt(downstream context.Context, c *cluster.Cluster, ep *cluster.Endpoint, res *attemptResult) {
	s := c.Stats()
	s.RqTotal.Inc()
	if res.err != nil {
		switch {
		case downstream.Err() != nil:
		case res.out == outcomeConnectFailure:
			s.CxConnectFail.Inc()
			ep.ObserveLocalFailure(cluster.LocalConnectFailed)
		case res.out == outcomePerTryTimeout || errors.Is(res.err, context.DeadlineExceeded):
			ep.ObserveLocalFailure(cluster.LocalTimeout) // per-try or route timeout, as Envoy
		default:
			ep.ObserveLocalFailure(cluster.LocalReset)
		}
		return
	}
	s.RqCompleted.Inc()
	s.Response(res.resp.StatusCode)
	ep.ObserveResponse(res.resp.StatusCode, res.resp.Header)
}
