// Package kubetoken authenticates the mesh CA's signing requests with
// Kubernetes service-account tokens: a pod's projected token (audience
// "istio-ca" by default, as Istio's) is sent as "authorization: Bearer"
// and verified by the API server with the TokenReview API; the service
// account it names is the identity it proves,
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
package kubetoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/spiffe"
)

// DefaultAudience is the audience a projected token must be issued for,
// as Istio's CA requires.
const DefaultAudience = "istio-ca"

// DefaultTimeout bounds one TokenReview.
const DefaultTimeout = 5 * time.Second

// Options configure an Authenticator.
type Options struct {
	// TokenReviews creates TokenReviews (kubernetes.Interface's
	// AuthenticationV1().TokenReviews()). Required. The control plane's
	// service account needs "create" on tokenreviews.authentication.k8s.io.
	TokenReviews authnclient.TokenReviewInterface
	// TrustDomain of the identities proved. Required.
	TrustDomain string
	// Audience the token must be issued for; "" means DefaultAudience.
	Audience string
	// Timeout bounds each review; zero means DefaultTimeout.
	Timeout time.Duration
}

// Authenticator is a ca.Authenticator for service-account tokens. Safe
// for concurrent use.
type Authenticator struct{ opts Options }

var _ ca.Authenticator = (*Authenticator)(nil)

// New checks opts.
func New(opts Options) (*Authenticator, error) {
	if opts.TokenReviews == nil {
		return nil, errors.New("kubetoken: no TokenReview client")
	}
	if opts.TrustDomain == "" {
		return nil, errors.New("kubetoken: no trust domain")
	}
	if opts.Audience == "" {
		opts.Audience = DefaultAudience
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &Authenticator{opts: opts}, nil
}

// By names the credential in the CA's messages.
const By = "Kubernetes service-account token"

// Authenticate implements ca.Authenticator. A request without a bearer
// token, or with a Weft bootstrap token (an HS256 JWT: service-account
// tokens are signed with a public key), has no credential of this kind.
// Any other bearer token is reviewed by the API server: it must be valid,
// issued for the audience, and name a service account.
func (a *Authenticator) Authenticate(ctx context.Context, cred ca.Credentials) (*ca.Caller, error) {
	tok := cred.BearerToken
	if tok == "" || isHMACToken(tok) {
		return nil, fmt.Errorf("%s: %w", By, ca.ErrNoCredential)
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.Timeout)
	defer cancel()
	review, err := a.opts.TokenReviews.Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: []string{a.opts.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: the API server's TokenReview failed: %w", By, err)
	}
	st := review.Status
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "not authenticated"
		}
		return nil, fmt.Errorf("%s refused by the API server (audience %q): %s", By, a.opts.Audience, why)
	}
	// An API server that ignores spec.audiences returns none; one that
	// honours them returns the ones the token matched.
	if !slices.Contains(st.Audiences, a.opts.Audience) {
		return nil, fmt.Errorf("%s: not issued for audience %q (its audiences: %s)", By, a.opts.Audience, strings.Join(st.Audiences, ", "))
	}
	ns, sa, ok := serviceAccount(st.User.Username)
	if !ok {
		return nil, fmt.Errorf("%s: user %q is not a service account", By, st.User.Username)
	}
	id := spiffe.ID{TrustDomain: a.opts.TrustDomain, Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%s: service account %s/%s: %w", By, ns, sa, err)
	}
	return &ca.Caller{ID: id, By: By}, nil
}

// serviceAccount splits Kubernetes' "system:serviceaccount:<ns>:<sa>".
func serviceAccount(user string) (ns, sa string, ok bool) {
	rest, found := strings.CutPrefix(user, "system:serviceaccount:")
	if !found {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return "", "", false
	}
	return ns, sa, true
}

// isHMACToken reports whether tok is a JWT signed with HS256 (a Weft
// bootstrap token), from its header alone.
func isHMACToken(tok string) bool {
	head, _, ok := strings.Cut(tok, ".")
	if !ok {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	return json.Unmarshal(raw, &h) == nil && h.Alg == "HS256"
}
