package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"

	"weft.dev/weft/internal/proxy/h2client"
	"weft.dev/weft/internal/proxy/tlssocket"
)

// The HTTP/2 upstream path: an endpoint's h2c (or TLS h2) requests go
// through its own h2client.Client (internal/proxy/h2client), built at
// its first HTTP/2 request; upgrades and CONNECT still take the
// http.Transport. With WEFT_HTTP2_CLIENT=go every HTTP/2 request takes
// the http.Transport (golang.org/x/net/http2's client) as before
// 2026-12-07.

// goHTTP2Client: WEFT_HTTP2_CLIENT=go sends HTTP/2 upstream with Go's
// client.
var goHTTP2Client = os.Getenv("WEFT_HTTP2_CLIENT") == "go"

// h2Client returns the endpoint's HTTP/2 client, building it on first
// use with the pool's idle timeout and pings and the endpoint's dialer
// and TLS (ALPN narrowed to h2). A TLS peer that negotiates http/1.1 is
// a connect failure.
func (e *Conns) h2Client(p *Pool) *h2client.Client {
	if c := e.h2.Load(); c != nil {
		return c
	}
	cfg := h2client.Config{
		Scheme:       "http",
		IdleTimeout:  p.idle,
		PingInterval: p.h2Ping.interval,
		PingTimeout:  p.h2Ping.timeout,
	}
	d, addr := e.dialer, e.addr
	if e.tls == nil {
		cfg.Dial = func(ctx context.Context) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &connectError{err}
			}
			return c, nil
		}
	} else {
		cfg.Scheme = "https"
		tlsCfg := e.tls.Config(e.sni, tlssocket.ALPNFor(e.tls.ALPN(), true), e.cache)
		cfg.Dial = func(ctx context.Context) (net.Conn, error) {
			raw, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &connectError{err}
			}
			tc, err := e.handshake(ctx, raw, tlsCfg)
			if err != nil {
				return nil, err
			}
			if tc.ConnectionState().NegotiatedProtocol == "http/1.1" {
				tc.Close()
				return nil, &connectError{fmt.Errorf("TLS handshake with %s: the peer chose http/1.1 for an HTTP/2 cluster", addr)}
			}
			return tc, nil
		}
	}
	c := h2client.New(cfg)
	e.mu.Lock()
	if old := e.h2.Load(); old != nil {
		e.mu.Unlock()
		return old
	}
	e.h2.Store(c)
	closed := e.closed
	e.mu.Unlock()
	if closed {
		c.Shutdown() // retired already: a request still running on an old configuration
	}
	return c
}

// shutdownH2 closes the endpoint's HTTP/2 connections once their
// streams end.
func (e *Conns) shutdownH2() {
	if c := e.h2.Load(); c != nil {
		c.Shutdown()
	}
}

// ownH2 reports whether an HTTP/2 request r (to an HTTP/2 cluster, or
// one following the downstream protocol) goes through h2client: every
// one but upgrades and CONNECT, unless WEFT_HTTP2_CLIENT=go.
func ownH2(r *http.Request) bool {
	return !goHTTP2Client && r.Method != http.MethodConnect && r.Header["Upgrade"] == nil
}
