package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"weft.dev/weft/internal/spiffe"
)

// Service serves the CA as Istio's
// istio.v1.auth.IstioCertificateService/CreateCertificate: a PEM CSR in,
// the signed chain out (leaf first, root last). It must be served over
// TLS (the secure port), so renewals can present a client certificate.
type Service struct {
	pb.UnimplementedIstioCertificateServiceServer
	ca    *CA
	auths []Authenticator
	log   *slog.Logger
}

// NewService serves ca. With no authenticators it accepts client
// certificates from the mesh root (CertAuthenticator) and the CA's
// bootstrap tokens (TokenAuthenticator), tried in that order.
func NewService(ca *CA, log *slog.Logger, auths ...Authenticator) *Service {
	if log == nil {
		log = slog.Default()
	}
	if len(auths) == 0 {
		auths = []Authenticator{
			CertAuthenticator{Roots: ca.Roots(), TrustDomain: ca.TrustDomain()},
			TokenAuthenticator{Tokens: ca.Tokens()},
		}
	}
	return &Service{ca: ca, auths: auths, log: log.With("component", "ca")}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { pb.RegisterIstioCertificateServiceServer(r, s) }

// CreateCertificate signs the request's CSR if its only SAN is the
// identity the caller proves. Refusals: InvalidArgument for a bad CSR,
// Unauthenticated when no credential proves anything, PermissionDenied
// when the CSR asks for another identity than the one proved; each says
// why, and is logged at warn.
func (s *Service) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	cred := credentialsOf(ctx)
	log := s.log.With("peer", cred.PeerAddress)
	csr, asked, err := ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		log.Warn("certificate request refused", "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	log = log.With("asked", asked.String())
	caller, err := authenticate(ctx, s.auths, cred)
	if err != nil {
		log.Warn("certificate request refused: not authenticated", "error", err)
		return nil, status.Errorf(codes.Unauthenticated, "certificate for %s refused: %v", asked, err)
	}
	log = log.With("proved", caller.ID.String(), "by", caller.By)
	if asked != caller.ID {
		msg := fmt.Sprintf("certificate for %s refused: the %s proves identity %s, not %s", asked, caller.By, caller.ID, asked)
		log.Warn("certificate request refused: it asks for another identity than the one proved")
		return nil, status.Error(codes.PermissionDenied, msg)
	}
	if asked == spiffe.ControlPlane(s.ca.td) {
		log.Warn("certificate request refused: the control plane's own identity")
		return nil, status.Errorf(codes.PermissionDenied, "certificate for %s refused: that is the control plane's identity", asked)
	}
	if caller.Commit != nil {
		if err := caller.Commit(); err != nil {
			log.Warn("certificate request refused", "error", err)
			return nil, status.Errorf(codes.Unauthenticated, "certificate for %s refused: %v", asked, err)
		}
	}
	chain, leaf, err := s.ca.Sign(csr, asked, time.Duration(req.GetValidityDuration())*time.Second)
	if err != nil {
		log.Error("signing failed", "error", err)
		return nil, status.Errorf(codes.Internal, "certificate for %s: %v", asked, err)
	}
	log.Info("certificate issued", "serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	return &pb.IstioCertificateResponse{CertChain: chain}, nil
}

// credentialsOf reads the bearer token and the TLS client certificates of
// a gRPC request.
func credentialsOf(ctx context.Context) Credentials {
	var c Credentials
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			if scheme, tok, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
				c.BearerToken = strings.TrimSpace(tok)
				break
			}
		}
	}
	c.PeerCertificates = PeerCertificates(ctx)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.PeerAddress = p.Addr.String()
	}
	return c
}

// PeerCertificates is the client certificate chain of a gRPC request's
// TLS connection (leaf first, unverified), or nil.
func PeerCertificates(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return ti.State.PeerCertificates
	}
	return nil
}
