// Package upstream is the proxy's side of its connections to upstream
// endpoints: one Pool per cluster holds the cluster's transports — the
// synchronous HTTP/1.1 path (h1.go), each endpoint's HTTP/2 client
// (h2.go, internal/proxy/h2client) for h2c and TLS h2 requests, and an
// http.Transport for what those do not carry (HTTP/1.1 bodies that
// stream, upgrades) — and sends one attempt of a request over the right
// one. A Pool is built from the Cluster's
// connection settings (protocol, connect timeout, TCP keepalive, idle
// timeout, requests per connection) and its transport sockets: plaintext,
// TLS (internal/proxy/tlssocket), or chosen per endpoint by the
// endpoint's metadata (transport_socket_matches, tls.go), so one cluster
// reaches endpoints with a sidecar over mutual TLS and the others in
// plaintext.
//
// A Pool lives as long as the Cluster resource it was built from is
// unchanged, so its connections survive configuration updates. Everything
// here is safe for concurrent use.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/proxy/xdswire"
)

const (
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	defaultConnectTimeout  = 5 * time.Second // Envoy's default
)

// IdleTimeout is how long an upstream connection may stay idle when the
// cluster's common_http_protocol_options.idle_timeout does not say.
const IdleTimeout = 60 * time.Second

// Options are a Cluster's connection settings, validated. The zero value
// is HTTP/1.1 with Envoy's defaults.
type Options struct {
	h2                 bool // explicit http2_protocol_options: h2c with prior knowledge
	downstreamProtocol bool // use_downstream_protocol_config: h2c for HTTP/2 requests, else HTTP/1.1
	connectTimeout     time.Duration
	keepAlive          *net.KeepAliveConfig // upstream_connection_options.tcp_keepalive; nil: Go's default keep-alive
	idleTimeout        *time.Duration       // nil: IdleTimeout
	maxUses            uint32               // max_requests_per_connection; 0: unlimited
	h2Ping             h2Ping               // http2_protocol_options.connection_keepalive
	sockets            sockets              // transport_socket and transport_socket_matches (tls.go)
	source             *net.TCPAddr         // upstream_bind_config.source_address; nil: the OS picks
	onConnect          func()               // CountConnections; nil: none
	active             ActiveCounter        // CountActive; nil: none
}

// h2Ping is when an HTTP/2 connection is pinged and how long the answer
// may take; zero fields keep the pool's defaults.
type h2Ping struct{ interval, timeout time.Duration }

// Defaults of h2Ping: an idle HTTP/2 connection is pinged after 30s and
// closed when the answer takes more than 10s, so a peer that vanished
// without a FIN is not used for a new request.
const (
	defaultH2PingInterval = 30 * time.Second
	defaultH2PingTimeout  = 10 * time.Second
)

// ActiveCounter counts open connections: Inc when one is established,
// Dec when it is closed (a prometheus.Gauge is one).
type ActiveCounter interface {
	Inc()
	Dec()
}

// CountActive makes the pool built with o keep a count of its open
// connections in a (Envoy's upstream_cx_active): every connection it
// establishes, HTTP, TLS or byte stream, is counted until it is closed.
func (o *Options) CountActive(a ActiveCounter) { o.active = a }

// CountConnections makes the pool built with o call count once for every
// connection it opens, before it connects (so a failed connect counts
// too): Envoy's upstream_cx_total. count is called on the dialling
// goroutine and must not block.
func (o *Options) CountConnections(count func()) { o.onConnect = count }

// HTTP2 reports whether the cluster speaks h2c to its endpoints (its
// connections multiplex requests).
func (o Options) HTTP2() bool { return o.h2 }

// Broken lists the TLS sockets of a pool built with o that cannot make
// handshakes (Lazy.Broken).
func (o Options) Broken() []error { return o.sockets.broken() }

// ParseOptions reads c's transport and protocol settings; secrets (may be
// nil: none) serve the SDS secrets its TLS contexts name. Errors name the
// field of c that is wrong.
func ParseOptions(c *cluster.Cluster, secrets tlssocket.Secrets) (Options, error) {
	var o Options
	var err error
	if o.h2, o.downstreamProtocol, err = parseHTTPProtocol(c); err != nil {
		return o, err
	}
	o.connectTimeout = defaultConnectTimeout
	if t := c.GetConnectTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			return o, fmt.Errorf("connect_timeout: must be a positive duration")
		}
		o.connectTimeout = t.AsDuration()
	}
	if ka := c.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka != nil {
		// Unset fields keep the OS defaults (Go's: 15s, 15s, 9).
		kc := net.KeepAliveConfig{Enable: true, Count: -1, Idle: -1, Interval: -1}
		if v := ka.GetKeepaliveProbes(); v != nil {
			kc.Count = int(v.GetValue())
		}
		if v := ka.GetKeepaliveTime(); v != nil {
			kc.Idle = time.Duration(v.GetValue()) * time.Second
		}
		if v := ka.GetKeepaliveInterval(); v != nil {
			kc.Interval = time.Duration(v.GetValue()) * time.Second
		}
		o.keepAlive = &kc
	}
	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		var po upstreamhttp.HttpProtocolOptions
		if err := xdswire.UnmarshalAny(a, &po); err != nil {
			return o, fmt.Errorf("typed_extension_protocol_options[%q]: %w", httpProtocolOptionsKey, err)
		}
		if t := po.GetCommonHttpProtocolOptions().GetIdleTimeout(); t != nil {
			if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
				return o, fmt.Errorf("typed_extension_protocol_options[%q].common_http_protocol_options.idle_timeout: invalid", httpProtocolOptionsKey)
			}
			// 0 disables the timeout in Envoy; the Transport's 0 means the same.
			d := t.AsDuration()
			o.idleTimeout = &d
		}
		if ka := po.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive(); ka != nil {
			// Istio's connectionPool.http.http2KeepAlive.
			field := fmt.Sprintf("typed_extension_protocol_options[%q].explicit_http_config.http2_protocol_options.connection_keepalive", httpProtocolOptionsKey)
			for _, f := range []struct {
				name string
				d    *durationpb.Duration
				to   *time.Duration
			}{{"interval", ka.GetInterval(), &o.h2Ping.interval}, {"timeout", ka.GetTimeout(), &o.h2Ping.timeout}} {
				if f.d == nil {
					continue
				}
				if err := f.d.CheckValid(); err != nil || f.d.AsDuration() <= 0 {
					return o, fmt.Errorf("%s.%s: must be a positive duration", field, f.name)
				}
				*f.to = f.d.AsDuration()
			}
		}
		if v := po.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection(); v != nil && !o.h2 {
			o.maxUses = v.GetValue() // every HTTP/1.1 request then takes the counted synchronous path (h1_body.go)
		}
	}
	if o.sockets, err = parseSockets(c, secrets); err != nil {
		return o, err
	}
	if o.source, err = parseBindConfig(c.GetUpstreamBindConfig()); err != nil {
		return o, fmt.Errorf("upstream_bind_config.%w", err)
	}
	return o, nil
}

// parseBindConfig reads the source address upstream connections bind to
// (Istio's inbound passthrough binds 127.0.0.6 so the capture rules let
// its connections to the app through).
func parseBindConfig(b *core.BindConfig) (*net.TCPAddr, error) {
	if b == nil {
		return nil, nil
	}
	switch {
	case len(b.GetAdditionalSourceAddresses()) > 0 || len(b.GetExtraSourceAddresses()) > 0: //nolint:staticcheck // refused, deprecated or not
		return nil, fmt.Errorf("extra_source_addresses: unsupported")
	case b.GetFreebind() != nil:
		return nil, fmt.Errorf("freebind: unsupported")
	case len(b.GetSocketOptions()) > 0:
		return nil, fmt.Errorf("socket_options: unsupported")
	}
	sa := b.GetSourceAddress()
	if sa == nil {
		return nil, fmt.Errorf("source_address: required")
	}
	if sa.GetProtocol() != core.SocketAddress_TCP {
		return nil, fmt.Errorf("source_address.protocol: only TCP")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("source_address.address: %q is not an IP address", sa.GetAddress())
	}
	return &net.TCPAddr{IP: ip.AsSlice(), Port: int(sa.GetPortValue()), Zone: ip.Zone()}, nil
}

// parseHTTPProtocol reports whether the cluster speaks HTTP/2 (h2c)
// upstream, and whether it follows the downstream request's protocol
// instead (HttpProtocolOptions.use_downstream_protocol_config, Istio's
// connectionPool.http.useClientProtocol: h2c when the client spoke
// HTTP/2, HTTP/1.1 otherwise).
func parseHTTPProtocol(c *cluster.Cluster) (h2, downstream bool, err error) {
	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		var o upstreamhttp.HttpProtocolOptions
		if err := xdswire.UnmarshalAny(a, &o); err != nil {
			return false, false, fmt.Errorf("typed_extension_protocol_options[%q]: %w", httpProtocolOptionsKey, err)
		}
		switch p := o.GetUpstreamProtocolOptions().(type) {
		case *upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_:
			switch p.ExplicitHttpConfig.GetProtocolConfig().(type) {
			case *upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
				return true, false, nil
			case *upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
				return false, false, nil
			default:
				return false, false, fmt.Errorf("typed_extension_protocol_options[%q].explicit_http_config: only http_protocol_options or http2_protocol_options are supported", httpProtocolOptionsKey)
			}
		case *upstreamhttp.HttpProtocolOptions_UseDownstreamProtocolConfig:
			return false, true, nil // HTTP/1.1 unless the downstream request is HTTP/2
		case nil:
		default:
			return false, false, fmt.Errorf("typed_extension_protocol_options[%q]: %T is unsupported", httpProtocolOptionsKey, p)
		}
	}
	return c.GetHttp2ProtocolOptions() != nil, false, nil //nolint:staticcheck // legacy field still honoured
}

// connectError marks upstream dial failures so the forwarder can answer UF.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// IsConnectError reports whether err is a failure to connect to the
// endpoint (refused, unreachable, connect timeout): Envoy's UF.
func IsConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// Pool is the connections of one cluster to its endpoints. It is shared by
// successive configurations while the Cluster is unchanged and is safe for
// concurrent use.
//
// Its http.Transports are built at their first request: a sidecar holds
// every cluster of its mesh (three per service) and sends most of them
// nothing, and a Transport costs ~0.5 KB before it carries a request.
type Pool struct {
	transport atomic.Pointer[http.Transport] // plaintext endpoints; nil until first used (plainTransport)
	h1        *h1Pool                        // every endpoint's Conns; the synchronous path for HTTP/1.1 clusters
	h2        bool
	downH2    bool                           // use_downstream_protocol_config: HTTP/2 requests go to h2c
	h2c       atomic.Pointer[http.Transport] // with downH2; nil until first used (h2cTransport)
	dialer    *dialer                        // shared by the transports and h1
	sockets   sockets
	idle      time.Duration // IdleConnTimeout of the transports
	h2Ping    h2Ping        // the HTTP/2 transports' pings, defaults filled in
}

// NewPool builds the pool of a cluster with options o. It dials nothing
// until the first request.
func NewPool(o Options) *Pool {
	connectTimeout := o.connectTimeout
	if connectTimeout <= 0 {
		connectTimeout = defaultConnectTimeout
	}
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	if o.source != nil {
		d.LocalAddr = o.source
	}
	if o.keepAlive != nil {
		d.KeepAliveConfig = *o.keepAlive
	}
	if count := o.onConnect; count != nil {
		// Called once per socket, after it is created and before it
		// connects: every dial of the pool (HTTP, TLS, byte streams)
		// goes through d.
		d.ControlContext = func(context.Context, string, string, syscall.RawConn) error {
			count()
			return nil
		}
	}
	p := &Pool{h2: o.h2, downH2: o.downstreamProtocol, dialer: &dialer{Dialer: d, active: o.active}, sockets: o.sockets, idle: IdleTimeout}
	if len(p.sockets.all) == 0 {
		p.sockets.all = []socket{{name: "transport_socket"}} // the zero Options: plaintext
	}
	if o.idleTimeout != nil {
		p.idle = *o.idleTimeout
	}
	p.h2Ping = h2Ping{interval: defaultH2PingInterval, timeout: defaultH2PingTimeout}
	if o.h2Ping.interval > 0 {
		p.h2Ping.interval = o.h2Ping.interval
	}
	if o.h2Ping.timeout > 0 {
		p.h2Ping.timeout = o.h2Ping.timeout
	}
	p.h1 = newH1Pool(p)
	p.h1.maxUses = o.maxUses
	p.h1.idle = p.idle
	return p
}

// Lazy is a cluster's Pool, built at its first use: a sidecar holds
// every cluster of its mesh (three per service) and sends most of them
// nothing, and a Pool with its endpoints' Conns costs about 1 KB before
// it carries a request. Init it before use; it must not be copied. Safe
// for concurrent use.
type Lazy struct {
	o      Options
	mu     sync.Mutex // building the pool, closing
	closed bool       // CloseIdle ran: a pool built later is closed at once
	p      atomic.Pointer[Pool]
}

// Init sets the options the pool will be built with. Called once, before
// any other method.
func (l *Lazy) Init(o Options) { l.o = o }

// Pool returns the pool, building it at the first call. Lock-free once
// built; every caller gets the same Pool.
func (l *Lazy) Pool() *Pool {
	if p := l.p.Load(); p != nil {
		return p
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.p.Load(); p != nil {
		return p
	}
	p := NewPool(l.o)
	if l.closed {
		p.CloseIdle() // a request that started before the cluster was retired
	}
	l.p.Store(p)
	return p
}

// CloseIdle is Pool.CloseIdle, once the pool is built; a pool built later
// (by a request still running on a retired configuration) is closed
// the same way.
func (l *Lazy) CloseIdle() {
	l.mu.Lock()
	l.closed = true
	p := l.p.Load()
	l.mu.Unlock()
	if p != nil {
		p.CloseIdle()
	}
}

// Built returns the pool if it was built, else nil.
func (l *Lazy) Built() *Pool { return l.p.Load() }

// Closed reports whether CloseIdle ran.
func (l *Lazy) Closed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Socket returns the transport socket an endpoint whose metadata is md
// (its LbEndpoint metadata; may be nil) takes, for Pool.EndpointIn: the
// first of the cluster's transport_socket_matches that md's
// "envoy.transport_socket_match" fields match, else the cluster's
// transport_socket.
func (l *Lazy) Socket(md *core.Metadata) int { return l.o.sockets.pick(md) }

// Broken is Pool.Broken, without building the pool.
func (l *Lazy) Broken() []error { return l.o.sockets.broken() }

// HTTP2 is Pool.HTTP2, without building the pool.
func (l *Lazy) HTTP2() bool { return l.o.h2 }

// plainTransport is the transport of the plaintext endpoints, built on
// first use.
func (p *Pool) plainTransport() *http.Transport {
	return lazyTransport(&p.transport, func() *http.Transport { return p.newTransport(p.h2, false, nil) })
}

// h2cTransport is the transport of HTTP/2 requests of a pool that follows
// the downstream protocol, built on first use: the HTTP/1.1 transport's
// twin (dialer, timeouts, idle timeout) speaking HTTP/2 with prior
// knowledge.
func (p *Pool) h2cTransport() *http.Transport {
	return lazyTransport(&p.h2c, func() *http.Transport { return p.newTransport(true, false, nil) })
}

// lazyTransport returns *t, storing build() there first if it is nil.
// Two first requests at once may both build one; one is kept, the other
// has no connection yet and is dropped.
func lazyTransport(t *atomic.Pointer[http.Transport], build func() *http.Transport) *http.Transport {
	if tr := t.Load(); tr != nil {
		return tr
	}
	t.CompareAndSwap(nil, build())
	return t.Load()
}

// newTransport builds one of the pool's http.Transports: HTTP/2 (h2) or
// HTTP/1.1, in plaintext (h2c with prior knowledge for HTTP/2) or, with
// tlsOn, over the connections dialTLS makes.
func (p *Pool) newTransport(h2, tlsOn bool, dialTLS func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	protocols := new(http.Protocols)
	switch {
	case h2 && tlsOn:
		protocols.SetHTTP2(true)
	case h2:
		protocols.SetUnencryptedHTTP2(true)
	default:
		protocols.SetHTTP1(true)
	}
	d := p.dialer
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &connectError{err}
			}
			return c, nil
		},
		DialTLSContext:      dialTLS,
		Protocols:           protocols,
		MaxIdleConns:        0, // no global limit
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     p.idle,
		DisableCompression:  true, // pass Accept-Encoding and bodies through untouched
		HTTP2: &http.HTTP2Config{
			// A ping after interval without a frame from the peer (Envoy
			// pings every interval; on a busy connection the frames
			// already show it is alive).
			SendPingTimeout: p.h2Ping.interval,
			PingTimeout:     p.h2Ping.timeout,
		},
	}
}

// HTTP2 reports whether the pool speaks h2c to its endpoints.
func (p *Pool) HTTP2() bool { return p.h2 }

// Endpoint returns the connections of the endpoint at addr (host:port)
// whose metadata is md (its LbEndpoint metadata; may be nil), creating
// them if needed: the transport socket is the first of the cluster's
// transport_socket_matches that md's "envoy.transport_socket_match"
// fields match, else the cluster's transport_socket. Called while
// translating configuration, not per request.
func (p *Pool) Endpoint(addr string, md *core.Metadata) *Conns {
	return p.h1.endpoint(addr, p.sockets.pick(md))
}

// EndpointIn returns the connections of the endpoint at addr in transport
// socket sock (Lazy.Socket), creating them if needed.
func (p *Pool) EndpointIn(addr string, sock int) *Conns {
	if sock < 0 || sock >= len(p.sockets.all) {
		sock = 0
	}
	return p.h1.endpoint(addr, sock)
}

// Broken lists the cluster's TLS sockets that cannot make handshakes (a
// file their context names could not be used): connections through them
// fail. For the caller to report when the pool is built.
func (p *Pool) Broken() []error { return p.sockets.broken() }

// Retain closes the connections of every endpoint not in keep: requests
// still running on them finish, their connections are closed instead of
// pooled. Called after a configuration is applied.
func (p *Pool) Retain(keep []*Conns) { p.h1.retain(keep) }

// CloseIdle closes the idle connections. Once the pool is retired (or the
// data plane closed) HTTP/1.1 connections given back by requests still in
// flight are closed too; the transports' are reaped by their idle timeout.
func (p *Pool) CloseIdle() {
	for _, t := range []*http.Transport{p.transport.Load(), p.h2c.Load()} {
		if t != nil {
			t.CloseIdleConnections()
		}
	}
	p.h1.close()
}

// DownstreamH2 reports whether a request that arrived as r goes upstream
// over the pool's h2c transport rather than HTTP/1.1: the pool follows the
// downstream protocol and r is HTTP/2.
func (p *Pool) DownstreamH2(r *http.Request) bool {
	return p.downH2 && r.ProtoMajor == 2
}

// TransportFor is the transport of an upstream request for a downstream
// request r: the h2c one when the pool follows the downstream protocol and
// r is HTTP/2, the cluster's own otherwise.
func (p *Pool) TransportFor(r *http.Request) *http.Transport {
	if p.DownstreamH2(r) {
		return p.h2cTransport()
	}
	return p.plainTransport()
}

// RoundTrip sends out, the upstream copy of the downstream request
// downstream, to the endpoint whose connections are conns, and returns
// the response head. HTTP/1.1 requests without a body (and, when the
// cluster limits requests per connection, with one) take the
// synchronous path on the calling goroutine, in plaintext or TLS alike;
// HTTP/2 requests (an HTTP/2 cluster, or an HTTP/2 downstream request to
// a cluster following the downstream protocol) go through the endpoint's
// h2client, upgrades excepted; upgrades and other bodies go through an
// http.Transport: the
// pool's for plaintext endpoints, the endpoint's own for TLS ones (out's
// URL scheme is then set to https). ctx bounds the exchange; the
// response body is tied to it. A failure to connect, TLS handshake
// included, satisfies IsConnectError. s, when not nil, lends the
// response's storage on the synchronous path, and learns whether another
// transport may still hold out (Scratch).
func (p *Pool) RoundTrip(ctx context.Context, conns *Conns, downstream, out *http.Request, s *Scratch) (*http.Response, error) {
	if conns.autoSNI {
		conns = conns.forHost(out.Host)
	}
	downH2 := p.DownstreamH2(downstream)
	if !p.h2 && downstream.Method != http.MethodConnect && downstream.Header["Upgrade"] == nil && !downH2 {
		if out.Body == nil && out.Trailer == nil {
			// HTTP/1.1 upstream, no request body: the synchronous path.
			return conns.roundTrip(ctx, out, nil, s)
		}
		if inMemory(out) {
			// A small request body that arrived with the head: the
			// synchronous path, head and body in one write.
			return conns.roundTripInMemory(ctx, out, s)
		}
		if conns.maxUses > 0 {
			// max_requests_per_connection and a request body: the
			// synchronous path counts it on its connection too.
			s.hold()
			return conns.roundTripBody(ctx, out)
		}
	}
	if (p.h2 || downH2) && ownH2(downstream) {
		resp, held, err := conns.h2Client(p).RoundTripInto(ctx, out, s.h2Storage())
		if held {
			s.hold()
		}
		return resp, err
	}
	s.hold() // an http.Transport's: it may write the request after the response has come
	if conns.tls != nil {
		out.URL.Scheme = "https"
		return conns.transport(p, p.h2 || downH2).RoundTrip(out.WithContext(ctx))
	}
	return p.TransportFor(downstream).RoundTrip(out.WithContext(ctx))
}
