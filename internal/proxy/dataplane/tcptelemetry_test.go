package dataplane

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// TestTCPTelemetry: a tcp_proxy chain with an access log and Istio's
// stats network filter before it. The connection is logged when it ends
// (bytes each way, the upstream, request operators "-"), istio_tcp_sent_bytes_total
// is dropped and istio_tcp_connections_opened_total gains a port label.
func TestTCPTelemetry(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "tcp.json")
	reg := newRegistry()
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d, err := New(Options{OriginalDst: f.lookup, Metrics: reg, Identity: contract.Identity{WorkloadName: "db-client", Namespace: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Close(ctx)
	})
	chain := proxytest.TCPProxyChain(t, nil, "PassthroughCluster")
	var tp tcpproxyv3.TcpProxy
	if err := chain.Filters[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
		t.Fatal(err)
	}
	tp.AccessLog = []*accesslogv3.AccessLog{fileLog(t, logPath, jsonFormat(t, map[string]any{
		"received": "%BYTES_RECEIVED%", "sent": "%BYTES_SENT%", "upstream": "%UPSTREAM_HOST%",
		"cluster": "%UPSTREAM_CLUSTER%", "method": "%REQ(:METHOD)%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
	}), nil)}
	chain.Filters[0].ConfigType = &listener.Filter_TypedConfig{TypedConfig: proxytest.MustAny(t, &tp)}
	stats := contract.StatsConfig{Metrics: []contract.StatsMetric{
		{Name: contract.StatTCPSentBytes, Drop: true},
		{Name: contract.StatTCPOpened, Dimensions: map[string]string{"port": "string(destination.port)", "who": "xds.node.metadata['WORKLOAD_NAME']"}},
	}}
	chain.Filters = append([]*listener.Filter{{Name: contract.StatsFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: stats.Any()}}}, chain.Filters...)
	l := proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, chain)
	mustApply(t, d, resources(l, proxytest.OriginalDstCluster("PassthroughCluster", "")))

	up := tcpNamed(t, "up")
	f.set("127.0.0.61", netip.MustParseAddrPort(up))
	if got := exchange(t, dialFrom(t, "127.0.0.61", d.ListenerAddr("v").String()), "hello"); got != "up:hello" {
		t.Fatalf("got %q", got)
	}

	var line map[string]any
	for range 500 { // the line is written when the relay ends, from a queue
		b, _ := os.ReadFile(logPath)
		if s := strings.TrimSpace(string(b)); s != "" {
			if err := json.Unmarshal([]byte(s), &line); err != nil {
				t.Fatalf("log line %q: %v", s, err)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := map[string]any{"received": 5.0, "sent": 8.0, "upstream": up, "cluster": "PassthroughCluster", "method": nil, "code": 0.0, "flags": "-"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log field %s = %#v, want %#v (line %v)", k, line[k], v, line)
		}
	}

	_, port, _ := strings.Cut(up, ":")
	for range 200 {
		if counterFamily(t, reg, "istio_tcp_connections_closed_total") > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := counterFamilyWith(t, reg, "istio_tcp_connections_opened_total", map[string]string{"port": port, "who": "db-client"}); n != 1 {
		t.Errorf("opened with port=%s who=db-client: %v, want 1", port, n)
	}
	if n := counterFamily(t, reg, "istio_tcp_sent_bytes_total"); n != 0 {
		t.Errorf("istio_tcp_sent_bytes_total = %v though dropped", n)
	}
	if n := counterFamily(t, reg, "istio_tcp_received_bytes_total"); n != 8 {
		t.Errorf("istio_tcp_received_bytes_total = %v, want 8", n)
	}
}
