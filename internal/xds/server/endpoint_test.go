package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// selfSigned is a throwaway server certificate for 127.0.0.1.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestServeEndpoints: ADS over TLS with a node check, and plaintext
// beside it, from one server.
func TestServeEndpoints(t *testing.T) {
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	s.Update(testMesh(1))
	authorized := func(ctx context.Context, node *core.Node) error {
		if !strings.HasPrefix(node.GetId(), "sidecar~") {
			return status.Errorf(codes.PermissionDenied, "node %q is not allowed", node.GetId())
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stream context already done")
		}
		return nil
	}
	plainAddr, tlsDial := serveSecureAndPlain(t, s, authorized)

	if got := tlsDial(client.Node()).sync(); len(got[resource.ListenerType].GetResources()) != 1 {
		t.Errorf("over TLS: %d listeners", len(got[resource.ListenerType].GetResources()))
	}
	if got := dial(t, withDeadline(t), plainAddr, client.Node()).sync(); len(got[resource.ListenerType].GetResources()) != 1 {
		t.Errorf("plaintext: %d listeners", len(got[resource.ListenerType].GetResources()))
	}

	// A node the check refuses: the stream ends with its status.
	bad := tlsDial(&core.Node{Id: "intruder"})
	bad.request(resource.ClusterType, nil, nil)
	if _, err := bad.stream.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `node "intruder" is not allowed`) {
		t.Errorf("refused node: %v", err)
	}

	// A stream may not change its node.
	c := tlsDial(client.Node())
	c.request(resource.ClusterType, nil, nil)
	cds := c.expect(resource.ClusterType)
	other := &core.Node{Id: "sidecar~10.0.0.9~other.default~default.svc.cluster.local"}
	if err := c.stream.Send(&discovery.DiscoveryRequest{Node: other, TypeUrl: resource.ClusterType,
		VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	for range 10 { // whatever was in flight, then the end of the stream
		if _, err := c.stream.Recv(); err != nil {
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may not change its node") {
				t.Errorf("after a node change: %v", err)
			}
			return
		}
	}
	t.Error("the stream went on after its node changed")
}

// serveSecureAndPlain serves s on a TLS endpoint whose node check is
// authorize and on a plaintext one beside it, until the test ends. It
// returns the plaintext address and a dial of state-of-the-world
// streams over TLS.
func serveSecureAndPlain(t *testing.T, s *Server, authorize func(context.Context, *core.Node) error) (string, func(*core.Node) *adsClient) {
	t.Helper()
	cert, pool := selfSigned(t)
	secure, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.ServeEndpoints(ctx,
			Endpoint{Listener: secure, Credentials: credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}), AuthorizeNode: authorize},
			Endpoint{Listener: plain})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeEndpoints: %v", err)
		}
	})
	return plain.Addr().String(), func(node *core.Node) *adsClient {
		conn, err := grpc.NewClient(secure.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(withDeadline(t))
		if err != nil {
			t.Fatal(err)
		}
		return &adsClient{t: t, stream: stream, node: node}
	}
}
