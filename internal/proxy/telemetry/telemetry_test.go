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
	want := SrcLabels{Workload: "ratings-v1", Namespace: "default", App: "ratings", Version: "v1",
		CanonicalService: "ratings", CanonicalRevision: "v1", Cluster: Unknown}
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
		Workload: Unknown, WorkloadNamespace: Unknown, App: Unknown, Version: Unknown,
		CanonicalService: Unknown, CanonicalRevision: Unknown, Cluster: Unknown}
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

// TestCanonical: Istio's precedence for the canonical service and
// revision labels, and what the peer metadata carries of them.
func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		labels           map[string]string
		workload         string
		wantSvc, wantRev string
	}{
		{map[string]string{LabelCanonicalName: "cn", "app.kubernetes.io/name": "kn", "app": "a",
			LabelCanonicalRevision: "cr", "app.kubernetes.io/version": "kv", "version": "v"}, "w", "cn", "cr"},
		{map[string]string{"app.kubernetes.io/name": "kn", "app": "a", "app.kubernetes.io/version": "kv", "version": "v"}, "w", "kn", "kv"},
		{map[string]string{"app": "a", "version": "v"}, "w", "a", "v"},
		{nil, "w", "w", RevisionLatest},
		{nil, "", Unknown, Unknown},
	} {
		if s, r := Canonical(tc.labels, tc.workload); s != tc.wantSvc || r != tc.wantRev {
			t.Errorf("Canonical(%v, %q) = %q, %q; want %q, %q", tc.labels, tc.workload, s, r, tc.wantSvc, tc.wantRev)
		}
	}

	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	v, err := EncodePeerMetadata(contract.Identity{WorkloadName: "reviews-v2", Namespace: "shop", ClusterID: "east",
		Labels: map[string]string{LabelCanonicalName: "reviews", LabelCanonicalRevision: "2.1", "app": "reviews-app"}})
	if err != nil {
		t.Fatal(err)
	}
	got := NewPeerCache(m).Take(http.Header{HeaderPeerMetadata: {v}})
	want := SrcLabels{Workload: "reviews-v2", Namespace: "shop", App: "reviews-app", Version: Unknown,
		CanonicalService: "reviews", CanonicalRevision: "2.1", Cluster: "east"}
	if *got != want {
		t.Errorf("peer labels = %+v, want %+v", *got, want)
	}
}
