package kuberoot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"weft.dev/weft/internal/testenv"
)

// TestKubernetesRootCertPublished: with only testdata/rbac.yaml's rights,
// the root certificate lands in every namespace — existing and new — and
// comes back after it is edited or deleted.
func TestKubernetesRootCertPublished(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx := t.Context()
	admin := env.Client(t)
	rbac, err := os.ReadFile("testdata/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, rbac); err != nil {
		t.Fatal(err)
	}
	mkNS := func(name string) {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNS("shop")
	cfg := env.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:weft-system:weft"}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := []byte("-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n")
	p := New(client, slog.New(slog.DiscardHandler))
	testenv.Run(t, 10*time.Second, func(ctx context.Context) error { return p.Run(ctx, root) })

	has := func(ns string) func() error {
		return func() error {
			cm, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, ConfigMapName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cm.Data[Key] != string(root) {
				return fmt.Errorf("%s/%s holds %q", ns, ConfigMapName, cm.Data[Key])
			}
			return nil
		}
	}
	eventually(t, "published to an existing namespace", has("shop"))
	eventually(t, "published to default", has("default"))
	mkNS("billing")
	eventually(t, "published to a new namespace", has("billing"))

	cm, err := admin.CoreV1().ConfigMaps("shop").Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[Key] = "tampered"
	if _, err := admin.CoreV1().ConfigMaps("shop").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an edited ConfigMap restored", has("shop"))
	if err := admin.CoreV1().ConfigMaps("billing").Delete(ctx, ConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted ConfigMap recreated", has("billing"))
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
