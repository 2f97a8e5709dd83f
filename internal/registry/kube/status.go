package kube

import (
	"context"
	"errors"
	"net/http"
	"path"
	"time"
)

// observe wraps the client's transport to learn, without polling, whether
// the API server answers: a transport error marks the registry
// disconnected; any answer marks it connected, and a successful answer
// for a resource (the informers' lists and watches) clears that
// resource's list/watch error.
func (r *Registry) observe(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		r.mu.Lock()
		defer r.mu.Unlock()
		switch {
		case err != nil:
			if errors.Is(err, context.Canceled) || req.Context().Err() != nil {
				return resp, err // we stopped it
			}
			r.netErr = true
			r.errs["apiserver"] = err
			r.status.LastErrorTime = time.Now()
		default:
			r.netErr = false
			delete(r.errs, "apiserver")
			if resp.StatusCode < 400 {
				delete(r.errs, path.Base(req.URL.Path))
			}
		}
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
