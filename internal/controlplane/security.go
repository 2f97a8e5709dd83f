package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/spiffe"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/server"
)

// endpoints are the xDS server's listeners: the secure port (ADS and the
// CA over TLS, every stream's node checked against its certificate) and,
// when asked for, the plaintext port (ADS only).
func (c *ControlPlane) endpoints() []server.Endpoint {
	tlsConf := &tls.Config{
		GetCertificate: c.serving.GetCertificate,
		// Requested, not required: a proxy asking for its first
		// certificate has none yet. The CA and the ADS node check verify
		// the certificate when there is one.
		ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12,
	}
	auths := []ca.Authenticator{
		ca.CertAuthenticator{Roots: c.ca.Roots(), TrustDomain: c.ca.TrustDomain()},
		ca.TokenAuthenticator{Tokens: c.ca.Tokens()},
	}
	auths = append(auths, c.opts.Authenticators...)
	caSvc := ca.NewService(c.ca, c.opts.Logger, auths...)
	eps := []server.Endpoint{{
		Listener:      c.xdsLis,
		Credentials:   credentials.NewTLS(tlsConf),
		Register:      caSvc.Register,
		AuthorizeNode: c.authorizeNode,
	}}
	if c.plainLis != nil {
		eps = append(eps, server.Endpoint{Listener: c.plainLis})
	}
	return eps
}

// authorizeNode admits an ADS stream on the secure port when the proxy's
// TLS client certificate is from the mesh CA and proves the namespace and
// service account its node claims.
func (c *ControlPlane) authorizeNode(ctx context.Context, node *core.Node) error {
	chain := ca.PeerCertificates(ctx)
	if len(chain) == 0 {
		return status.Error(codes.Unauthenticated, "ADS on the secure port needs the proxy's workload certificate as its TLS client certificate; get one from the CA first (CreateCertificate with a bootstrap token)")
	}
	proved, err := spiffe.Verify(chain, c.ca.Roots(), time.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	id, err := contract.ParseNode(node)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "xds node: %v", err)
	}
	claimed := spiffe.ID{TrustDomain: c.ca.TrustDomain(), Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}
	if proved != claimed {
		return status.Errorf(codes.PermissionDenied, "node %q claims namespace %q and service account %q (%s), but its certificate proves %s",
			node.GetId(), id.Namespace, id.ServiceAccount, claimed, proved)
	}
	return nil
}

// IssueToken issues a single-use bootstrap token for the workload
// identity namespace/serviceAccount, valid for ttl (zero: an hour). It is
// what `weft token` asks for over the status endpoint; tests and the demo
// call it in process.
func (c *ControlPlane) IssueToken(namespace, serviceAccount string, ttl time.Duration) (string, error) {
	tok, _, err := c.issueToken(namespace, serviceAccount, ttl)
	return tok, err
}

func (c *ControlPlane) issueToken(namespace, serviceAccount string, ttl time.Duration) (string, ca.Token, error) {
	id := spiffe.ID{TrustDomain: c.ca.TrustDomain(), Namespace: namespace, ServiceAccount: serviceAccount}
	tok, info, err := c.ca.Tokens().Issue(id, ttl)
	if err != nil {
		return "", ca.Token{}, fmt.Errorf("bootstrap token for %s: %w", id, err)
	}
	return tok, info, nil
}

// RootCertPEM is the mesh's trust root (PEM): what proxies verify the
// control plane against (weft-proxy --root-cert).
func (c *ControlPlane) RootCertPEM() []byte { return c.ca.RootPEM() }

// TrustDomain is the mesh's trust domain.
func (c *ControlPlane) TrustDomain() string { return c.ca.TrustDomain() }

// TokenRequest is the body of POST /debug/token.
type TokenRequest struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// TTL is a Go duration ("1h", "15m"); empty means an hour.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse is the answer of POST /debug/token.
type TokenResponse struct {
	Token    string    `json:"token"`
	Identity string    `json:"identity"`
	Expires  time.Time `json:"expires"`
}

// tokenHandler serves POST /debug/token: a bootstrap token for the
// identity asked for. Whoever can call it can become any workload, so it
// answers only requests from a loopback address, and only with a JSON
// body (a browser cannot send one cross-site without a preflight).
func (c *ControlPlane) tokenHandler(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		c.log.Warn("bootstrap token refused: not from a loopback address", "remote", r.RemoteAddr)
		http.Error(w, "bootstrap tokens are issued only to callers on the control plane's host (a loopback address)", http.StatusForbidden)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "want Content-Type: application/json", http.StatusUnsupportedMediaType)
		return
	}
	var req TokenRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			http.Error(w, "ttl: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	tok, info, err := c.issueToken(req.Namespace, req.ServiceAccount, ttl)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.log.Info("bootstrap token issued", "identity", info.Identity.String(), "id", info.ID,
		"expires", info.Expires.UTC().Format(time.RFC3339), "remote", r.RemoteAddr)
	writeJSON(w, TokenResponse{Token: tok, Identity: info.Identity.String(), Expires: info.Expires.UTC()})
}

// rootCertHandler serves GET /debug/root-cert: the trust root, PEM.
func (c *ControlPlane) rootCertHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(c.ca.RootPEM())
}
