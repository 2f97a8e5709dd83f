package xdsclient

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// sinkRecorder is a SecretSink that keeps what it is given.
type sinkRecorder struct {
	mu   sync.Mutex
	held map[string]*tlsv3.Secret
	upd  chan struct{}
}

func (r *sinkRecorder) UpdateSecrets(put map[string]*tlsv3.Secret, drop []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = map[string]*tlsv3.Secret{}
	}
	for _, n := range drop {
		delete(r.held, n)
	}
	for n, s := range put {
		r.held[n] = s
	}
	select {
	case r.upd <- struct{}{}:
	default:
	}
	return nil
}

func (r *sinkRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.held {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// tlsListener is rdsListener with a TLS server whose certificate and
// client CA are SDS secrets over ADS, as a gateway's credentialName.
func tlsListener(t *testing.T, name, route, cred string) *listener.Listener {
	ads := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	grpcSDS := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_ApiConfigSource{ApiConfigSource: &core.ApiConfigSource{ApiType: core.ApiConfigSource_GRPC}}}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: cred, SdsConfig: ads}, {Name: "default", SdsConfig: grpcSDS}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: cred + "-cacert", SdsConfig: ads},
		}},
	}}
	l := rdsListener(t, name, route)
	l.FilterChains[0].TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ctx)}}
	return l
}

// TestSecretsFollowListeners: a client with a SecretSink subscribes to
// the secrets over ADS its listeners name (not the workload's own, which
// its certificate manager serves), hands what arrives to the sink and
// ACKs it, and drops a secret once no listener names it.
func TestSecretsFollowListeners(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	sink := &sinkRecorder{upd: make(chan struct{}, 10)}
	_, rec := startClient(t, srv.addr, func(o *Options) { o.Secrets = sink })
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")

	nL := fs.send(ctx, t, TypeListener, "2", tlsListener(t, "l1", "r1", "kubernetes://edge"), inlineListener(t, "l2"))
	fs.expect(ctx, t, TypeSecret, "secrets the listener names", names("kubernetes://edge", "kubernetes://edge-cacert"))
	rec.next(ctx, t)
	fs.expect(ctx, t, TypeListener, "ACK of the TLS listener", isACK("2", nL))

	cert := &tlsv3.Secret{Name: "kubernetes://edge", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{}}}
	nS := fs.send(ctx, t, TypeSecret, "s1", cert)
	fs.expect(ctx, t, TypeSecret, "ACK of the secrets", isACK("s1", nS))
	if got := sink.names(); !slices.Equal(got, []string{"kubernetes://edge"}) {
		t.Fatalf("sink holds %v", got)
	}

	// The listener goes: its secrets are unsubscribed and dropped.
	fs.send(ctx, t, TypeListener, "3", rdsListener(t, "l1", "r1"), inlineListener(t, "l2"))
	fs.expect(ctx, t, TypeSecret, "no secrets any more", func(r *discovery.DiscoveryRequest) bool { return len(r.GetResourceNames()) == 0 })
	waitUntil(ctx, t, "the secret dropped", func() bool { return len(sink.names()) == 0 })
}

// TestNoSecretsWithoutSink: a sidecar (no SecretSink) never subscribes to
// secrets, whatever its listeners name.
func TestNoSecretsWithoutSink(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	_, rec := startClient(t, srv.addr, nil)
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")
	nL := fs.send(ctx, t, TypeListener, "2", tlsListener(t, "l1", "r1", "kubernetes://edge"), inlineListener(t, "l2"))
	rec.next(ctx, t)
	for {
		select {
		case r := <-fs.reqs:
			if r.GetTypeUrl() == TypeSecret {
				t.Fatalf("subscribed to secrets: %v", r.GetResourceNames())
			}
			if isACK("2", nL)(r) && r.GetTypeUrl() == TypeListener {
				return
			}
		case <-ctx.Done():
			t.Fatal("no ACK of the listener")
		}
	}
}

func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSecretsOfClusters: an egress gateway's cluster whose TLS context
// names a credential over ADS (a DestinationRule's credentialName) is
// subscribed to like a listener's; a mesh mutual TLS cluster is not.
func TestSecretsOfClusters(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	sink := &sinkRecorder{upd: make(chan struct{}, 10)}
	_, rec := startClient(t, srv.addr, func(o *Options) { o.Secrets = sink })
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")

	ads := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	grpcSDS := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_ApiConfigSource{ApiConfigSource: &core.ApiConfigSource{ApiType: core.ApiConfigSource_GRPC}}}
	withTLS := func(c *cluster.Cluster, cert, ca string, src *core.ConfigSource) *cluster.Cluster {
		u := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: cert, SdsConfig: src}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: ca, SdsConfig: src},
			}},
		}}
		c.TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, u)}}
		return c
	}
	fs.send(ctx, t, TypeCluster, "2",
		edsCluster("c1"),
		withTLS(edsCluster("partner"), "kubernetes://partner-client", "kubernetes://partner-client-cacert", ads),
		withTLS(edsCluster("mesh"), "default", "ROOTCA", grpcSDS))
	fs.expect(ctx, t, TypeSecret, "the cluster's secrets", names("kubernetes://partner-client", "kubernetes://partner-client-cacert"))
}
