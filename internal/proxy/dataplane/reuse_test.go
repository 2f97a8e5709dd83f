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
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v := r.Header.Get("X-Test")
		mu.Lock()
		first := strings.Contains(v, "retry-") && !failed[v]
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
	up.Config.Protocols = new(http.Protocols)
	up.Config.Protocols.SetHTTP1(true)
	up.Config.Protocols.SetUnencryptedHTTP2(true)
	up.Start()
	t.Cleanup(up.Close)

	// h1: the synchronous HTTP/1.1 path, whose storage is reused; h2: an
	// HTTP/2 upstream, whose client may hold a request past its round
	// trip (its storage is not reused).
	var res []any
	for _, h2 := range []bool{false, true} {
		name := map[bool]string{false: "h1", true: "h2"}[h2]
		c := edsCluster(t, name, h2, "")
		c.CircuitBreakers = thresholds(1024, 1024, 1024, 1024).CircuitBreakers // every retry goes (Envoy's default max_retries is 3)
		res = append(res, c, cla(name, ep{Addr: up.Listener.Addr().String()}))
	}
	retry := &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
	res = append(res,
		routeConfig("r",
			vhost("h1", []string{"h1"}, withRetry(toCluster("", prefixMatch("/"), "h1"), retry, 0)),
			vhost("h2", []string{"h2"}, withRetry(toCluster("", prefixMatch("/"), "h2"), retry, 0))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, nil)
	mustApply(t, d, resourcesAny(res...))
	base := "http://" + d.ListenerAddr("out").String() + "/"
	for _, tc := range []struct {
		name, host string
		h2c        bool
	}{
		{"http1-to-h1", "h1", false},
		{"h2c-to-h1", "h1", true},
		{"http1-to-h2", "h2", false},
		{"h2c-to-h2", "h2", true},
	} {
		hc := client(t, tc.h2c)
		t.Run(tc.name, func(t *testing.T) {
			clients(t, hc, base, tc.host, tc.name+"-", &mu, ids, &dupID)
		})
	}
}

// clients sends the requests of TestUpstreamRequestStorageKeepsRequestsApart
// with hc to host, each marked with tag, and checks what came back and
// what the upstream saw.
func clients(t *testing.T, hc *http.Client, base, host, tag string, mu *sync.Mutex, ids map[string]string, dupID *string) {
	const workers, perWorker = 8, 60
	errs := make(chan string, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				v := tag + "w" + itoa(w) + "-" + itoa(i)
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
				req.Host = host
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
	if *dupID != "" {
		t.Errorf("request id %s was given to two requests", *dupID)
	}
	if want := workers * perWorker; len(ids) != want { // a retry keeps its request's id
		t.Errorf("upstream saw %d request ids, want one per request, %d", len(ids), want)
	}
	clear(ids)
}
