package analyze

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
)

// TestGatewayCredentials: with Secrets read, a Gateway server whose
// credentialName the namespace of its gateways does not hold (or holds
// without a key, or, for MUTUAL, without a CA) is reported; one that is
// there is not; without Secrets read nothing is.
func TestGatewayCredentials(t *testing.T) {
	files := map[string][]byte{"gw.yaml": []byte(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress-1, namespace: istio-system}
spec: {address: 10.0.0.1, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, credentialName: b-cert}
  - port: {number: 8443, name: https-m, protocol: HTTPS}
    hosts: [m.example.com]
    tls: {mode: MUTUAL, credentialName: m-cert}
`)}
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(files)
	creds := credentials.NewSet([]*credentials.Credential{
		credentials.FromData("istio-system", "a-cert", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}),
		credentials.FromData("istio-system", "m-cert", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}),
		credentials.FromData("default", "b-cert", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}),
	})
	analyzeWith := func(c *credentials.Set) []string {
		m := mesh.Build(snap, static.Build(snap, ""), mesh.Options{Credentials: c})
		var out []string
		for _, d := range Mesh(m, Options{}) {
			if d.Code == config.CodeGatewayCredential {
				out = append(out, fmt.Sprintf("%s %s:%d %s: %s", d.Severity, d.File, d.Line, d.Path, d.Message))
			}
		}
		return out
	}
	want := []string{
		`warning gw.yaml:17 spec.servers[1].tls.credentialName: credentialName "b-cert": namespace istio-system has no Secret b-cert with a certificate and key: the gateways there refuse the handshake for this server's hosts unless their --credential-dir holds it`,
		`warning gw.yaml:20 spec.servers[2].tls.credentialName: credentialName "m-cert": namespace istio-system has no CA for it (ca.crt in Secret m-cert, or Secret m-cert-cacert): the gateways there refuse the handshake for this server's hosts unless their --credential-dir holds it`,
	}
	if got := analyzeWith(creds); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := analyzeWith(nil); len(got) != 0 {
		t.Errorf("without Secrets read: %v", got)
	}
}
