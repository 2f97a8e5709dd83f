package kubesecrets

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/testenv"
)

// TestSecretsFromKubernetes: against a real API server, the Secrets that
// hold a credential — a kubernetes.io/tls Secret, Istio's generic keys,
// an Opaque Secret of other keys — are read, changes and deletions are
// followed, and Secrets that never hold one (registry credentials,
// service-account tokens) are not.
func TestSecretsFromKubernetes(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx := t.Context()
	c := env.Client(t)
	for _, ns := range []string{"shop", "billing"} {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put := func(ns, name string, typ corev1.SecretType, data map[string]string, annotations map[string]string) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}, Type: typ, StringData: data}
		if _, err := c.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ca := proxytest.NewMeshCA(t)
	pair := func() (cert, key string) {
		c := ca.Issue(t, "", time.Hour, "edge.example.com")
		k, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}))
	}
	cert1, key1 := pair()
	cert2, key2 := pair()
	cert3, _ := pair()
	root := string(ca.RootPEM)
	put("shop", "edge", corev1.SecretTypeTLS, map[string]string{"tls.crt": cert1, "tls.key": key1, "ca.crt": root}, nil)
	put("shop", "login", corev1.SecretTypeOpaque, map[string]string{"client-secret": "s3cret\n"}, nil)
	put("billing", "generic", corev1.SecretTypeOpaque, map[string]string{"cert": cert2, "key": key2, "cacert": root}, nil)
	put("shop", "pull", corev1.SecretTypeDockerConfigJson, map[string]string{".dockerconfigjson": `{"auths":{}}`}, nil)
	put("shop", "sa-token", corev1.SecretTypeServiceAccountToken, map[string]string{"token": "T"}, map[string]string{"kubernetes.io/service-account.name": "default"})

	// The watch runs with testdata/rbac.yaml's rights only.
	rbac, err := os.ReadFile("testdata/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, rbac); err != nil {
		t.Fatal(err)
	}
	cfg := env.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:weft-system:weft"}
	weft, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Options{Client: weft, Debounce: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 10*time.Second, src.Run)
	eventually(t, "synced", func() error {
		if !src.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	names := func(ns string) []string {
		var out []string
		for _, cr := range src.Current().InNamespace(ns) {
			out = append(out, cr.Name)
		}
		return out
	}
	if got := names("shop"); !slices.Equal(got, []string{"edge", "login"}) {
		t.Errorf("shop: %v, want edge and login (no registry credential, no token)", got)
	}
	edge := src.Current().InNamespace("shop")[0]
	if string(edge.Cert) != cert1 || string(edge.Key) != key1 || string(edge.CA) != root {
		t.Errorf("edge: %+v", edge)
	}
	if login := src.Current().InNamespace("shop")[1]; string(login.Files["client-secret"]) != "s3cret" || login.Cert != nil {
		t.Errorf("login: %+v", login)
	}
	if g := src.Current().InNamespace("billing"); len(g) != 1 || string(g[0].Cert) != cert2 || string(g[0].Key) != key2 || string(g[0].CA) != root {
		t.Errorf("billing: %+v", g)
	}

	// A rotation, then a deletion, each signalled.
	drain(src.Changed())
	update := func(data map[string]string) {
		t.Helper()
		s, err := c.CoreV1().Secrets("shop").Get(ctx, "edge", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		if _, err := c.CoreV1().Secrets("shop").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update(map[string]string{"tls.crt": cert2, "tls.key": key2})
	waitChanged(t, src)
	if cr := src.Current().InNamespace("shop")[0]; string(cr.Cert) != cert2 {
		t.Errorf("after the update: %q", cr.Cert)
	}
	// A certificate whose key is another's (a rotation caught half-way):
	// the last good pair stays; then the login's deletion.
	update(map[string]string{"tls.crt": cert3})
	if err := c.CoreV1().Secrets("shop").Delete(ctx, "login", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, src)
	if got := names("shop"); !slices.Equal(got, []string{"edge"}) {
		t.Errorf("after the deletion: %v", got)
	}
	if cr := src.Current().InNamespace("shop")[0]; string(cr.Cert) != cert2 || string(cr.Key) != key2 {
		t.Errorf("after a mismatched certificate: not the last good pair")
	}
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func waitChanged(t *testing.T, src credentials.Source) {
	t.Helper()
	select {
	case <-src.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("no change signalled")
	}
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSecretsForbidden: without the right to list Secrets the source
// counts as synced, with no credentials, so the control plane does not
// wait for it before serving.
func TestSecretsForbidden(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	cfg := env.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:weft-system:nobody"}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Options{Client: client, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 10*time.Second, src.Run)
	eventually(t, "synced without the right to list", func() error {
		if !src.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	if n := src.Current().Len(); n != 0 {
		t.Errorf("%d credentials", n)
	}
}
