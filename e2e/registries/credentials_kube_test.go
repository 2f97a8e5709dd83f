package registries

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/testenv"
)

// credentialsKubeYAML is an Istio Gateway of namespace shop terminating
// TLS for shop.example.com with the Secret shop-cert (credentialName),
// routed to Service web.
const credentialsKubeYAML = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {app: public-gw}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http:
  - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: store, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    port: 9443
    protocol: HTTPS
    hostname: store.example.com
    tls: {certificateRefs: [{name: store-cert, namespace: certs}]}
  - name: later
    port: 9444
    protocol: HTTPS
    hostname: later.example.com
    tls: {certificateRefs: [{name: later-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{name: store}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`

// egressYAML makes the same gateway an egress gateway for
// api.partner.example: plain HTTP in on port 8080, mutual TLS out to the
// partner's server at addr:port with the client certificate of Secret
// partner-client (DestinationRule credentialName), as Istio's "egress
// gateway with mutual TLS origination".
func egressYAML(addr string, port int) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: shop}
spec:
  hosts: [api.partner.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: %d}]
  endpoints: [{address: %s}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: partner, namespace: shop}
spec:
  host: api.partner.example
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: partner-client, sni: api.partner.example}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: shop}
spec:
  selector: {app: public-gw}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [api.partner.example]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner, namespace: shop}
spec:
  hosts: [api.partner.example]
  gateways: [egress]
  http:
  - route: [{destination: {host: api.partner.example, port: {number: 80}}}]
`, port, addr)
}

// storeGrantYAML lets Gateways of namespace shop use Secret
// certs/store-cert.
const storeGrantYAML = `
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}]
  to: [{group: "", kind: Secret, name: store-cert}]
`

// TestGatewayCredentialsFromKubernetes: a Gateway's credentialName is a
// Secret of the API server, as with Istio — no mount, no credential
// directory. The control plane sends it to the gateway of the Secret's
// namespace over ADS (the secure port, which proves the gateway's
// namespace); the gateway serves it, then a rotated certificate written
// to the same Secret, to new connections. A Secret of the same name in
// another namespace is never served. A Gateway API listener's
// certificate of another namespace is served once a ReferenceGrant there
// permits it.
func TestGatewayCredentialsFromKubernetes(t *testing.T) {
	bin := binaries(t)
	env := testenv.KubeAPIServer(t, testenv.WithIstioCRDs(), testenv.WithGatewayAPICRDs())
	k := &kube{t: t, env: env, c: env.Client(t), ctx: t.Context()}
	n := testenv.NewNetwork(t)
	for _, ns := range []string{"shop", "billing", "certs", "weft-system"} { // weft-system: the status writer's Lease
		k.namespace(ns)
	}

	webNS := n.Netns(t, "web")
	k.service("shop", "web", 8080, map[string]string{"app": "web"})
	k.pod("shop", "web-a", "default", webNS.IP, map[string]string{"app": "web"})
	k.endpointSlice("shop", "web", 8080, []sliceEndpoint{{pod: "web-a", ip: webNS.IP, ready: true, serving: true}})
	startCmd(t, "web echo", webNS.Command(context.Background(), filepath.Join(bin, "weft"), "echo",
		"--name", "web-a", "--version", "v1", "--address", webNS.IP+":8080"))

	ca := proxytest.NewMeshCA(t)
	putSecret := func(ns, name string, cert *tls.Certificate) {
		t.Helper()
		key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{
			"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
			"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		}}
		_, err = k.c.CoreV1().Secrets(ns).Update(k.ctx, s, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			_, err = k.c.CoreV1().Secrets(ns).Create(k.ctx, s, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	first := ca.Issue(t, "", time.Hour, "shop.example.com")
	putSecret("shop", "shop-cert", first)
	putSecret("billing", "shop-cert", ca.Issue(t, "", time.Hour, "shop.example.com", "billing.example.com"))
	store := ca.Issue(t, "", time.Hour, "store.example.com")
	putSecret("certs", "store-cert", store)
	k.apply(credentialsKubeYAML)

	// The partner's server: TLS on the host's address of the network,
	// answering only clients whose certificate the test CA signed.
	partner := startPartner(t, n.Gateway, ca)
	clientCert := ca.Issue(t, "", time.Hour, "shop-egress")
	putSecret("shop", "partner-client", clientCert)
	caSecret, err := k.c.CoreV1().Secrets("shop").Get(k.ctx, "partner-client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caSecret.Data["ca.crt"] = ca.RootPEM
	if _, err := k.c.CoreV1().Secrets("shop").Update(k.ctx, caSecret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	k.apply(egressYAML(n.Gateway, partner.port))

	cp := serve(t, bin, n, "--kubeconfig", k.env.Kubeconfig)
	gwNS := n.Netns(t, "gw")
	startWorkload(t, bin, cp, gwNS, workloadSpec{
		Name: "public-gw", Namespace: "shop", ServiceAccount: "public-gw", Labels: "app=public-gw," + config.GatewayNameLabel + "=store",
		TokenFile: k.serviceAccountToken("shop", "public-gw"),
		Extra:     []string{"--gateway", "--gateway-bind", gwNS.IP},
	})

	// servedFor returns the serial of the certificate the gateway
	// presents for host on port, after a request through it answered 200.
	servedFor := func(host string, port int) (string, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ca.Pool, ServerName: host},
			DisableKeepAlives: true, // each request a new handshake
		}}
		req, err := http.NewRequest("GET", fmt.Sprintf("https://%s:%d/", gwNS.IP, port), nil)
		if err != nil {
			return "", err
		}
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		if r, err := reply(string(body)); err != nil || r.Version != "v1" {
			return "", fmt.Errorf("answered by %q (%v)", r.Version, err)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
	}
	served := func() (string, error) { return servedFor("shop.example.com", 8443) }
	wantSerialFor := func(what, host string, port int, cert *tls.Certificate) {
		t.Helper()
		want := cert.Leaf.SerialNumber.String()
		eventually(t, 30*time.Second, what, func() error {
			got, err := servedFor(host, port)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("certificate serial %s, want %s", got, want)
			}
			return nil
		})
	}
	wantSerial := func(what string, cert *tls.Certificate) {
		t.Helper()
		wantSerialFor(what, "shop.example.com", 8443, cert)
	}
	wantSerial("HTTPS with the Secret's certificate", first)

	// Rotation: a new certificate written to the Secret is served to the
	// next handshake.
	second := ca.Issue(t, "", time.Hour, "shop.example.com")
	putSecret("shop", "shop-cert", second)
	wantSerial("HTTPS with the rotated certificate", second)
	for range 5 {
		if _, err := served(); err != nil {
			t.Fatalf("after the rotation: %v", err)
		}
	}

	// Egress: the gateway originates mutual TLS to the partner with the
	// Secret's client certificate, verifying the partner against its CA.
	eventually(t, 30*time.Second, "the partner through the egress gateway, mutual TLS out", func() error {
		code, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, fmt.Sprintf("http://%s:8080/orders", gwNS.IP), map[string]string{"Host": "api.partner.example"})
		if err != nil || code != 200 {
			return fmt.Errorf("%d %q %v", code, body, err)
		}
		if want := "client " + clientCert.Leaf.SerialNumber.String(); body != want {
			return fmt.Errorf("the partner saw %q, want %q", body, want)
		}
		return nil
	})

	// The Gateway API listener's certificate of namespace certs: refused
	// (no handshake) until a ReferenceGrant there permits it.
	if _, err := servedFor("store.example.com", 9443); err == nil {
		t.Fatal("a certificate of another namespace served without a ReferenceGrant")
	}
	dyn := env.Dynamic(t)
	listener := func(name string, want ...string) func() error {
		return func() error { return wantListener(dyn, "shop", "store", name, want...) }
	}
	eventually(t, 20*time.Second, "listener https: RefNotPermitted", listener("https", "ResolvedRefs=False/RefNotPermitted", "Programmed=False"))
	// A listener whose Secret does not exist says so in its status
	// (ResolvedRefs, InvalidCertificateRef), until the Secret is made.
	eventually(t, 20*time.Second, "listener later: InvalidCertificateRef", listener("later", "ResolvedRefs=False/InvalidCertificateRef:shop/later-cert does not exist", "Programmed=False"))
	k.apply(storeGrantYAML)
	wantSerialFor("HTTPS with a certificate of another namespace, granted", "store.example.com", 9443, store)
	eventually(t, 20*time.Second, "listener https resolved once granted", listener("https", "ResolvedRefs=True", "Programmed=True"))
	later := ca.Issue(t, "", time.Hour, "later.example.com")
	putSecret("shop", "later-cert", later)
	eventually(t, 20*time.Second, "listener later resolved once its Secret exists", listener("later", "ResolvedRefs=True/ResolvedRefs", "Programmed=True"))
	wantSerialFor("HTTPS once the listener's Secret was made", "later.example.com", 9444, later)
}

// wantListener checks the conditions of listener name in the status of
// Gateway API Gateway ns/gw.
func wantListener(dyn dynamic.Interface, ns, gw, name string, want ...string) error {
	obj, err := dyn.Resource(kubeGatewayGVR).Namespace(ns).Get(context.Background(), gw, metav1.GetOptions{})
	if err != nil {
		return err
	}
	ls, _, _ := unstructured.NestedSlice(obj.Object, "status", "listeners")
	for _, l := range ls {
		m, _ := l.(map[string]any)
		if m["name"] == name {
			conds, _ := m["conditions"].([]any)
			return checkConditions(conds, obj.GetGeneration(), want...)
		}
	}
	return fmt.Errorf("no status of listener %s: %v", name, ls)
}

type partnerServer struct{ port int }

// startPartner serves HTTPS on addr, requiring a client certificate the
// CA signed, and answers "client <serial>" of the certificate it saw.
func startPartner(t *testing.T, addr string, ca *proxytest.MeshCA) *partnerServer {
	t.Helper()
	cert := ca.Issue(t, "", time.Hour, "api.partner.example")
	lis, err := tls.Listen("tcp", net.JoinHostPort(addr, "0"), &tls.Config{
		Certificates: []tls.Certificate{*cert}, ClientCAs: ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "client %s", r.TLS.PeerCertificates[0].SerialNumber)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return &partnerServer{port: lis.Addr().(*net.TCPAddr).Port}
}
