package xdsload

import (
	"slices"
	"testing"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
	if err != nil || string(e.version) != "v9" || string(e.nonce) != "n2" || e.resources != 2 || (&Proxy{}).typeOf(e.typeURL) != 2 {
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

// TestWireVirtualHost: a VHDS response is read as the others — the
// resource's name, when the envelope has none, is the VirtualHost's own
// (field 1) — by a proxy that takes VHDS only.
func TestWireVirtualHost(t *testing.T) {
	a, err := anypb.New(&route.VirtualHost{Name: "8080/svc-0001.ns-01.svc.cluster.local:8080", Domains: []string{"svc-0001"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&discovery.DeltaDiscoveryResponse{TypeUrl: typeVirtualHost, Nonce: "n", Resources: []*discovery.Resource{{Version: "v1", Resource: a}}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := readEnvelope(b, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := (&Proxy{vhds: true}).typeOf(e.typeURL); got != vhdsIndex {
		t.Errorf("a VHDS proxy reads type %d, want %d", got, vhdsIndex)
	}
	if got := (&Proxy{}).typeOf(e.typeURL); got != -1 {
		t.Errorf("a proxy without VHDS reads type %d, want -1 (not subscribed)", got)
	}
	var names []string
	if err := eachDeltaResource(b, func(r deltaResource, _ bool) error {
		names = append(names, string(r.name))
		return decodeFull(vhdsIndex, r.value)
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"8080/svc-0001.ns-01.svc.cluster.local:8080"}; !slices.Equal(names, want) {
		t.Errorf("names = %q, want %q", names, want)
	}
}

// TestInterner: ids are given once per string and map back to it.
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
