package kubetoken_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/ca/kubetoken"
	"weft.dev/weft/internal/spiffe"
	"weft.dev/weft/internal/testenv"
)

// A request without a bearer token, or with a Weft bootstrap token (an
// HS256 JWT), is not for this authenticator: the CA tries the next one,
// and no API server is asked.
func TestNoCredentialOfThisKind(t *testing.T) {
	a, err := kubetoken.New(kubetoken.Options{TokenReviews: unreachable{}, TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	// The header of a Weft bootstrap token: {"alg":"HS256","typ":"JWT"}.
	bootstrap := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln"
	for _, tok := range []string{"", bootstrap} {
		if _, err := a.Authenticate(context.Background(), ca.Credentials{BearerToken: tok}); !errors.Is(err, ca.ErrNoCredential) {
			t.Errorf("token %q: err = %v, want ErrNoCredential", tok, err)
		}
	}
	if _, err := kubetoken.New(kubetoken.Options{TrustDomain: "cluster.local"}); err == nil {
		t.Error("New without a client succeeded")
	}
}

// unreachable is a TokenReview client that must not be called.
type unreachable struct{}

func (unreachable) Create(context.Context, *authnv1.TokenReview, metav1.CreateOptions) (*authnv1.TokenReview, error) {
	panic("TokenReview called")
}

// A projected service-account token for audience istio-ca, issued by a
// real API server, proves its service account; one for another audience,
// or garbage, proves nothing. The reviews are made with the RBAC
// documented for the control plane (testdata/rbac.yaml of kubesource).
func TestKubernetesTokenReview(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx := t.Context()
	kube := env.Client(t)
	for _, ns := range []string{"weft-system", "shop"} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rbac, err := os.ReadFile("../../config/kubesource/testdata/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, rbac); err != nil {
		t.Fatal(err)
	}
	token := func(ns, sa string, audiences ...string) string {
		t.Helper()
		if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
		tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	// The CA runs as the control plane's service account.
	weft, err := kubernetes.NewForConfig(&rest.Config{Host: env.URL, BearerToken: token("weft-system", "weft"), TLSClientConfig: rest.TLSClientConfig{CAData: env.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := kubetoken.New(kubetoken.Options{TokenReviews: weft.AuthenticationV1().TokenReviews(), TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}

	caller, err := a.Authenticate(ctx, ca.Credentials{BearerToken: token("shop", "reviews", "istio-ca")})
	if err != nil {
		t.Fatalf("a token for istio-ca: %v", err)
	}
	want := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "reviews"}
	if caller.ID != want || caller.By != kubetoken.By || caller.Commit != nil {
		t.Errorf("caller = %+v, want %v", caller, want)
	}

	for name, tok := range map[string]string{
		"another audience":          token("shop", "reviews", "vault"),
		"the API server's audience": token("shop", "reviews"),
		"garbage":                   "not-a-token",
	} {
		_, err := a.Authenticate(ctx, ca.Credentials{BearerToken: tok})
		if err == nil || errors.Is(err, ca.ErrNoCredential) {
			t.Errorf("%s: err = %v, want a refusal", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}

	// A configured audience.
	a2, _ := kubetoken.New(kubetoken.Options{TokenReviews: weft.AuthenticationV1().TokenReviews(), TrustDomain: "example.org", Audience: "weft-ca"})
	caller, err = a2.Authenticate(ctx, ca.Credentials{BearerToken: token("shop", "ratings", "weft-ca")})
	if err != nil || caller.ID.String() != "spiffe://example.org/ns/shop/sa/ratings" {
		t.Errorf("audience weft-ca: %v, %v", caller, err)
	}
}
