package generate

import (
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// TestSecrets: a gateway gets its namespace's credentials as SDS
// secrets — certificate, CA ("-cacert", where a Secret of that very
// name wins), other keys ("/<key>") — and a sidecar none.
func TestSecrets(t *testing.T) {
	set := credentials.NewSet([]*credentials.Credential{
		credentials.FromData("istio-system", "edge", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K"), "ca.crt": []byte("own-ca")}),
		credentials.FromData("istio-system", "edge-cacert", map[string][]byte{"ca.crt": []byte("split-ca")}),
		credentials.FromData("istio-system", "login", map[string][]byte{"client-secret": []byte("s")}),
		credentials.FromData("shop", "other", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}),
	})
	m := mesh.Build(&config.Snapshot{}, registry.NewSnapshot(nil, nil), mesh.Options{Credentials: set})
	gw := contract.Identity{ID: contract.RouterNodePrefix + "~10.0.0.1~ingress.istio-system~istio-system.svc.cluster.local", Namespace: "istio-system"}
	got := map[string]*tlsv3.Secret{}
	var order []string
	for _, r := range Secrets(m, gw) {
		s := r.(*tlsv3.Secret)
		got[s.GetName()] = s
		order = append(order, s.GetName())
	}
	want := []string{"kubernetes://edge", "kubernetes://edge-cacert", "kubernetes://edge-cacert-cacert", "kubernetes://login/client-secret"}
	if len(order) != len(want) {
		t.Fatalf("secrets %v, want %v", order, want)
	}
	for i, n := range want {
		if order[i] != n {
			t.Fatalf("secrets %v, want %v (sorted)", order, want)
		}
	}
	if ca := got["kubernetes://edge-cacert"].GetValidationContext().GetTrustedCa().GetInlineBytes(); string(ca) != "split-ca" {
		t.Errorf("kubernetes://edge-cacert is %q, want the Secret edge-cacert's (split-ca)", ca)
	}
	if c := got["kubernetes://edge"].GetTlsCertificate(); string(c.GetCertificateChain().GetInlineBytes()) != "C" || string(c.GetPrivateKey().GetInlineBytes()) != "K" {
		t.Errorf("kubernetes://edge: %v", c)
	}
	if g := got["kubernetes://login/client-secret"].GetGenericSecret().GetSecret().GetInlineBytes(); string(g) != "s" {
		t.Errorf("login/client-secret: %q", g)
	}
	sidecar := contract.Identity{ID: contract.DefaultNodeID("10.0.0.2", "web", "istio-system"), Namespace: "istio-system"}
	if s := Secrets(m, sidecar); len(s) != 0 {
		t.Errorf("a sidecar got %d secrets", len(s))
	}
}

// TestSecretsOfAnotherNamespace: the certificate of another namespace
// that a translated Gateway API Gateway of the gateway's namespace names
// (kubernetes-gateway://, a ReferenceGrant permitting) is sent to that
// Gateway's gateways only, under that name.
func TestSecretsOfAnotherNamespace(t *testing.T) {
	set := credentials.NewSet([]*credentials.Credential{
		credentials.FromData("certs", "shop-cert", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}),
	})
	gw := &config.Gateway{
		Meta:        config.Meta{Kind: config.KindGateway, Namespace: "shop", Name: "public-gwapi-https"},
		Annotations: map[string]string{config.AnnotationGeneratedFrom: "Gateway.gateway.networking.k8s.io shop/public"},
		Spec: &networking.Gateway{Selector: map[string]string{config.GatewayNameLabel: "public"}, Servers: []*networking.Server{{
			Port:  &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"},
			Hosts: []string{"*"},
			Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: "kubernetes-gateway://certs/shop-cert"},
		}}},
	}
	m := mesh.Build(&config.Snapshot{Gateways: []*config.Gateway{gw}}, registry.NewSnapshot(nil, nil), mesh.Options{Credentials: set})
	id := func(ns, gwName string) contract.Identity {
		return contract.Identity{ID: contract.RouterNodePrefix + "~10.0.0.1~gw." + ns + "~" + ns + ".svc.cluster.local", Namespace: ns,
			Labels: map[string]string{config.GatewayNameLabel: gwName}}
	}
	got := Secrets(m, id("shop", "public"))
	if len(got) != 1 || got[0].(*tlsv3.Secret).GetName() != "kubernetes-gateway://certs/shop-cert" {
		t.Fatalf("the Gateway's gateway got %v", got)
	}
	for what, other := range map[string]contract.Identity{
		"another Gateway's gateway":           id("shop", "other"),
		"a gateway of another namespace":      id("billing", "public"),
		"a gateway of the Secret's namespace": id("certs", "public"),
	} {
		for _, r := range Secrets(m, other) {
			if n := r.(*tlsv3.Secret).GetName(); n == "kubernetes-gateway://certs/shop-cert" {
				t.Errorf("%s got %s", what, n)
			}
		}
	}
}
