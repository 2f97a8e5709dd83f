package upstream

import (
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/proxy/proxytest"
)

func tlsModeMetadata(mode string) *core.Metadata {
	return &core.Metadata{FilterMetadata: map[string]*structpb.Struct{TransportSocketMatchKey: {
		Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(mode)}}}}
}

// TestTransportSocketMatches: with automatic mutual TLS an endpoint whose
// metadata says tlsMode=istio gets TLS connections and the others
// plaintext; an endpoint whose metadata changes gets new connections.
func TestTransportSocketMatches(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	c := proxytest.AutoMTLS(t, proxytest.EDSCluster(t, "c", false, ""), proxytest.IstioUpstreamTLS("outbound_.80_._.svc", nil, "http/1.1"))
	o, err := ParseOptions(c, ca.Secrets(t, proxytest.SPIFFE("default", "client")))
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(o)
	defer p.CloseIdle()
	sidecar := p.Endpoint("10.0.0.1:80", tlsModeMetadata("istio"))
	if !sidecar.TLS() || sidecar.sni != "outbound_.80_._.svc" || strings.Join(sidecar.h1Config.NextProtos, ",") != "http/1.1" {
		t.Errorf("tlsMode=istio: TLS %v, SNI %q, ALPN %v", sidecar.TLS(), sidecar.sni, sidecar.h1Config.NextProtos)
	}
	for name, md := range map[string]*core.Metadata{"no metadata": nil, "tlsMode=disabled": tlsModeMetadata("disabled")} {
		if e := p.Endpoint("10.0.0.2:80", md); e.TLS() {
			t.Errorf("%s: TLS", name)
		}
	}
	if p.Endpoint("10.0.0.1:80", nil) == sidecar {
		t.Error("the same endpoint in plaintext shares the TLS connections")
	}
	if p.Endpoint("10.0.0.1:80", tlsModeMetadata("istio")) != sidecar {
		t.Error("the same endpoint in the same socket got new connections")
	}

	// Without a match for plaintext, the cluster's transport_socket.
	c.TransportSocketMatches = c.TransportSocketMatches[:1]
	o, _ = ParseOptions(c, nil)
	p2 := NewPool(o)
	defer p2.CloseIdle()
	if p2.Endpoint("10.0.0.3:80", nil).TLS() {
		t.Error("an endpoint no match takes is not in the cluster's (plaintext) transport_socket")
	}

	bad := proxytest.EDSCluster(t, "c", false, "")
	bad.TransportSocketMatches = []*cluster.Cluster_TransportSocketMatch{{Name: "x"}}
	if _, err := ParseOptions(bad, nil); err == nil || !strings.Contains(err.Error(), "transport_socket_matches[0].transport_socket: missing") {
		t.Errorf("a match without socket: %v", err)
	}
}
