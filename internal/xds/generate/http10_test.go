package generate

import (
	"slices"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// TestHTTP10: every connection manager of a sidecar (explicit or
// captured) and of a gateway accepts HTTP/1.0 when the proxy's node says
// so (ISTIO_META_HTTP10), the control plane does for the whole mesh
// (PILOT_HTTP10), or the mesh config's defaultConfig.proxyMetadata does;
// otherwise none sets http_protocol_options, and Envoy's default answers
// HTTP/1.0 with 426, as in Istio.
func TestHTTP10(t *testing.T) {
	metaMesh, warns, err := config.ParseMeshConfig("mesh.yaml", []byte(`defaultConfig: {proxyMetadata: {ISTIO_META_HTTP10: "1"}}`))
	if err != nil || len(warns) > 0 {
		t.Fatalf("mesh config: %v %v", err, warns)
	}
	captured := reviewsProxy
	captured.InterceptionMode = contract.InterceptionRedirect
	for _, tc := range []struct {
		name   string
		mesh   *mesh.Snapshot
		proxy  contract.Identity
		http10 bool // the node's
		want   bool
	}{
		{"sidecar", securityMesh(bookinfo, mesh.Options{}), reviewsProxy, false, false},
		{"sidecar, node HTTP10", securityMesh(bookinfo, mesh.Options{}), reviewsProxy, true, true},
		{"sidecar, mesh-wide", securityMesh(bookinfo, mesh.Options{HTTP10: true}), reviewsProxy, false, true},
		{"sidecar, mesh config proxyMetadata", securityMesh(bookinfo, mesh.Options{MeshConfig: metaMesh}), reviewsProxy, false, true},
		{"captured sidecar", securityMesh(bookinfo, mesh.Options{}), captured, false, false},
		{"captured sidecar, node HTTP10", securityMesh(bookinfo, mesh.Options{}), captured, true, true},
		{"gateway", yamlMesh(gatewayConfig)(), ingressGateway, false, false},
		{"gateway, node HTTP10", yamlMesh(gatewayConfig)(), ingressGateway, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.proxy
			id.HTTP10 = tc.http10
			n := 0
			for _, l := range ForProxy(tc.mesh, id).Listeners {
				eachHCM(t, l.(*listener.Listener), func(m *hcm.HttpConnectionManager) {
					n++
					if got := m.GetHttpProtocolOptions().GetAcceptHttp_10(); got != tc.want {
						t.Errorf("%s: accept_http_10 %v, want %v", m.GetStatPrefix(), got, tc.want)
					}
				})
			}
			if n == 0 {
				t.Fatal("no connection manager")
			}
		})
	}
	// A captured sidecar: every HTTP chain of its wildcard listener, on
	// declared HTTP and on sniffed ports, takes only what the inspector
	// found HTTP in, as Istio's (plaintextHTTPALPNs): http/1.1 and h2c,
	// and http/1.0 when it accepts HTTP/1.0. Other bytes, HTTP/1.0
	// otherwise, take the default chain to their original destination.
	for _, on := range []bool{false, true} {
		id := captured
		id.HTTP10 = on
		want := []string{"http/1.1", "h2c"}
		if on {
			want = []string{"http/1.0", "http/1.1", "h2c"}
		}
		n := 0
		for _, l := range ForProxy(securityMesh(bookinfo, mesh.Options{}), id).Listeners {
			l := l.(*listener.Listener)
			if l.GetName() != contract.ListenerVirtualOutbound {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				if fc.GetFilters()[0].GetName() != "envoy.filters.network.http_connection_manager" {
					continue
				}
				n++
				if got := fc.GetFilterChainMatch().GetApplicationProtocols(); !slices.Equal(got, want) {
					t.Errorf("HTTP10 %v: chain %s takes %v, want %v", on, fc.GetName(), got, want)
				}
			}
		}
		if n == 0 {
			t.Errorf("HTTP10 %v: no HTTP chain in %s", on, contract.ListenerVirtualOutbound)
		}
	}

	// Two sidecars that differ only in HTTP10 do not share their
	// outbound part.
	s := securityMesh(bookinfo, mesh.Options{})
	on := reviewsProxy
	on.HTTP10 = true
	if OutboundKey(s, reviewsProxy, IdentityKey(reviewsProxy)) == OutboundKey(s, on, IdentityKey(on)) {
		t.Error("OutboundKey is the same with and without HTTP10")
	}
}

// TestNodeHTTP10: HTTP10 goes to the node's metadata and back, "1" and
// "true" turning it on as Istio reads ISTIO_META_HTTP10.
func TestNodeHTTP10(t *testing.T) {
	id := reviewsProxy
	id.HTTP10 = true
	n := id.Node()
	if got, err := contract.ParseNode(n); err != nil || !got.HTTP10 {
		t.Fatalf("ParseNode(Node()) HTTP10 = %v, %v", got.HTTP10, err)
	}
	for v, want := range map[string]bool{"1": true, "true": true, "0": false, "false": false, "": false, "yes": false} {
		if got := contract.EnablesHTTP10(v); got != want {
			t.Errorf("EnablesHTTP10(%q) = %v, want %v", v, got, want)
		}
	}
}
