package server

import (
	"context"
	"log/slog"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/config"
	meshcreds "weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// TestSecretsOnlyToVerifiedGateways: a gateway on the verified (secure)
// endpoint gets the credentials of its own namespace it names, and a
// rotation; the same gateway on the plaintext endpoint, a sidecar of the
// namespace and a gateway of another namespace get none.
func TestSecretsOnlyToVerifiedGateways(t *testing.T) {
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	meshWith := func(version uint64, pem string) *mesh.Snapshot {
		creds := meshcreds.NewSet([]*meshcreds.Credential{
			meshcreds.FromData("istio-system", "edge-cert", map[string][]byte{"tls.crt": []byte(pem), "tls.key": []byte("key"), "ca.crt": []byte("ca")}),
			meshcreds.FromData("istio-system", "login", map[string][]byte{"client-secret": []byte("s3cret\n")}),
			meshcreds.FromData("shop", "shop-cert", map[string][]byte{"tls.crt": []byte("shop"), "tls.key": []byte("key")}),
		})
		return mesh.Build(&config.Snapshot{Version: version}, registry.NewSnapshot(nil, nil), mesh.Options{Credentials: creds})
	}
	s.Update(meshWith(1, "cert-1"))
	plainAddr, tlsDial := serveSecureAndPlain(t, s, func(context.Context, *core.Node) error { return nil })
	gateway := func(ns string) *core.Node {
		return contract.Identity{ID: contract.RouterNodePrefix + "~127.0.20.1~ingress." + ns + "~" + ns + ".svc.cluster.local", Namespace: ns,
			WorkloadName: "ingress", IPs: []string{"127.0.20.1"}}.Node()
	}
	names := []string{"kubernetes://edge-cert", "kubernetes://edge-cert-cacert", "kubernetes://login/client-secret", "kubernetes://shop-cert", "kubernetes://missing"}
	secretsOf := func(r *discovery.DiscoveryResponse) map[string]*tlsv3.Secret {
		out := map[string]*tlsv3.Secret{}
		for _, a := range r.GetResources() {
			var sec tlsv3.Secret
			if err := a.UnmarshalTo(&sec); err != nil {
				t.Fatal(err)
			}
			out[sec.GetName()] = &sec
		}
		return out
	}

	gw := tlsDial(gateway("istio-system"))
	gw.request(resource.SecretType, names, nil)
	r := gw.expect(resource.SecretType)
	got := secretsOf(r)
	if len(got) != 3 {
		t.Fatalf("verified gateway got %d secrets %v, want edge-cert, its CA and login/client-secret", len(got), keys(got))
	}
	if c := got["kubernetes://edge-cert"].GetTlsCertificate(); string(c.GetCertificateChain().GetInlineBytes()) != "cert-1" || string(c.GetPrivateKey().GetInlineBytes()) != "key" {
		t.Errorf("edge-cert: %v", got["kubernetes://edge-cert"])
	}
	if v := got["kubernetes://edge-cert-cacert"].GetValidationContext(); string(v.GetTrustedCa().GetInlineBytes()) != "ca" {
		t.Errorf("edge-cert-cacert: %v", got["kubernetes://edge-cert-cacert"])
	}
	if g := got["kubernetes://login/client-secret"].GetGenericSecret(); string(g.GetSecret().GetInlineBytes()) != "s3cret" {
		t.Errorf("login/client-secret: %v", got["kubernetes://login/client-secret"])
	}
	gw.request(resource.SecretType, names, r)

	// A rotation is pushed.
	s.Update(meshWith(2, "cert-2"))
	r = gw.expect(resource.SecretType)
	if c := secretsOf(r)["kubernetes://edge-cert"].GetTlsCertificate(); string(c.GetCertificateChain().GetInlineBytes()) != "cert-2" {
		t.Errorf("after rotation: %v", secretsOf(r)["kubernetes://edge-cert"])
	}

	for what, c := range map[string]*adsClient{
		"the gateway on the plaintext endpoint": dial(t, withDeadline(t), plainAddr, gateway("istio-system")),
		"a sidecar of the namespace":            tlsDial(contract.Identity{ID: contract.DefaultNodeID("127.0.1.1", "web", "istio-system"), Namespace: "istio-system", WorkloadName: "web", IPs: []string{"127.0.1.1"}}.Node()),
		"a gateway of another namespace":        tlsDial(gateway("billing")),
	} {
		c.request(resource.SecretType, names, nil)
		if r := c.expect(resource.SecretType); len(r.GetResources()) != 0 {
			t.Errorf("%s got %d secrets", what, len(r.GetResources()))
		}
	}

	// Delta on the plaintext endpoint: nothing for the secrets (the next
	// response answers the request after them).
	d := dialDelta(t, withDeadline(t), plainAddr, gateway("istio-system"))
	d.subscribe(resource.SecretType, names, nil)
	d.subscribe(resource.ClusterType, []string{"*"}, nil)
	if r := d.next(); r.GetTypeUrl() != resource.ClusterType {
		t.Errorf("delta on the plaintext endpoint: a %s response with %d resources first", r.GetTypeUrl(), len(r.GetResources()))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
