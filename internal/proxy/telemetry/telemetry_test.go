package telemetry

import (
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
