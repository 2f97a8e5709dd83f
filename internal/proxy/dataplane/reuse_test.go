package dataplane

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// TestUpstreamRequestStorageKeepsRequestsApart: the request path reuses
// the storage of its upstream requests and responses from one request to
// the next (forward's outbound, upstream.Scratch). Many clients at once,
// with and without bodies (in memory, and streamed: a transport that may
// hold the request after its round trip), some of them retried after a
// 503 that the next attempt's response replaces, each get their own
// response, and the upstream sees each request with its own headers and
// a request id of its own. Run with -race it also shows the storage is
// not shared while in use.
func TestUpstreamRequestStorageKeepsRequestsApart(t *testing.T) {
	var mu sync.Mutex
	failed := map[string]bool{} // the X-Test values already answered 503 once
	ids := map[string]string{}  // request id → X-Test value
	var dupID string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v := r.Header.Get("X-Test")
		mu.Lock()
		first := strings.HasPrefix(v, "retry-") && !failed[v]
		failed[v] = true
		id := r.Header.Get("X-Request-Id")
		if prev, ok := ids[id]; ok && prev != v {
			dupID = id
		}
		ids[id] = v
		mu.Unlock()
		if first {
			w.Header().Set("X-Echo", "first-attempt")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "first-attempt")
			return
		}
		w.Header().Set("X-Echo", v)
		w.Header().Set("X-Body-Len", itoa(len(b)))
		io.WriteString(w, v)
	}))
	t.Cleanup(up.Close)

	c := edsCluster(t, "up", false, "")
	c.CircuitBreakers = thresholds(1024, 1024, 1024, 1024).CircuitBreakers // every retry goes (Envoy's default max_retries is 3)
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, nil)
	mustApply(t, d, resourcesAny(
		c, cla("up", ep{Addr: up.Listener.Addr().String()}),
		routeConfig("r", vhost("up", []string{"*"}, withRetry(toCluster("", prefixMatch("/"), "up"),
			&route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}, 0))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	base := "http://" + d.ListenerAddr("out").String() + "/"
	hc := client(t, false)

	const workers, perWorker = 8, 60
	errs := make(chan string, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				v := "w" + itoa(w) + "-" + itoa(i)
				var body io.Reader
				method, size := "GET", 0
				switch i % 4 {
				case 1:
					v = "retry-" + v // answered 503 once, then retried
				case 2:
					method, size = "POST", 100 // a body that arrives with the head
					body = strings.NewReader(strings.Repeat("b", size))
				case 3:
					method, size = "POST", 200<<10 // a body that streams
					body = strings.NewReader(strings.Repeat("s", size))
				}
				req, _ := http.NewRequest(method, base, body)
				req.Header.Set("X-Test", v)
				resp, err := hc.Do(req)
				if err != nil {
					errs <- v + ": " + err.Error()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != v || resp.Header.Get("X-Echo") != v || resp.Header.Get("X-Body-Len") != itoa(size) {
					errs <- v + ": got " + itoa(resp.StatusCode) + " " + string(b) + " X-Echo " + resp.Header.Get("X-Echo") + " X-Body-Len " + resp.Header.Get("X-Body-Len")
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for e := range errs {
		if n++; n <= 5 {
			t.Error(e)
		}
	}
	if n > 5 {
		t.Errorf("... and %d more", n-5)
	}
	mu.Lock()
	defer mu.Unlock()
	if dupID != "" {
		t.Errorf("request id %s was given to two requests", dupID)
	}
	if want := workers * perWorker; len(ids) != want { // a retry keeps its request's id
		t.Errorf("upstream saw %d request ids, want one per request, %d", len(ids), want)
	}
}
