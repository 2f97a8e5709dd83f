package contract

import "testing"

func TestLocalityRoundTrip(t *testing.T) {
	for _, loc := range []string{"", "us-east", "us-east/us-east-1a", "us-east/us-east-1a/rack1"} {
		id := Identity{ID: "sidecar~10.0.0.1~a.default~default.svc.cluster.local", Namespace: "default", Locality: loc}
		n := id.Node()
		if (n.GetLocality() == nil) != (loc == "") {
			t.Errorf("%q: node.locality = %v", loc, n.GetLocality())
		}
		got, err := ParseNode(n)
		if err != nil {
			t.Fatal(err)
		}
		if got.Locality != loc {
			t.Errorf("round trip of %q = %q", loc, got.Locality)
		}
	}
	if l := NodeLocality("r/z/s"); l.GetRegion() != "r" || l.GetZone() != "z" || l.GetSubZone() != "s" {
		t.Errorf("NodeLocality = %v", l)
	}
}
