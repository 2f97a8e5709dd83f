package dataplane

import (
	"net/http"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

var downstreamProtocolCluster = proxytest.DownstreamProtocolCluster

func TestUseDownstreamProtocol(t *testing.T) {
	addr := echoUpstream(t, "up", true) // serves HTTP/1.1 and h2c, reports r.Proto
	res := func() *xdsResources {
		return resourcesAny(
			downstreamProtocolCluster(t, "svc"), cla("svc", ep{Addr: addr}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "svc"))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, res())
	base := "http://" + d.ListenerAddr("out").String()

	tests := []struct {
		name      string
		h2c       bool
		method    string
		body      string
		wantProto string
	}{
		{"HTTP/1.1 GET", false, "GET", "", "HTTP/1.1"},
		{"HTTP/1.1 POST", false, "POST", "payload", "HTTP/1.1"},
		{"h2c GET", true, "GET", "", "HTTP/2.0"},
		{"h2c POST", true, "POST", "payload", "HTTP/2.0"},
	}
	run := func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := client(t, tc.h2c)
				req, err := newRequest(tc.method, base+"/p", tc.body)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = "svc"
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if got := resp.Header.Get("X-Seen-Proto"); got != tc.wantProto {
					t.Errorf("upstream saw %q, want %q (downstream %s)", got, tc.wantProto, resp.Proto)
				}
			})
		}
	}
	run(t)

	// An identical update keeps the pool and both of its transports.
	before := d.rt.Load().clusters["svc"]
	mustApply(t, d, res())
	if got := d.rt.Load().clusters["svc"]; !got.SharesState(before) || got.Upstream() != before.Upstream() {
		t.Errorf("identical update replaced the pool or its transports")
	}
	t.Run("after update", run)
}

// newRequest builds a request with body (none when empty).
func newRequest(method, url, body string) (*http.Request, error) {
	if body == "" {
		return http.NewRequest(method, url, nil)
	}
	return http.NewRequest(method, url, strings.NewReader(body))
}

// TestUseDownstreamProtocolMirror: a shadow copy to a use_downstream_protocol
// cluster uses the downstream request's HTTP version too.
func TestUseDownstreamProtocolMirror(t *testing.T) {
	hits := make(chan shadowHit, 8)
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, nil)
	mustApply(t, d, resourcesAny(
		edsCluster(t, "primary", false, ""), cla("primary", ep{Addr: echoUpstream(t, "primary", false)}),
		downstreamProtocolCluster(t, "canary"), cla("canary", ep{Addr: mirrorTarget(t, hits, nil)}),
		routeConfig("r", vhost("v", []string{"*"},
			mirrorRoute("primary", nil, &route.RouteAction_RequestMirrorPolicy{Cluster: "canary"}))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	base := "http://" + d.ListenerAddr("out").String()
	for _, tc := range []struct {
		h2c  bool
		body string
		want string
	}{
		{false, "", "HTTP/1.1"},
		{false, "payload", "HTTP/1.1"},
		{true, "", "HTTP/2.0"},
		{true, "payload", "HTTP/2.0"},
	} {
		req, err := newRequest("POST", base+"/m", tc.body)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "reviews"
		resp, err := client(t, tc.h2c).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("h2c=%v: status %d", tc.h2c, resp.StatusCode)
		}
		if h := recv(t, hits); h.proto != tc.want || string(h.body) != tc.body {
			t.Errorf("h2c=%v body %q: shadow arrived as %s with %q, want %s", tc.h2c, tc.body, h.proto, h.body, tc.want)
		}
	}
}
