package binary

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/proxy/proxytest"
)

// gatewayConfig is a team's ingress: plain HTTP redirected to https, and
// HTTPS for app.example.com with the certificate of credential app-cert,
// routed to the web service (an echo app registered without a sidecar).
const gatewayConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: %[1]s3, ports: {http: 18080}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [app.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [app.example.com]
    tls: {mode: SIMPLE, credentialName: app-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: istio-system}
spec:
  hosts: [app.example.com]
  gateways: [ingress]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local}}]
`

// The built weft-proxy runs as a gateway exactly as docs/gateways.md
// starts it: it serves the Gateway's listeners from the credential
// directory's certificate, redirects plain HTTP, and its config dump
// shows every type decoded (the binary links them).
func TestGatewayBinary(t *testing.T) {
	bin := binaries(t)
	pre := newPrefix()
	dir := t.TempDir()
	cfgDir, creds := filepath.Join(dir, "config"), filepath.Join(dir, "credentials", "app-cert")
	for _, d := range []string{cfgDir, creds} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca := proxytest.NewMeshCA(t)
	cert := ca.Issue(t, "", time.Hour, "app.example.com")
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{
		filepath.Join(cfgDir, "gateway.yaml"): fmt.Appendf(nil, gatewayConfig, pre),
		filepath.Join(creds, "tls.crt"):       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		filepath.Join(creds, "tls.key"):       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	xds := pre + "100:15010"
	weft, proxy := filepath.Join(bin, "weft"), filepath.Join(bin, "weft-proxy")
	start(t, weft, "serve", "--config", cfgDir, "--xds-plaintext-address", xds,
		"--xds-address", pre+"100:15012", "--status-address", pre+"100:15014")
	start(t, weft, "echo", "--name", "web", "--address", pre+"3:18080")
	gw := pre + "5"
	start(t, proxy, "--gateway", "--xds-plaintext", "--xds-address", xds, "--workload", "ingress", "--namespace", "istio-system",
		"--labels", "istio=ingressgateway", "--ip", gw, "--gateway-bind", gw,
		"--credential-dir", filepath.Dir(creds), "--admin-address", gw+":15000")
	c := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 20*time.Second, "gateway ready", func() error {
		code, body, err := get(c, "http://"+gw+":15000/ready", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("/ready: %d %q %v", code, body, err)
		}
		return nil
	})

	dialer := &net.Dialer{Timeout: 2 * time.Second}
	to := func(addr string, cfg *tls.Config) *http.Client {
		return &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return dialer.DialContext(ctx, network, addr)
				},
				TLSClientConfig: cfg,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	https := to(gw+":8443", &tls.Config{RootCAs: ca.Pool})
	eventually(t, 20*time.Second, "https through the gateway", func() error {
		resp, err := https.Get("https://app.example.com:8443/hello")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var reply struct{ Name string }
		if resp.StatusCode != 200 || json.Unmarshal(b, &reply) != nil || reply.Name != "web" {
			return fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "app.example.com" {
			return fmt.Errorf("certificate for %v", got)
		}
		return nil
	})
	resp, err := to(gw+":8080", nil).Get("http://app.example.com/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "https://app.example.com/hello" {
		t.Errorf("plain HTTP: %d Location %q, want 301 to https://app.example.com/hello", resp.StatusCode, loc)
	}

	_, dump, err := get(c, "http://"+gw+":15000/config_dump", nil)
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	if err := json.Unmarshal([]byte(dump), &raw); err != nil {
		t.Fatalf("gateway /config_dump is not JSON: %v", err)
	}
	for _, u := range unresolvedTypes(raw) {
		t.Errorf("gateway /config_dump shows %s as bytes: weft-proxy does not link that type", u)
	}
	for _, want := range []string{`"` + gw + `_8080"`, `"` + gw + `_8443"`, `"https.8443.https.ingress.istio-system"`, `"kubernetes://app-cert"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("gateway /config_dump lacks %s", want)
		}
	}
	if strings.Contains(dump, "PRIVATE KEY") {
		t.Errorf("gateway /config_dump shows a private key")
	}
}
