package telemetry

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"weft.dev/weft/internal/xds/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPeerMetadataRoundTrip: what one proxy writes, the next one reads,
// interned, and removes from the request.
func TestPeerMetadataRoundTrip(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	v, err := EncodePeerMetadata(contract.Identity{ID: "sidecar~1", WorkloadName: "ratings-v1", Namespace: "default",
		Labels: map[string]string{"app": "ratings", "version": "v1"}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewPeerCache(m)
	want := SrcLabels{Workload: "ratings-v1", Namespace: "default", App: "ratings", Version: "v1"}
	var first *SrcLabels
	for range 2 {
		h := http.Header{HeaderPeerMetadata: {v}, HeaderPeerMetadataID: {"sidecar~1"}}
		got := c.Take(h)
		if *got != want {
			t.Fatalf("Take = %+v, want %+v", *got, want)
		}
		if first != nil && got != first {
			t.Error("the same peer's labels are not interned")
		}
		first = got
		if len(h) != 0 {
			t.Errorf("metadata exchange headers left in the request: %v", h)
		}
	}
	for _, h := range []http.Header{{}, {HeaderPeerMetadata: {"not base64!"}}} {
		if got := c.Take(h); got.Workload != Unknown || got.App != Unknown {
			t.Errorf("Take(%v) = %+v, want unknown labels", h, *got)
		}
	}
}

// TestHostDst: a passthrough request's labels are Istio's (the Host as
// destination_service, the cluster as its name, the rest unknown),
// interned per pair, and past MaxHostDsts Hosts a new one is reported as
// unknown.
func TestHostDst(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	d := m.HostDst("PassthroughCluster", "example.com:8080")
	want := DstLabels{Service: "example.com:8080", ServiceName: "PassthroughCluster", ServiceNamespace: Unknown,
		Workload: Unknown, WorkloadNamespace: Unknown, App: Unknown, Version: Unknown}
	if *d != want {
		t.Fatalf("HostDst = %+v, want %+v", *d, want)
	}
	if m.HostDst("PassthroughCluster", "example.com:8080") != d {
		t.Error("the same pair is not interned")
	}
	if b := m.HostDst("BlackHoleCluster", "example.com:8080"); b == d || b.ServiceName != "BlackHoleCluster" {
		t.Errorf("another cluster's labels: %+v", *b)
	}
	if e := m.HostDst("BlackHoleCluster", ""); e.Service != Unknown {
		t.Errorf("no Host: destination_service %q, want unknown", e.Service)
	}
	for i := range MaxHostDsts {
		m.HostDst("PassthroughCluster", fmt.Sprintf("h%d", i))
	}
	if got := m.HostDst("PassthroughCluster", "one-too-many"); got.Service != Unknown || got.ServiceName != "PassthroughCluster" {
		t.Errorf("past the bound: %+v, want destination_service unknown", *got)
	}
	if m.HostDst("PassthroughCluster", "example.com:8080") != d {
		t.Error("a Host seen before the bound lost its labels")
	}
}
