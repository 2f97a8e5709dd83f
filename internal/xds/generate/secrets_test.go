package generate

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
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

// TestEgressGatewayCredentialName: a DestinationRule's credentialName
// makes a gateway originate TLS with the Secret over ADS (MUTUAL: the
// client certificate kubernetes://<name>; both modes: the CA
// kubernetes://<name>-cacert, SANs kept), as Istio's gateways; a sidecar
// originates none.
func TestEgressGatewayCredentialName(t *testing.T) {
	m := securityMesh(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: istio-system}
spec:
  hosts: [api.partner.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 443}]
  endpoints: [{address: 10.9.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: partner, namespace: istio-system}
spec:
  host: api.partner.example
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: partner-client, sni: api.partner.example, subjectAltNames: [api.partner.example]}
`, mesh.Options{})
	upstream := func(id contract.Identity) *tlsv3.UpstreamTlsContext {
		for _, r := range ForProxy(m, id).Clusters {
			c := r.(*cluster.Cluster)
			if c.GetName() != "outbound|80||api.partner.example" {
				continue
			}
			if c.GetTransportSocket() == nil {
				return nil
			}
			var u tlsv3.UpstreamTlsContext
			if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&u); err != nil {
				t.Fatal(err)
			}
			return &u
		}
		t.Fatal("no cluster for api.partner.example")
		return nil
	}
	gw := contract.Identity{ID: contract.RouterNodePrefix + "~10.0.0.1~egress.istio-system~istio-system.svc.cluster.local", Namespace: "istio-system", MTLS: true}
	u := upstream(gw)
	if u == nil {
		t.Fatal("the egress gateway originates no TLS")
	}
	common := u.GetCommonTlsContext()
	certs := common.GetTlsCertificateSdsSecretConfigs()
	if len(certs) != 1 || certs[0].GetName() != "kubernetes://partner-client" || certs[0].GetSdsConfig().GetAds() == nil {
		t.Errorf("client certificate: %v", certs)
	}
	cv := common.GetCombinedValidationContext()
	if n := cv.GetValidationContextSdsSecretConfig(); n.GetName() != "kubernetes://partner-client-cacert" || n.GetSdsConfig().GetAds() == nil {
		t.Errorf("CA: %v", n)
	}
	if sans := cv.GetDefaultValidationContext().GetMatchSubjectAltNames(); len(sans) != 1 || sans[0].GetExact() != "api.partner.example" {
		t.Errorf("SANs: %v", sans)
	}
	if cv.GetDefaultValidationContext().GetSystemRootCerts() != nil || u.GetSni() != "api.partner.example" {
		t.Errorf("system roots %v, sni %q", cv.GetDefaultValidationContext().GetSystemRootCerts(), u.GetSni())
	}
	sidecar := contract.Identity{ID: contract.DefaultNodeID("10.0.0.2", "web", "istio-system"), Namespace: "istio-system", MTLS: true}
	if u := upstream(sidecar); u != nil {
		t.Errorf("a sidecar originates TLS: %v", u)
	}
}
