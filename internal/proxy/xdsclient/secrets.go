package xdsclient

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	oauth2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/xdswire"
)

// Secrets over ADS (SDS). A gateway's credentials (a Gateway's
// credentialName, an OAuth2 filter's client secret) are SDS secrets whose
// sds_config is ADS: the control plane serves them, by name, from the
// Kubernetes Secrets of the gateway's namespace. The client subscribes
// to the names its listeners give and hands what arrives to
// Options.Secrets. Secrets are not part of the config set: they are
// looked up at each TLS handshake (and each login), so one that arrives
// after its listener is used from then on, and one that is refused or
// missing leaves the others, and the config, in force. The workload's
// own certificate ("default", "ROOTCA") comes from the proxy's
// certificate manager, not from here.

// TypeSecret is SDS's type URL.
const TypeSecret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

const (
	downstreamTLSTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSTypeURL   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	oauth2TypeURL        = "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2"
)

// SecretSink receives the secrets the client subscribes to. Called from
// the client's goroutine only.
type SecretSink interface {
	// UpdateSecrets puts or replaces the secrets of put and drops those
	// named in drop. An error names each secret that cannot be used
	// (the others are taken); the response is then NACKed.
	UpdateSecrets(put map[string]*tlsv3.Secret, drop []string) error
}

// adsSecretName is the name of an SDS config served over ADS, or "".
func adsSecretName(c *tlsv3.SdsSecretConfig) string {
	if c.GetName() == "" || c.GetSdsConfig().GetAds() == nil {
		return ""
	}
	return c.GetName()
}

// appendSocketSecrets appends the secrets over ADS that l's filter
// chains' TLS contexts name.
func appendSocketSecrets(names []string, l *listener.Listener) []string {
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(slices.Clip(chains), dc)
	}
	for _, fc := range chains {
		tc := fc.GetTransportSocket().GetTypedConfig()
		if tc.GetTypeUrl() != downstreamTLSTypeURL {
			continue
		}
		var d tlsv3.DownstreamTlsContext
		if xdswire.UnmarshalAny(tc, &d) != nil {
			continue // the data plane reports it
		}
		names = appendCommonSecrets(names, d.GetCommonTlsContext())
	}
	return names
}

// appendCommonSecrets appends the secrets over ADS a TLS context names:
// its certificate's and its validation context's.
func appendCommonSecrets(names []string, common *tlsv3.CommonTlsContext) []string {
	for _, c := range common.GetTlsCertificateSdsSecretConfigs() {
		if n := adsSecretName(c); n != "" {
			names = append(names, n)
		}
	}
	for _, c := range []*tlsv3.SdsSecretConfig{common.GetValidationContextSdsSecretConfig(), common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()} {
		if n := adsSecretName(c); n != "" {
			names = append(names, n)
		}
	}
	return names
}

// credentialMarks are in the encoding of every TLS context that names a
// credential over ADS: a cluster's context is decoded only when its bytes
// hold one, so the thousands of mutual TLS clusters of a sidecar cost a
// byte search.
var credentialMarks = [][]byte{[]byte("kubernetes://"), []byte("kubernetes-gateway://")}

func hasCredentialMark(b []byte) bool {
	for _, m := range credentialMarks {
		if bytes.Contains(b, m) {
			return true
		}
	}
	return false
}

// clusterSecrets returns the secrets over ADS c's TLS contexts name (an
// egress gateway's DestinationRule credentialName).
func clusterSecrets(c *cluster.Cluster) []string {
	var names []string
	sockets := []*core.TransportSocket{c.GetTransportSocket()}
	for _, m := range c.GetTransportSocketMatches() {
		sockets = append(sockets, m.GetTransportSocket())
	}
	for _, ts := range sockets {
		tc := ts.GetTypedConfig()
		if tc.GetTypeUrl() != upstreamTLSTypeURL || !hasCredentialMark(tc.GetValue()) {
			continue
		}
		var u tlsv3.UpstreamTlsContext
		if xdswire.UnmarshalAny(tc, &u) != nil {
			continue // the data plane reports it
		}
		names = appendCommonSecrets(names, u.GetCommonTlsContext())
	}
	return names
}

// appendFilterSecrets appends the secrets over ADS that OAuth2 filters
// among filters name.
func appendFilterSecrets(names []string, filters []*hcm.HttpFilter) []string {
	for _, f := range filters {
		tc := f.GetTypedConfig()
		if tc.GetTypeUrl() != oauth2TypeURL {
			continue
		}
		var o oauth2v3.OAuth2
		if xdswire.UnmarshalAny(tc, &o) != nil {
			continue
		}
		creds := o.GetConfig().GetCredentials()
		for _, c := range []*tlsv3.SdsSecretConfig{creds.GetTokenSecret(), creds.GetHmacSecret()} {
			if n := adsSecretName(c); n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

// secretNames returns the secrets over ADS the listeners and clusters
// name, sorted.
func (s *resourceSet) secretNames() []string {
	set := map[string]struct{}{}
	for _, hs := range []map[string]*held{s.listeners, s.clusters} {
		for _, h := range hs {
			if h.routing == nil {
				continue
			}
			for _, n := range h.sds {
				set[n] = struct{}{}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// decodeSecret decodes one secret, unwrapping a discovery Resource.
func decodeSecret(a *anypb.Any) (*tlsv3.Secret, error) {
	if a.GetTypeUrl() == typeResource {
		var w discovery.Resource
		if err := xdswire.UnmarshalAny(a, &w); err != nil {
			return nil, fmt.Errorf("decoding wrapper: %w", err)
		}
		if w.GetResource() == nil {
			return nil, nil // a heartbeat
		}
		a = w.GetResource()
	}
	if a.GetTypeUrl() != TypeSecret {
		return nil, fmt.Errorf("type %q in a secret response", a.GetTypeUrl())
	}
	var sec tlsv3.Secret
	if err := xdswire.UnmarshalAny(a, &sec); err != nil {
		return nil, fmt.Errorf("decoding secret: %w", err)
	}
	if sec.GetName() == "" {
		return nil, errors.New("secret has no name")
	}
	return &sec, nil
}

// ---- State of the world ----

// resubscribeSecrets sends the secret subscription when the names the
// working listeners give changed, and drops the secrets no longer named.
func (s *state) resubscribeSecrets() error {
	sink := s.c.opts.Secrets
	if sink == nil {
		return nil
	}
	want := s.working.secretNames()
	have := s.subs[TypeSecret]
	if slices.Equal(want, have) {
		return nil
	}
	var drop []string
	for _, n := range have {
		if _, ok := slices.BinarySearch(want, n); !ok {
			drop = append(drop, n)
		}
	}
	if len(drop) > 0 {
		_ = sink.UpdateSecrets(nil, drop)
	}
	s.subs[TypeSecret] = want
	s.c.log.Debug("subscription changed", "type", "secret", "names", want)
	return s.send(TypeSecret, s.acked[TypeSecret], nil)
}

// handleSecrets takes a secret response in and answers it at once: a
// state-of-the-world response holds every subscribed secret that exists.
func (s *state) handleSecrets(r *discovery.DiscoveryResponse) error {
	t := TypeSecret
	s.nonce[t] = r.GetNonce()
	sink := s.c.opts.Secrets
	if sink == nil {
		return nil
	}
	subs := s.subs[t]
	put := map[string]*tlsv3.Secret{}
	var errs []error
	for i, a := range r.GetResources() {
		sec, err := decodeSecret(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d]: %w", i, err))
			continue
		}
		if sec == nil {
			continue
		}
		if _, ok := slices.BinarySearch(subs, sec.GetName()); ok {
			put[sec.GetName()] = sec
		}
	}
	var drop []string
	if len(errs) == 0 {
		for _, n := range subs {
			if put[n] == nil {
				drop = append(drop, n) // not sent: it does not exist (any more)
			}
		}
	}
	errs = append(errs, sink.UpdateSecrets(put, drop))
	if err := errors.Join(errs...); err != nil {
		err = fmt.Errorf("secret version %q: %w", r.GetVersionInfo(), err)
		s.c.log.Error("rejecting secrets", "error", err)
		s.c.recordNACK(t, err.Error())
		return s.send(t, s.acked[t], &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()})
	}
	s.acked[t] = r.GetVersionInfo()
	s.c.recordACK(t)
	return s.send(t, s.acked[t], nil)
}

// ---- Delta ----

// resubscribeSecrets sends the changes of the secret subscription and
// drops the secrets no longer named.
func (s *deltaState) resubscribeSecrets() error {
	sink := s.c.opts.Secrets
	if sink == nil {
		return nil
	}
	want := s.working.secretNames()
	have := s.subs[TypeSecret]
	if slices.Equal(want, have) {
		return nil
	}
	var add, drop []string
	for _, n := range want {
		if _, ok := slices.BinarySearch(have, n); !ok {
			add = append(add, n)
		}
	}
	for _, n := range have {
		if _, ok := slices.BinarySearch(want, n); !ok {
			drop = append(drop, n)
			delete(s.rv[TypeSecret], n)
		}
	}
	if len(drop) > 0 {
		_ = sink.UpdateSecrets(nil, drop)
	}
	s.subs[TypeSecret] = want
	s.c.log.Debug("subscription changed", "type", "secret", "subscribe", add, "unsubscribe", drop)
	return s.send(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeSecret, ResourceNamesSubscribe: add, ResourceNamesUnsubscribe: drop})
}

// handleSecrets takes a delta secret response in and answers it at once.
func (s *deltaState) handleSecrets(r *discovery.DeltaDiscoveryResponse) error {
	t := TypeSecret
	sink := s.c.opts.Secrets
	if sink == nil {
		return nil
	}
	subs := s.subs[t]
	put := map[string]*tlsv3.Secret{}
	versions := map[string]string{}
	var errs []error
	for i, res := range r.GetResources() {
		if res.GetResource() == nil {
			continue
		}
		sec, err := decodeSecret(res.GetResource())
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d] %q: %w", i, res.GetName(), err))
			continue
		}
		if _, ok := slices.BinarySearch(subs, sec.GetName()); ok {
			put[sec.GetName()] = sec
			versions[sec.GetName()] = res.GetVersion()
		}
	}
	var drop []string
	for _, n := range r.GetRemovedResources() {
		if _, ok := slices.BinarySearch(subs, n); ok {
			drop = append(drop, n)
		}
	}
	errs = append(errs, sink.UpdateSecrets(put, drop))
	if s.rv[t] == nil {
		s.rv[t] = map[string]string{}
	}
	maps.Copy(s.rv[t], versions)
	for _, n := range drop {
		delete(s.rv[t], n)
	}
	if err := errors.Join(errs...); err != nil {
		err = fmt.Errorf("secret version %q: %w", r.GetSystemVersionInfo(), err)
		s.c.log.Error("rejecting secrets", "error", err)
		return s.nack(t, r.GetNonce(), err)
	}
	s.c.recordACK(t)
	return s.send(&discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: r.GetNonce()})
}
