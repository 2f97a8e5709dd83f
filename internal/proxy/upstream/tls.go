package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/proxy/tlssocket"
)

// Upstream TLS.
//
// A cluster's transport_socket applies to every endpoint; with
// transport_socket_matches, each endpoint takes the first match whose
// fields its metadata filter_metadata["envoy.transport_socket_match"]
// carries with equal values (an empty match takes every endpoint), else
// the cluster's transport_socket — Istio's automatic mutual TLS: endpoints
// labelled tlsMode=istio get ISTIO_MUTUAL, the others plaintext.
//
// A TLS endpoint's HTTP/1.1 requests take the synchronous path like
// plaintext ones (its connections are *tls.Conn); the rest (HTTP/2,
// gRPC, upgrades, bodies) go through http.Transports of the endpoint's
// own, dialling with the endpoint's TLS configuration. Every endpoint
// keeps its last TLS session (tlssocket's session cache), so a new
// connection resumes instead of making a full handshake, until the
// proxy's certificate rotates.

// TransportSocketMatchKey is the endpoint metadata namespace
// transport_socket_matches are matched against.
const TransportSocketMatchKey = "envoy.transport_socket_match"

// socket is one transport socket of a cluster: plaintext (tls nil) or
// TLS.
type socket struct {
	name  string
	match map[string]*structpb.Value // transport_socket_matches[].match; nil for the cluster's own socket
	tls   *tlssocket.Client
}

// sockets is a cluster's transport sockets: all[0] is the cluster's
// transport_socket, then its transport_socket_matches in order.
type sockets struct {
	all []socket
}

// parseSockets reads c's transport_socket and transport_socket_matches,
// with the auto_sni / auto_san_validation of its HTTP protocol options.
func parseSockets(c *cluster.Cluster, secrets tlssocket.Secrets) (sockets, error) {
	var autoSNI, autoSAN bool
	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		var po upstreamhttp.HttpProtocolOptions
		if err := xdswire.UnmarshalAny(a, &po); err == nil {
			autoSNI = po.GetUpstreamHttpProtocolOptions().GetAutoSni()
			autoSAN = po.GetUpstreamHttpProtocolOptions().GetAutoSanValidation()
		}
	}
	parse := func(field string, ts *core.TransportSocket) (*tlssocket.Client, error) {
		s, err := tlssocket.ParseSocket(ts, true)
		if err != nil {
			return nil, fmt.Errorf("%s.%w", field, err)
		}
		if s.Upstream == nil {
			return nil, nil
		}
		cl, err := tlssocket.NewClient(s.Upstream, secrets, autoSNI, autoSAN)
		if err != nil {
			return nil, fmt.Errorf("%s.typed_config (UpstreamTlsContext): %w", field, err)
		}
		return cl, nil
	}
	var out sockets
	def, err := parse("transport_socket", c.GetTransportSocket())
	if err != nil {
		return out, err
	}
	out.all = append(out.all, socket{name: "transport_socket", tls: def})
	for i, m := range c.GetTransportSocketMatches() {
		field := fmt.Sprintf("transport_socket_matches[%d]", i)
		if m.GetTransportSocket() == nil {
			return out, fmt.Errorf("%s.transport_socket: missing", field)
		}
		cl, err := parse(field+".transport_socket", m.GetTransportSocket())
		if err != nil {
			return out, err
		}
		match := m.GetMatch().GetFields()
		if match == nil {
			match = map[string]*structpb.Value{}
		}
		out.all = append(out.all, socket{name: m.GetName(), match: match, tls: cl})
	}
	if c.GetTransportSocketMatcher() != nil {
		return out, fmt.Errorf("transport_socket_matcher: not supported (use transport_socket_matches)")
	}
	return out, nil
}

// broken lists why TLS sockets of the cluster cannot make handshakes (a
// file their context names could not be used); their connections fail.
func (s sockets) broken() []error {
	var out []error
	for _, sk := range s.all {
		if sk.tls == nil {
			continue
		}
		if err := sk.tls.Broken(); err != nil {
			out = append(out, fmt.Errorf("transport socket %s: %w", sk.name, err))
		}
	}
	return out
}

// pick returns the index of the socket an endpoint with metadata md
// takes.
func (s sockets) pick(md *core.Metadata) int {
	if len(s.all) <= 1 {
		return 0
	}
	fields := md.GetFilterMetadata()[TransportSocketMatchKey].GetFields()
next:
	for i, sk := range s.all[1:] {
		for k, want := range sk.match {
			if got, ok := fields[k]; !ok || !xdswire.Equal(got, want) {
				continue next
			}
		}
		return i + 1
	}
	return 0
}

// endpointTLS is the TLS side of one endpoint's Conns; zero for a
// plaintext endpoint.
type endpointTLS struct {
	tls      *tlssocket.Client
	sni      string
	h1Config *tls.Config            // HTTP/1.1 connections (ALPN narrowed to http/1.1)
	cache    tls.ClientSessionCache // the endpoint's last session; nil: no resumption
	autoSNI  bool                   // the SNI is the request's host: forHost

	// peer is the principal of the server's certificate at the last
	// handshake (the destination_principal label).
	peer   atomic.Pointer[string]
	parent *Conns // autoSNI: the endpoint's Conns this host's Conns belong to

	trMu     sync.Mutex
	tr       [2]*http.Transport // [0] HTTP/1.1, [1] HTTP/2; built on first use
	byHost   map[string]*Conns  // autoSNI: the Conns of each host
	trClosed bool               // shutdownTLS ran
}

// setSocket configures e for transport socket s.
func (e *Conns) setSocket(s socket) {
	if s.tls == nil {
		return
	}
	e.tls = s.tls
	e.autoSNI = s.tls.AutoSNI()
	e.setSNI(s.tls.SNI())
}

func (e *Conns) setSNI(sni string) {
	e.sni = sni
	e.cache = e.tls.NewSessionCache()
	e.h1Config = e.tls.Config(sni, tlssocket.ALPNFor(e.tls.ALPN(), false), e.cache)
}

// TLS reports whether the endpoint's connections are TLS.
func (e *Conns) TLS() bool { return e.tls != nil }

// Peer is the principal (SPIFFE ID) of the endpoint's certificate at the
// last TLS handshake, "" before the first or in plaintext. One atomic
// load; the same string (pointer) until the principal changes.
func (e *Conns) Peer() string {
	if p := e.peer.Load(); p != nil {
		return *p
	}
	return ""
}

func (e *Conns) setPeer(principal string) {
	for c := e; c != nil; c = c.parent {
		if p := c.peer.Load(); p == nil || *p != principal {
			c.peer.Store(&principal)
		}
	}
}

// handshake makes raw a TLS connection with cfg, within the connect
// timeout (Envoy's connect_timeout covers the TLS handshake too). A
// failure closes raw and is a connect error.
func (e *Conns) handshake(ctx context.Context, raw net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	if t := e.dialer.Timeout; t > 0 {
		raw.SetDeadline(time.Now().Add(t))
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &connectError{fmt.Errorf("TLS handshake with %s: %w", e.addr, err)}
	}
	raw.SetDeadline(time.Time{})
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
		e.setPeer(tlssocket.Principal(cs.PeerCertificates[0]))
	}
	return tc, nil
}

// transport returns the endpoint's http.Transport for HTTP/2 (h2) or
// HTTP/1.1 requests that do not take the synchronous path, building it
// on first use. Its connections are the endpoint's TLS connections, with
// the ALPN narrowed to the transport's protocol.
func (e *Conns) transport(p *Pool, h2 bool) *http.Transport {
	i := 0
	if h2 {
		i = 1
	}
	e.trMu.Lock()
	defer e.trMu.Unlock()
	if t := e.tr[i]; t != nil {
		return t
	}
	cfg := e.tls.Config(e.sni, tlssocket.ALPNFor(e.tls.ALPN(), h2), e.cache)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		raw, err := e.dialer.DialContext(ctx, network, e.addr)
		if err != nil {
			return nil, &connectError{err}
		}
		return e.handshake(ctx, raw, cfg)
	}
	t := p.newTransport(h2, true, dial)
	e.tr[i] = t
	if e.trClosed {
		// Retired already (a request still running on an old
		// configuration): do not keep its connections for long.
		t.IdleConnTimeout = time.Second
	}
	return t
}

// forHost returns the Conns for requests to host of an endpoint whose
// SNI is the request's host (auto_sni): connections are pooled per
// server name, as Envoy does.
func (e *Conns) forHost(host string) *Conns {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	e.trMu.Lock()
	if c := e.byHost[host]; c != nil {
		e.trMu.Unlock()
		return c
	}
	c := &Conns{addr: e.addr, dialer: e.dialer, idleTimeout: e.idleTimeout, maxUses: e.maxUses, closed: e.trClosed}
	c.tls, c.parent = e.tls, e
	c.setSNI(host)
	if e.byHost == nil {
		e.byHost = map[string]*Conns{}
	}
	var dropped []*Conns
	if len(e.byHost) >= maxHostsPerEndpoint {
		// A client cycling through host names must not grow this
		// without bound: start over (idle connections close).
		for _, old := range e.byHost {
			dropped = append(dropped, old)
		}
		clear(e.byHost)
	}
	e.byHost[host] = c
	e.trMu.Unlock()
	for _, old := range dropped {
		old.shutdown()
	}
	return c
}

// maxHostsPerEndpoint bounds the server names one auto_sni endpoint keeps
// connections for.
const maxHostsPerEndpoint = 64

// shutdownTLS closes the idle connections of the endpoint's transports
// and of its per-host Conns.
func (e *Conns) shutdownTLS() {
	if e.tls == nil {
		return
	}
	e.trMu.Lock()
	e.trClosed = true
	trs := e.tr
	hosts := make([]*Conns, 0, len(e.byHost))
	for _, c := range e.byHost {
		hosts = append(hosts, c)
	}
	e.trMu.Unlock()
	for _, t := range trs {
		if t != nil {
			t.CloseIdleConnections()
		}
	}
	for _, c := range hosts {
		c.shutdown()
	}
}

// DialStream opens a new connection to the endpoint for a byte stream
// (tcp_proxy): a TCP connection from the cluster's source address, made
// TLS when the endpoint's transport socket says so (the handshake within
// the connect timeout, with the context's SNI and its ALPN less the HTTP
// protocols: a byte stream does not speak HTTP, and the sidecar of a
// port whose protocol is sniffed picks its TCP chain by that). It is not
// pooled; the caller closes it. A failure satisfies IsConnectError.
func (e *Conns) DialStream(ctx context.Context) (net.Conn, error) {
	raw, err := e.dialer.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, &connectError{err}
	}
	if e.tls == nil {
		return raw, nil
	}
	cfg := e.tls.Config(e.sni, streamALPN(e.tls.ALPN()), e.cache)
	return e.handshake(ctx, raw, cfg)
}

// streamALPN is alpn without h2 and http/1.1 (nil when nothing is left).
func streamALPN(alpn []string) []string {
	var out []string
	for _, p := range alpn {
		if p != "h2" && p != "http/1.1" {
			out = append(out, p)
		}
	}
	return out
}
