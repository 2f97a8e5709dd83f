package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const rateLimit100 = `apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: backend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  limit: {requestsPerUnit: 100, unit: SECOND}
`

// TestRateLimitHolds100RPS: a RateLimit of 100 requests per second
// (burst 100) at the backend's sidecar, offered ~300 requests per second
// for 3 s through a client's sidecar, admits between 100·T − 50 and
// 100 + 100·T + 2 requests, T the measured span of the run; the others
// get 429 with the x-ratelimit headers, and both sidecars count them.
//
// Why the bound is sound without timing assumptions: the bucket holds at
// most 100 tokens when the run starts and gains 100 per second, so no
// more than 100 + 100·T requests can pass in T (+2 for the proxy's
// nanosecond rounding and the client measuring T after the proxy's first
// and before its last decision — both make T larger, never smaller, so
// they only loosen the upper bound). Below: offered three times the rate,
// the bucket is empty soon after the start and stays near empty, and a
// refill is lost only while the bucket is full, which would take the
// client stalling for a whole second. So the admitted count falls short
// of 100·T only by the tokens not yet spent when the last request
// arrives and by the latency at each end of T (the proxy's window is
// shorter than the client's by one request's round trip at each end):
// 50 tokens (half a second) covers both with room on a loaded machine.
// The lower bound is checked only when the client offered at least 1.5
// times the rate on average (a starved machine may not); the upper one
// always.
func TestRateLimitHolds100RPS(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1")
	front := m.Client("frontend")
	m.WriteConfig("ratelimit.yaml", rateLimit100)
	waitDump(t, backends[0], "http_local_rate_limiter")
	c := newClient()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := holdsRate(t, ctx, 100, func() (int, http.Header, error) { return getHeaders(ctx, c, front.Outbound, "backend", "/") })
	got, refused, limitedHeaders := run.admitted, run.refused, run.limitedHeaders
	for k, want := range map[string]string{"X-Ratelimit-Limit": "100", "X-Ratelimit-Remaining": "0"} {
		if limitedHeaders.Get(k) != want {
			t.Errorf("429 %s = %q, want %q (headers %v)", k, limitedHeaders.Get(k), want, limitedHeaders)
		}
	}
	if limitedHeaders.Get("X-Ratelimit-Reset") == "" {
		t.Errorf("429 without x-ratelimit-reset: %v", limitedHeaders)
	}
	// The backend's sidecar counts as Envoy does; both sides' request
	// metrics see the 429s.
	const p = "envoy_http_local_rate_limiter_http_local_rate_limit_"
	for name, want := range map[string]int64{p + "rate_limited": refused, p + "enforced": refused, p + "ok": got, p + "enabled": got + refused} {
		if v, _ := series(t, backends[0], name, nil); int64(v) != want {
			t.Errorf("%s = %v, want %d", name, v, want)
		}
	}
	if v, _ := series(t, backends[0], "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "429", "response_flags": "RL"}); int64(v) != refused {
		t.Errorf("destination istio_requests_total{response_code=429, response_flags=RL} = %v, want %d", v, refused)
	}
	if v, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "429"}); int64(v) != refused {
		t.Errorf("source istio_requests_total{response_code=429} = %v, want %d", v, refused)
	}
	if n := backends[0].Echo.Requests(); int64(n) != got {
		t.Errorf("the backend app saw %d requests, want the %d admitted", n, got)
	}
}

// TestRateLimitPerClientIP: a descriptor keyed by the client's address
// limits each client on its own (5 an hour each: no refill during the
// test), and one keyed by a header value limits that value only; the
// 429 describes the bucket that refused.
func TestRateLimitPerClientIP(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1")
	m.WriteConfig("ratelimit.yaml", `apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: backend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  descriptors:
  - clientIP: true
    limit: {requestsPerUnit: 5, unit: HOUR}
  - header: x-user
    value: alice
    limit: {requestsPerUnit: 2, unit: HOUR}
`)
	waitDump(t, backends[0], "remote_address")
	inbound := net.JoinHostPort(backends[0].Opts.IPs[0], fmt.Sprint(backends[0].Opts.WorkloadPort))
	from := func(ip string) *http.Client {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Timeout: 5 * time.Second, Transport: tr}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(c *http.Client, hdr map[string]string) (int, http.Header) {
		t.Helper()
		code, h, err := getHeadersWith(ctx, c, inbound, "backend", "/", hdr)
		if err != nil {
			t.Fatal(err)
		}
		return code, h
	}
	a, b, alice, bob := nextIP(), nextIP(), nextIP(), nextIP()
	ca := from(a)
	for i := range 5 {
		if code, h := send(ca, nil); code != 200 || h.Get("X-Ratelimit-Remaining") != fmt.Sprint(4-i) {
			t.Fatalf("client %s request %d: %d, remaining %q; want 200 with %d left", a, i, code, h.Get("X-Ratelimit-Remaining"), 4-i)
		}
	}
	if code, h := send(ca, nil); code != 429 || h.Get("X-Ratelimit-Limit") != "5" || h.Get("X-Envoy-Ratelimited") != "true" {
		t.Fatalf("client %s 6th request: %d %v; want 429 from its bucket of 5", a, code, h)
	}
	if code, _ := send(from(b), nil); code != 200 {
		t.Errorf("client %s, another address: %d, want 200 (its own bucket)", b, code)
	}
	ra := from(alice)
	for i := range 2 {
		if code, _ := send(ra, map[string]string{"x-user": "alice"}); code != 200 {
			t.Fatalf("alice request %d: %d", i, code)
		}
	}
	if code, h := send(ra, map[string]string{"x-user": "alice"}); code != 429 || h.Get("X-Ratelimit-Limit") != "2" {
		t.Errorf("alice's 3rd request: %d %v; want 429 from her bucket of 2", code, h)
	}
	if code, _ := send(from(bob), map[string]string{"x-user": "bob"}); code != 200 {
		t.Errorf("bob: %d, want 200 (only alice is limited by name)", code)
	}
}

// getHeaders sends GET path with Host host to addr and returns the
// status and response headers; the body is drained.
func getHeaders(ctx context.Context, c *http.Client, addr, host, path string) (int, http.Header, error) {
	return getHeadersWith(ctx, c, addr, host, path, nil)
}

func getHeadersWith(ctx context.Context, c *http.Client, addr, host, path string, hdr map[string]string) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header, err
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// rateRun is what holdsRate saw.
type rateRun struct {
	admitted, refused int64
	// limitedHeaders are the headers of the first 429.
	limitedHeaders http.Header
}

// holdsRate offers about three times rate requests per second for 3 s
// with send (32 workers), fails t on any answer but 200 or 429, and
// checks the admitted count against the bounds of a token bucket of rate
// per second and burst rate, as TestRateLimitHolds100RPS explains: at
// most rate + rate·T + 2 in the measured span T; at least rate·T − 50
// when at least 1.5 times the rate was offered. At least one request
// must be refused.
func holdsRate(t *testing.T, ctx context.Context, rate int, send func() (int, http.Header, error)) rateRun {
	t.Helper()
	const (
		duration = 3 * time.Second
		workers  = 32
	)
	offered := 3 * rate
	var admitted, limited, sent atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var limitedHeaders http.Header
	ticks := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ticks {
				sent.Add(1)
				code, h, err := send()
				mu.Lock()
				switch {
				case err != nil:
					firstErr = cmpOr(firstErr, err)
				case code == 200:
					admitted.Add(1)
				case code == 429:
					limited.Add(1)
					if limitedHeaders == nil {
						limitedHeaders = h
					}
				default:
					firstErr = cmpOr(firstErr, fmt.Errorf("status %d", code))
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(offered))
	for n := 0; n < offered*int(duration/time.Second) && time.Since(start) < duration; n++ {
		<-tick.C
		select {
		case ticks <- struct{}{}:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	close(ticks)
	wg.Wait()
	span := time.Since(start).Seconds()
	if firstErr != nil {
		t.Fatalf("a request failed: %v", firstErr)
	}
	got, refused := admitted.Load(), limited.Load()
	r := float64(rate)
	upper := int64(r + r*span + 2)
	lower := int64(r*span - 50)
	t.Logf("sent %d in %.2fs (%.0f/s): %d admitted, %d refused; bounds [%d, %d]", sent.Load(), span, float64(sent.Load())/span, got, refused, lower, upper)
	if got > upper {
		t.Errorf("%d admitted in %.2fs, more than the bucket allows (%d)", got, span, upper)
	}
	if float64(sent.Load()) >= 1.5*r*span && got < lower {
		t.Errorf("%d admitted in %.2fs at %.0f requests/s offered, fewer than the limit allows (%d)", got, span, float64(sent.Load())/span, lower)
	}
	if refused == 0 {
		t.Fatalf("nothing was refused: the limit did not hold")
	}
	return rateRun{admitted: got, refused: refused, limitedHeaders: limitedHeaders}
}
