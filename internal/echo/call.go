package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"
)

// TraceHeaders are the request headers an application forwards so that
// its calls join the caller's trace, as Istio asks applications to:
// x-request-id, W3C Trace Context, B3 (single and multi header) and
// OpenTracing's span context.
var TraceHeaders = []string{
	"x-request-id", "traceparent", "tracestate",
	"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
	"x-ot-span-context",
}

// callTimeout bounds a call (control "call").
const callTimeout = 10 * time.Second

// call makes the request the control "call" asks for: GET / to host
// through the app's outbound proxy (Options.Upstream, the sidecar's
// outbound listener), forwarding the trace headers of r, and returns the
// callee's reply.
func (s *Server) call(ctx context.Context, r *http.Request, host string) (*Reply, error) {
	if s.upstream == nil {
		return nil, fmt.Errorf("call %s: this echo has no upstream proxy (Options.Upstream)", host)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.upstreamAddr+"/", nil)
	if err != nil {
		return nil, err
	}
	req.Host = host
	for _, h := range TraceHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	resp, err := s.upstream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("call %s: %s: %.200s", host, resp.Status, b)
	}
	var out Reply
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("call %s: reply: %w", host, err)
	}
	return &out, nil
}

func newUpstreamClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // the request goes to the sidecar itself
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}}
}

func validCallHost(h string) bool {
	return h != "" && httpguts.ValidHostHeader(h)
}
