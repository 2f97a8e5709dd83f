package forward

import (
	"context"
	"errors"
	"net/http"

	"weft.dev/weft/internal/proxy/cluster"
)

// bodyOverflow is Envoy's local reply body for a circuit breaker overflow.
const bodyOverflow = "upstream connect error or disconnect/reset before headers. reset reason: overflow"

// admitAttempt is forward's admission hook, before every attempt to c: it
// ends the previous attempt's admission (*adm) and admits the next with
// the cluster's circuit breaker. When a limit is reached it answers 503
// with response flag UO and returns answered=true; when ctx ended while
// the request was queued it sets *res to that error and returns ok=false,
// answered=false (the caller answers as for any failed attempt).
func admitAttempt(ctx context.Context, c *cluster.Cluster, w http.ResponseWriter, q *request, adm *cluster.Admission, res *attemptResult) (ok, answered bool) {
	adm.Release()
	a, err := c.Breaker().Admit(ctx)
	if err == nil {
		*adm = a
		return true, false
	}
	return false, admitFailed(err, w, q, res)
}

// admitFailed answers an attempt the circuit breaker did not admit (err,
// from Breaker.Admit), as admitAttempt says.
func admitFailed(err error, w http.ResponseWriter, q *request, res *attemptResult) (answered bool) {
	switch {
	case errors.Is(err, cluster.ErrOverflow):
		if res.resp != nil {
			res.resp.Body.Close()
		}
		w.Header()["X-Envoy-Overloaded"] = []string{"true"} // as Envoy's router
		localReply(w, q, http.StatusServiceUnavailable, bodyOverflow, "UO")
		return true
	}
	cancel := res.cancel
	if cancel == nil {
		cancel = func() {}
	}
	*res = attemptResult{err: err, out: outcomeReset, cancel: cancel}
	return false
}
