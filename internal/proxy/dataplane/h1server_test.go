package dataplane

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/xds/contract"
)

// TestClientGoneCancelsUpstream: a client that closes its HTTP/1.1
// connection while the proxy waits for the upstream's answer cancels
// the upstream call (the upstream sees its request's context end) and
// is counted as a downstream disconnect (DC).
func TestClientGoneCancelsUpstream(t *testing.T) {
	arrived, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(up.Close)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.Listener.Addr().String()),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "", routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))))
	c, err := net.Dial("tcp", d.ListenerAddr("out").String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream call was not cancelled when the client went away")
	}
	// Recorded as the handler returns: bounded wait.
	for i := 0; i < 100 && counterValue(t, reg, map[string]string{"response_flags": "DC"}) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := counterValue(t, reg, map[string]string{"response_flags": "DC"}); n != 1 {
		t.Errorf("istio_requests_total{response_flags=DC} = %v, want 1", n)
	}
}
