package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"weft.dev/weft/internal/spiffe"
)

// Credentials are what a signing request brings to prove who sent it.
type Credentials struct {
	// BearerToken is the token of an "authorization: Bearer <token>"
	// header, or "".
	BearerToken string
	// PeerCertificates is the client certificate chain of the TLS
	// connection, leaf first, as sent: not yet verified.
	PeerCertificates []*x509.Certificate
	// PeerAddress is where the request came from, for logs.
	PeerAddress string
}

// Caller is an authenticated requester.
type Caller struct {
	// ID is the identity the credential proves.
	ID spiffe.ID
	// By names the credential, for messages: "bootstrap token",
	// "client certificate".
	By string
	// Commit, when not nil, must be called once the request is granted,
	// before the certificate is handed out; an error refuses the request
	// after all. A single-use credential is spent here, so a request
	// refused for another reason does not spend it.
	Commit func() error
}

// ErrNoCredential is returned (wrapped) by an Authenticator when the
// request does not carry the kind of credential it understands: the next
// one is tried.
var ErrNoCredential = errors.New("no credential")

// Authenticator proves a signing request's identity from its credentials.
// Authenticate is called from gRPC handler goroutines, concurrently; it
// must not block for long. It returns the caller, an error wrapping
// ErrNoCredential when its kind of credential is absent, or another error
// saying why the credential does not prove anything.
//
// Weft has two: CertAuthenticator (renewals) and TokenAuthenticator
// (bootstrap tokens). A Kubernetes service-account token authenticator
// (TokenReview) is the next one to plug in here.
type Authenticator interface {
	Authenticate(ctx context.Context, cred Credentials) (*Caller, error)
}

// CertAuthenticator accepts a client certificate that chains up to the
// mesh root and holds a SPIFFE ID of the trust domain: a proxy renewing
// with its current certificate.
type CertAuthenticator struct {
	Roots       *x509.CertPool
	TrustDomain string
}

// Authenticate implements Authenticator.
func (a CertAuthenticator) Authenticate(_ context.Context, cred Credentials) (*Caller, error) {
	if len(cred.PeerCertificates) == 0 {
		return nil, fmt.Errorf("client certificate: %w", ErrNoCredential)
	}
	id, err := spiffe.Verify(cred.PeerCertificates, a.Roots, time.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("client certificate (serial %s): %w", cred.PeerCertificates[0].SerialNumber.Text(16), err)
	}
	if id.TrustDomain != a.TrustDomain {
		return nil, fmt.Errorf("client certificate: identity %s is not in trust domain %q", id, a.TrustDomain)
	}
	return &Caller{ID: id, By: "client certificate"}, nil
}

// TokenAuthenticator accepts a bootstrap token issued by Tokens; the
// token is spent when the request is granted (Caller.Commit).
type TokenAuthenticator struct{ Tokens *Tokens }

// Authenticate implements Authenticator.
func (a TokenAuthenticator) Authenticate(_ context.Context, cred Credentials) (*Caller, error) {
	if cred.BearerToken == "" {
		return nil, fmt.Errorf("bootstrap token: %w", ErrNoCredential)
	}
	tok, err := a.Tokens.Verify(cred.BearerToken, time.Now())
	if err != nil {
		return nil, err
	}
	return &Caller{ID: tok.Identity, By: "bootstrap token", Commit: func() error { return a.Tokens.Redeem(tok) }}, nil
}

// authenticate tries each authenticator in turn; the first that accepts
// wins. If none does, the error says what each found.
func authenticate(ctx context.Context, auths []Authenticator, cred Credentials) (*Caller, error) {
	var errs []error
	absent := 0
	for _, a := range auths {
		c, err := a.Authenticate(ctx, cred)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrNoCredential) {
			absent++
			continue
		}
		errs = append(errs, err)
	}
	if absent == len(auths) {
		return nil, errors.New("no credential: send a bootstrap token (authorization: Bearer <token>, from weft token) or a client certificate from the mesh CA")
	}
	return nil, errors.Join(errs...)
}
