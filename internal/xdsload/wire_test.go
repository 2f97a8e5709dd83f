package xdsload

import (
	"slices"
	"testing"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestWireWalk: the envelope walkers read what the generated types wrote,
// for both protocols, with resource names taken from the resource when the
// envelope has none.
func TestWireWalk(t *testing.T) {
	cla := func(name string) *anypb.Any {
		a, err := anypb.New(&endpoint.ClusterLoadAssignment{ClusterName: name})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	delta, err := proto.Marshal(&discovery.DeltaDiscoveryResponse{
		TypeUrl: typeEndpoint, Nonce: "n1", SystemVersionInfo: "sys",
		Resources: []*discovery.Resource{
			{Name: "a", Version: "v1", Resource: cla("a")},
			{Version: "v2", Resource: cla("b")}, // no name: read from the body
			{Name: "ttl", Version: "v3"},        // a heartbeat
		},
		RemovedResources: []string{"gone"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := readEnvelope(delta, true)
	if err != nil || string(e.typeURL) != typeEndpoint || string(e.nonce) != "n1" || e.resources != 3 {
		t.Fatalf("delta envelope = %q %q %d, %v", e.typeURL, e.nonce, e.resources, err)
	}
	var got []string
	if err := eachDeltaResource(delta, func(r deltaResource, removed bool) error {
		switch {
		case removed:
			got = append(got, "-"+string(r.name))
		case !r.hasBody:
			got = append(got, "~"+string(r.name))
		default:
			n, _ := firstString(r.value)
			got = append(got, string(r.name)+"@"+string(r.version)+"="+n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a@v1=a", "b@v2=b", "~ttl", "-gone"}; !slices.Equal(got, want) {
		t.Errorf("delta resources = %q, want %q", got, want)
	}

	sotw, err := proto.Marshal(&discovery.DiscoveryResponse{TypeUrl: typeEndpoint, Nonce: "n2", VersionInfo: "v9",
		Resources: []*anypb.Any{cla("x"), cla("y")}})
	if err != nil {
		t.Fatal(err)
	}
	e, err = readEnvelope(sotw, false)
	if err != nil || string(e.version) != "v9" || string(e.nonce) != "n2" || e.resources != 2 || typeOf(e.typeURL) != 2 {
		t.Fatalf("sotw envelope = %+v, %v", e, err)
	}
	got = nil
	if err := eachSotWResource(sotw, func(v []byte) error {
		n, _ := firstString(v)
		got = append(got, n)
		return decodeFull(2, v)
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"x", "y"}) {
		t.Errorf("sotw resources = %q", got)
	}
	if _, err := readEnvelope([]byte{0x12, 0x05, 0x01}, true); err == nil {
		t.Error("a truncated response was read without an error")
	}
}

func TestInterner(t *testing.T) {
	in := newInterner()
	a, b := in.id([]byte("a")), in.id([]byte("b"))
	if a == b || in.id([]byte("a")) != a || in.str(b) != "b" {
		t.Errorf("ids a=%d b=%d, str(b)=%q", a, b, in.str(b))
	}
	if _, ok := in.lookup([]byte("c")); ok {
		t.Error("lookup of an unseen string succeeded")
	}
	if got := in.strings([]uint32{b, a}); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("strings = %q", got)
	}
}
