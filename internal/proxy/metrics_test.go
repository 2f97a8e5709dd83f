package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"weft.dev/weft/internal/testenv"
	"weft.dev/weft/internal/xds/contract"
)

// TestProxyMetricsEndpoint runs a proxy against a control plane, sends
// requests through it to a real upstream (200s and a 503), scrapes
// /stats/prometheus like Prometheus does, checks the Envoy and Istio
// statistics operators alert on, and lints the whole exposition with
// promtool.
func TestProxyMetricsEndpoint(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "hello")
	})}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go up.Serve(upLn)
	t.Cleanup(func() { up.Close() })

	const svc = "backend.default.svc.cluster.local"
	cname := "outbound|80||" + svc
	upAddr := upLn.Addr().(*net.TCPAddr)
	sock := func(ip string, port int) *core.Address {
		return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)}}}}
	}
	ads := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	xds := controlPlane(t, map[resource.Type][]types.Resource{
		resource.ListenerType: {outboundListener(t)},
		resource.RouteType: {&route.RouteConfiguration{Name: contract.RouteHTTPProxy, VirtualHosts: []*route.VirtualHost{{
			Name: "backend", Domains: []string{"backend"},
			Routes: []*route.Route{{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cname}}}}},
		}}}},
		resource.ClusterType: {&clusterv3.Cluster{Name: cname,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads}}},
		// One healthy endpoint, the real upstream, and one EDS says is
		// unhealthy: membership_total 2, membership_healthy 1.
		resource.EndpointType: {&endpoint.ClusterLoadAssignment{ClusterName: cname, Endpoints: []*endpoint.LocalityLbEndpoints{{
			LbEndpoints: []*endpoint.LbEndpoint{
				{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: sock(upAddr.IP.String(), upAddr.Port)}},
					HealthStatus: core.HealthStatus_HEALTHY},
				{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: sock("127.0.0.1", 1)}},
					HealthStatus: core.HealthStatus_UNHEALTHY},
			}}}}},
	})
	p, err := New(Options{Identity: testID, XDSAddress: xds, Plaintext: true, AdminAddress: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	for !p.Ready() {
		select {
		case <-ctx.Done():
			t.Fatalf("never ready: xds stats %+v", p.XDSStats())
		case <-time.After(10 * time.Millisecond):
		}
	}

	// Ready flips when the first config is applied; the ACKs follow it on
	// the stream, so wait for them before reading update_success.
	for acked := false; !acked; {
		acked = true
		for _, ts := range p.xds.TypeStats() {
			acked = acked && ts.ACKs > 0
		}
		if acked {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never ACKed every type: %+v", p.xds.TypeStats())
		case <-time.After(10 * time.Millisecond):
		}
	}

	out := "http://" + p.ListenerAddr("outbound").String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	send := func(path string, want int) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, out+path, nil)
		req.Host = "backend"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	send("/", 200)
	send("/", 200)
	send("/fail", 503)

	body := scrape(ctx, t, "http://"+p.AdminAddr().String()+"/stats/prometheus")
	mfs := parseExposition(t, body)
	cl := map[string]string{"envoy_cluster_name": cname}
	with := func(base map[string]string, k, v string) map[string]string {
		m := map[string]string{k: v}
		for bk, bv := range base {
			m[bk] = bv
		}
		return m
	}
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"envoy_cluster_upstream_rq_total", cl, 3},
		{"envoy_cluster_upstream_cx_total", cl, 1},
		{"envoy_cluster_upstream_rq", with(cl, "envoy_response_code", "200"), 2},
		{"envoy_cluster_upstream_rq", with(cl, "envoy_response_code", "503"), 1},
		{"envoy_cluster_upstream_rq_xx", with(cl, "envoy_response_code_class", "2"), 2},
		{"envoy_cluster_upstream_rq_xx", with(cl, "envoy_response_code_class", "5"), 1},
		{"envoy_cluster_upstream_rq_time", cl, 3}, // histogram: its count
		// The keep-alive connection to the upstream stays open in the pool.
		{"envoy_cluster_upstream_cx_active", cl, 1},
		{"envoy_cluster_membership_total", cl, 2},
		{"envoy_cluster_membership_healthy", cl, 1},
		{"envoy_server_live", nil, 1},
		{"envoy_control_plane_connected_state", nil, 1},
		{"envoy_control_plane_xds_rejected_state", map[string]string{"type": "cds"}, 0},
		{"envoy_control_plane_xds_update_success", map[string]string{"type": "eds"}, 1},
		{"envoy_control_plane_xds_update_rejected", map[string]string{"type": "lds"}, 0},
		{"istio_request_bytes", map[string]string{"reporter": "source", "response_code": "200"}, 2},
		{"istio_response_bytes", map[string]string{"reporter": "source", "response_code": "503"}, 1},
	} {
		if got, ok := sampleValue(mfs, w.name, w.labels); !ok || got != w.want {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, got, ok, w.want)
		}
	}
	for _, typ := range []string{"lds", "rds", "cds", "eds"} {
		ms, ok := sampleValue(mfs, "envoy_control_plane_xds_update_time", map[string]string{"type": typ})
		if now := float64(time.Now().UnixMilli()); !ok || ms <= 0 || ms > now {
			t.Errorf("envoy_control_plane_xds_update_time{type=%q} = %v (found %v), want a time in ms before %v", typ, ms, ok, now)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", body)
	}
	testenv.LintMetrics(t, "weft-proxy /stats/prometheus", body)
}

func scrape(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	code, body := get(ctx, t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d", url, code)
	}
	return body
}

func parseExposition(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the exposition: %v", err)
	}
	return mfs
}

// sampleValue sums the samples of name whose labels include want: a
// counter's or gauge's value, a histogram's count.
func sampleValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}
