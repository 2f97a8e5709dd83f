package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"weft.dev/weft/internal/spiffe"
	"weft.dev/weft/internal/xds/contract"
)

// TestSecurePort: a token from the status endpoint, a certificate from
// the CA on the secure port, and ADS admitted only with a certificate
// that proves the node's identity.
func TestSecurePort(t *testing.T) {
	cp, err := New(Options{
		ConfigDir: t.TempDir(), CADir: t.TempDir(), XDSAddress: "127.0.0.1:0", XDSPlaintextAddress: "127.0.0.1:0",
		StatusAddress: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	base := "http://" + cp.StatusAddr().String()

	// The root and a token, as weft token gets them.
	if root := get(t, ctx, base+"/debug/root-cert"); root != string(cp.RootCertPEM()) {
		t.Errorf("/debug/root-cert differs from RootCertPEM")
	}
	post := func(ctype, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/debug/token", strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("application/x-www-form-urlencoded", "namespace=default"); code != http.StatusUnsupportedMediaType {
		t.Errorf("form POST: %d %s", code, body)
	}
	if code, body := post("application/json", `{"namespace":"default","serviceAccount":"a/b"}`); code != http.StatusBadRequest || !strings.Contains(body, "not allowed") {
		t.Errorf("bad service account: %d %s", code, body)
	}
	code, body := post("application/json", `{"namespace":"default","serviceAccount":"productpage","ttl":"10m"}`)
	var tr TokenResponse
	if code != http.StatusOK || json.Unmarshal([]byte(body), &tr) != nil || tr.Identity != "spiffe://cluster.local/ns/default/sa/productpage" {
		t.Fatalf("POST /debug/token: %d %s", code, body)
	}
	if d := time.Until(tr.Expires); d > 10*time.Minute || d < 9*time.Minute {
		t.Errorf("token expires in %v, want 10m", d)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.RootCertPEM())
	dialTLS := func(client *tls.Certificate) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: roots}
		if client != nil {
			cfg.Certificates = []tls.Certificate{*client}
		}
		cc, err := grpc.NewClient(cp.XDSAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}

	// The certificate.
	want := spiffe.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "productpage"}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{want.URL()}}, key)
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	resp, err := pb.NewIstioCertificateServiceClient(dialTLS(nil)).CreateCertificate(
		metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tr.Token), &pb.IstioCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert := &tls.Certificate{PrivateKey: key}
	for _, p := range resp.GetCertChain()[:len(resp.GetCertChain())-1] {
		b, _ := pem.Decode([]byte(p))
		cert.Certificate = append(cert.Certificate, b.Bytes)
	}

	// The plaintext port serves no CA.
	plain, err := grpc.NewClient(cp.XDSPlaintextAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := pb.NewIstioCertificateServiceClient(plain).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CA on the plaintext port: %v, want Unimplemented", err)
	}

	ads := func(cc *grpc.ClientConn, sa string) error {
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return err
		}
		id := contract.Identity{ID: contract.DefaultNodeID("127.0.0.1", "productpage", "default"), Namespace: "default",
			WorkloadName: "productpage", ServiceAccount: sa, IPs: []string{"127.0.0.1"}}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: id.Node(), TypeUrl: resource.ClusterType}); err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	if err := ads(dialTLS(nil), "productpage"); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "needs the proxy's workload certificate") {
		t.Errorf("ADS without a client certificate: %v", err)
	}
	if err := ads(dialTLS(cert), "reviews"); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "spiffe://cluster.local/ns/default/sa/reviews") || !strings.Contains(err.Error(), want.String()) {
		t.Errorf("ADS with another service account than the certificate's: %v", err)
	}
	if err := ads(dialTLS(cert), "productpage"); err != nil {
		t.Errorf("ADS with the certificate: %v", err)
	}
	var st Status
	getJSON(t, ctx, base+"/status", &st)
	if !strings.HasPrefix(st.CA.Mode, "self-signed root, persisted in") || st.CA.TrustDomain != "cluster.local" || st.CA.WorkloadCertTTL != "24h0m0s" {
		t.Errorf("/status ca = %+v", st.CA)
	}
}

// TestTokenOnlyForLoopback: the status address may be exposed (for
// /metrics), but tokens are issued to local callers only.
func TestTokenOnlyForLoopback(t *testing.T) {
	cp, err := New(Options{ConfigDir: t.TempDir(), XDSAddress: "127.0.0.1:0", StatusAddress: StatusDisabled, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = cp.Run(ctx)
	}()
	for _, tc := range []struct {
		remote string
		want   int
	}{{"10.1.2.3:40000", http.StatusForbidden}, {"[::1]:40000", http.StatusOK}, {"127.0.0.1:40000", http.StatusOK}} {
		req := httptest.NewRequest(http.MethodPost, "/debug/token", strings.NewReader(`{"namespace":"ns","serviceAccount":"sa"}`))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		cp.statusHandler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("from %s: %d %s, want %d", tc.remote, rec.Code, rec.Body, tc.want)
		}
	}
}
