package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeEnv is a running etcd + kube-apiserver pair on loopback. There is no
// scheduler, controller manager or kubelet: tests create Pods and play the
// kubelet by writing their status, and create EndpointSlices themselves.
type KubeEnv struct {
	// URL is the API server's https address.
	URL string
	// Kubeconfig is the path of a kubeconfig file for an administrator
	// (group system:masters), trusting the API server's CA.
	Kubeconfig string
	// AdminToken authenticates as that administrator.
	AdminToken string
	// CAPEM is the CA that signed the API server's serving certificate.
	CAPEM []byte
	// ServiceAccountIssuer is the issuer of the service-account tokens the
	// API server signs (TokenRequest).
	ServiceAccountIssuer string

	dir       string
	apiserver *process
}

// KubeOption changes how KubeAPIServer starts.
type KubeOption func(*kubeOptions)

type kubeOptions struct {
	istioCRDs      bool
	weftCRDs       bool
	gatewayAPICRDs bool
	extraArgs      []string
}

// WithIstioCRDs installs Istio's CustomResourceDefinitions — the file users
// apply, istio.io/api's kubernetes/customresourcedefinitions.gen.yaml —
// and waits until every one is established.
func WithIstioCRDs() KubeOption { return func(o *kubeOptions) { o.istioCRDs = true } }

// WithWeftCRDs installs Weft's own CustomResourceDefinitions (RateLimit;
// charts/weft-crds/files/weft-crds.yaml, which the weft-crds chart
// installs beside Istio's) and waits until they are established.
func WithWeftCRDs() KubeOption { return func(o *kubeOptions) { o.weftCRDs = true } }

// WithGatewayAPICRDs installs the Kubernetes Gateway API's standard CRDs
// of the kinds Weft reads (GatewayAPICRDs) and waits until they are
// established.
func WithGatewayAPICRDs() KubeOption { return func(o *kubeOptions) { o.gatewayAPICRDs = true } }

// WithAPIServerArgs adds kube-apiserver flags.
func WithAPIServerArgs(args ...string) KubeOption {
	return func(o *kubeOptions) { o.extraArgs = append(o.extraArgs, args...) }
}

// KubeAPIServer starts etcd and a kube-apiserver for t on loopback
// ephemeral ports, in a temporary directory, with RBAC authorization,
// token authentication for the administrator and service-account token
// issuing (TokenRequest, TokenReview). Both stop in t.Cleanup. It skips t
// when the binaries are missing (fails when Required).
func KubeAPIServer(t testing.TB, opts ...KubeOption) *KubeEnv {
	t.Helper()
	var o kubeOptions
	for _, opt := range opts {
		opt(&o)
	}
	etcdBin := Tool(t, "etcd")
	apiBin := Tool(t, "kube-apiserver")
	dir, err := os.MkdirTemp("", "weft-kube-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	env := &KubeEnv{dir: dir}
	var procs []*process
	t.Cleanup(func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(10 * time.Second)
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("testenv: %s log (%s) ends:\n%s", p.name, p.log, p.tail(30))
			}
		}
		os.RemoveAll(dir)
	})

	// Each server is started again on new ports when one of its ports
	// was taken before it could bind it (waitReady).
	var etcdURL string
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 2)
		etcdURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		etcd := start(t, dir, "etcd", etcdBin, nil,
			"--name=weft", "--data-dir="+filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt)),
			"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
			"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=weft="+peerURL, "--log-level=warn")
		procs = append(procs, etcd)
		if waitReady(t, etcd, 30*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, http.DefaultClient, etcdURL+"/health", "")
		}) {
			break
		}
		if attempt == 3 {
			t.Fatalf("testenv: etcd lost a port to another process three times; its log ends:\n%s", etcd.tail(40))
		}
		t.Logf("testenv: etcd lost a port to another process; starting it again on new ports")
	}

	if err := env.writeCerts(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	env.AdminToken = randomToken()
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"),
		[]byte(env.AdminToken+",weft-test-admin,weft-test-admin,\"system:masters\"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	env.ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CAPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for attempt := 1; ; attempt++ {
		port := freePorts(t, 1)[0]
		env.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
			"--advertise-address=127.0.0.1",
			// v1.37 exits with a loopback advertise address unless the
			// endpoint reconciler is off.
			"--endpoint-reconciler-type=none",
			"--tls-cert-file=" + filepath.Join(dir, "serving.crt"),
			"--tls-private-key-file=" + filepath.Join(dir, "serving.key"),
			"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
			"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-cluster-ip-range=10.96.0.0/16",
			"--service-account-issuer=" + env.ServiceAccountIssuer,
			"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
			"--api-audiences=" + env.ServiceAccountIssuer,
			"--allow-privileged=true",
			// No controller manager runs to create each namespace's "default"
			// ServiceAccount, which this admission plugin would wait for.
			"--disable-admission-plugins=ServiceAccount",
			"--cert-dir=" + filepath.Join(dir, "certs"),
			"--v=0",
		}
		args = append(args, o.extraArgs...)
		api := start(t, dir, "kube-apiserver", apiBin, nil, args...)
		procs = append(procs, api)
		env.apiserver = api
		if waitReady(t, api, 90*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, hc, env.URL+"/readyz", env.AdminToken)
		}) {
			break
		}
		if attempt == 3 {
			t.Fatalf("testenv: kube-apiserver lost its port to another process three times; its log ends:\n%s", api.tail(40))
		}
		t.Logf("testenv: kube-apiserver lost its port to another process; starting it again on a new port")
	}
	hc.CloseIdleConnections()
	if err := env.writeKubeconfig(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if o.istioCRDs {
		if err := env.InstallIstioCRDs(context.Background()); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if o.weftCRDs {
		if err := env.InstallWeftCRDs(context.Background()); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if o.gatewayAPICRDs {
		if err := env.InstallGatewayAPICRDs(context.Background()); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return env
}

// RESTConfig returns a client configuration for the administrator.
func (e *KubeEnv) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            e.URL,
		BearerToken:     e.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.CAPEM},
		QPS:             200,
		Burst:           400,
	}
}

// Client returns a clientset for the administrator.
func (e *KubeEnv) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(e.RESTConfig())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

// Dynamic returns a dynamic client for the administrator.
func (e *KubeEnv) Dynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(e.RESTConfig())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

// IstioCRDsFile returns the path of Istio's CRDs as istio.io/api ships
// them (the module in the build's module graph).
func IstioCRDsFile() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		return "", fmt.Errorf("locate istio.io/api: go list: %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("istio CRDs: %w", err)
	}
	return p, nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallIstioCRDs creates Istio's CRDs from IstioCRDsFile (as `kubectl
// apply -f` of that file would) and waits until the API server serves
// them.
func (e *KubeEnv) InstallIstioCRDs(ctx context.Context) error {
	path, err := IstioCRDsFile()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return e.Apply(ctx, data)
}

// InstallWeftCRDs creates Weft's own CRDs from the weft-crds chart's
// files/weft-crds.yaml in this module, and waits until the API server
// serves them.
func (e *KubeEnv) InstallWeftCRDs(ctx context.Context) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "weft.dev/weft").Output()
	if err != nil {
		return fmt.Errorf("locate weft.dev/weft: go list: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "charts", "weft-crds", "files", "weft-crds.yaml"))
	if err != nil {
		return fmt.Errorf("weft CRDs: %w", err)
	}
	return e.Apply(ctx, data)
}

// GatewayAPICRDs returns the paths of the Gateway API's standard CRDs of
// the kinds Weft reads, as sigs.k8s.io/gateway-api (the version in the
// build's module graph) ships them in config/crd/standard — the files of
// its standard-install.yaml.
func GatewayAPICRDs() ([]string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return nil, fmt.Errorf("locate sigs.k8s.io/gateway-api: go list: %w", err)
	}
	var paths []string
	for _, r := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "tcproutes", "tlsroutes", "referencegrants"} {
		p := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard", "gateway.networking.k8s.io_"+r+".yaml")
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("gateway API CRDs: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// InstallGatewayAPICRDs creates the CRDs of GatewayAPICRDs and waits
// until the API server serves them.
func (e *KubeEnv) InstallGatewayAPICRDs(ctx context.Context) error {
	paths, err := GatewayAPICRDs()
	if err != nil {
		return err
	}
	var all []byte
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		all = append(append(all, "\n---\n"...), data...)
	}
	return e.Apply(ctx, all)
}

// Apply creates every object of a multi-document YAML stream through the
// dynamic client (CRDs, namespaces, anything whose resource is the
// lower-case plural of its kind), waiting for CRDs to be established.
func (e *KubeEnv) Apply(ctx context.Context, yamlDocs []byte) error {
	dc, err := dynamic.NewForConfig(e.RESTConfig())
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(yamlDocs), 4096)
	var crds []string
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("apply: decode: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		gvr := gvk.GroupVersion().WithResource(strings.ToLower(gvk.Kind) + "s")
		switch k := gvk.Kind; {
		case strings.HasSuffix(k, "y") && len(k) > 1 && !strings.ContainsRune("aeiou", rune(k[len(k)-2])): // Policy, not Gateway
			gvr.Resource = strings.ToLower(strings.TrimSuffix(gvk.Kind, "y")) + "ies"
		case strings.HasSuffix(gvk.Kind, "s"): // GatewayClass
			gvr.Resource = strings.ToLower(gvk.Kind) + "es"
		}
		var ri dynamic.ResourceInterface = dc.Resource(gvr)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dc.Resource(gvr).Namespace(ns)
		}
		if _, err := ri.Create(ctx, &obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apply: create %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		if gvr == crdGVR {
			crds = append(crds, obj.GetName())
		}
	}
	for _, name := range crds {
		if err := waitEstablished(ctx, dc, name); err != nil {
			return err
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, dc dynamic.Interface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		crd, err := dc.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not established: %w (last error: %v)", name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpOK GETs url and wants 200.
func httpOK(ctx context.Context, hc *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func (e *KubeEnv) writeKubeconfig() error {
	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: weft-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: weft-test
  context: {cluster: weft-test, user: admin}
current-context: weft-test
`, e.URL, b64(e.CAPEM), e.AdminToken)
	return os.WriteFile(e.Kubeconfig, []byte(cfg), 0o600)
}

// writeCerts makes a CA, the API server's serving certificate (127.0.0.1,
// localhost) and the service-account signing key pair.
func (e *KubeEnv) writeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft-test-kube-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	e.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":      e.CAPEM,
		"serving.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"serving.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: srvKeyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
