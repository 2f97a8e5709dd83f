package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/forward"
	"weft.dev/weft/internal/proxy/h1server"
	"weft.dev/weft/internal/proxy/h2guard"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/sockio"
	"weft.dev/weft/internal/proxy/tcpproxy"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/tlssocket"
)

// Accepting connections, as Envoy's listener does before the HTTP
// connection manager sees them.
//
// Every connection a bound listener accepts is set up on a goroutine of
// its own, with the listener's configuration current at that moment: with
// use_original_dst its local address becomes the destination its client
// dialled before an iptables REDIRECT; the TLS and HTTP inspectors (when
// the listener has them) read the first bytes to tell TLS from plaintext
// and HTTP/1.1 or h2c from other bytes; the filter chain is picked
// (chainmatch.go), and a chain with a TLS transport socket makes the TLS handshake
// — a client that sends plaintext there, or a certificate the chain does
// not accept, is refused: its connection is closed and counted
// (envoy_listener_ssl_connection_error), as Envoy's failed handshake.
// Only then is the connection served, TLS established, with what the
// request path needs to know of it (connInfo): HTTP/1.1 by the
// listener's h1server on the same goroutine, HTTP/2 (ALPN h2, or h2c
// with prior knowledge) by its http.Server — or, on a tcp_proxy chain,
// the TCP proxy relays it on the same goroutine until it ends or the
// listener closes.
// So a slow or hostile client never holds up the accept loop, and a
// certificate that rotates is presented on the next handshake while
// connections already set up keep theirs.

// handshakeTimeout bounds a TLS handshake (and, without a TLS inspector,
// the wait for the first bytes of a connection on a TLS chain).
const handshakeTimeout = 15 * time.Second

// connInfo is what the request path knows of one accepted connection.
// Immutable once the connection is handed to the http.Server.
type connInfo struct {
	// What its chain was picked by: its (restored) destination, TLS
	// server name (SNI; "" when none was read), transport protocol
	// (transportTLS or transportRaw) and requested application protocols
	// (none when none were detected).
	dst       netip.AddrPort
	sni       string
	transport string
	apps      []string
	chain     *chainConfig // the chain it was accepted on
	ds        *forward.Downstream
	// tls is the connection's TLS state when net/http cannot see it: an
	// HTTP/1.1 connection over TLS, wrapped to check its framing, or an
	// HTTP/2 one (ALPN h2), wrapped to time its header blocks and served
	// as HTTP/2 with prior knowledge.
	tls *tls.ConnectionState
}

type connInfoKey struct{}

// connOf returns the connInfo of the connection r arrived on, nil for a
// request that did not come through a bound listener (tests calling
// ServeHTTP).
func connOf(r interface{ Context() context.Context }) *connInfo {
	ci, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	return ci
}

// connContext is the listener's http.Server.ConnContext: it puts the
// connection's connInfo in every request's context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	// Under the wrappers (h2guard, TLS) is the serverConn.
	for {
		switch w := c.(type) {
		case *serverConn:
			return context.WithValue(ctx, connInfoKey{}, w.info)
		case interface{ NetConn() net.Conn }:
			c = w.NetConn()
		default:
			return ctx
		}
	}
}

// serverConn is an accepted connection: the bytes the TLS inspector read
// are given back first; a TCP socket is then read and written with raw
// system calls (sockio).
type serverConn struct {
	net.Conn
	head     []byte
	info     *connInfo
	bl       *boundListener // whose connection limit it counts against; nil: none
	released atomic.Bool
	sio      sockio.IO // in use (Ok) for a *net.TCPConn
}

// Close closes the connection and gives its place back to the listener's
// connection limit, once, whoever closes it (the HTTP server, a TLS
// connection on top, the TCP proxy, a hijacker).
func (c *serverConn) Close() error {
	if c.bl != nil && !c.released.Swap(true) {
		c.bl.releaseConn()
	}
	return c.Conn.Close()
}

func (c *serverConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	if c.sio.Ok() {
		return c.sio.Read(p)
	}
	return c.Conn.Read(p)
}

func (c *serverConn) Write(p []byte) (int, error) {
	if c.sio.Ok() {
		return c.sio.Write(p)
	}
	return c.Conn.Write(p)
}

// CloseWrite half-closes the TCP connection, as net/http does before
// closing a connection it has answered.
func (c *serverConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connListener is the net.Listener a bound listener's http.Server serves:
// its Accept returns connections set up (setup) on goroutines of their
// own. Close closes the socket and interrupts the setups in progress.
type connListener struct {
	bl     *boundListener
	conns  chan net.Conn
	closed chan struct{} // Close was called
	failed chan struct{} // the accept loop ended on an error (err)
	err    error
	once   sync.Once

	// ctx ends when the listener closes (its drain is over, or the data
	// plane closes): the TCP proxy's connections end with it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections being set up
	shut    bool
}

func newConnListener(bl *boundListener) *connListener {
	l := &connListener{bl: bl, conns: make(chan net.Conn), closed: make(chan struct{}), failed: make(chan struct{}),
		pending: map[net.Conn]struct{}{}}
	l.ctx, l.cancel = context.WithCancel(bl.d.baseCtx)
	return l
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.err
	}
}

// Close implements net.Listener: the socket closes and connections still
// being set up are closed.
func (l *connListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		l.cancel()
		err = l.bl.ln.Close()
		l.mu.Lock()
		l.shut = true
		for c := range l.pending {
			c.SetDeadline(aLongTimeAgo) // the setup's read or handshake returns at once
		}
		l.mu.Unlock()
	})
	return err
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return l.bl.ln.Addr() }

var aLongTimeAgo = time.Unix(1, 0)

// acceptLoop accepts connections until the socket closes, setting each
// up on a goroutine of its own. Runs on a goroutine counted in d.wg.
func (l *connListener) acceptLoop() {
	d := l.bl.d
	defer d.wg.Done()
	var delay time.Duration
	for {
		c, err := l.bl.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			//nolint:staticcheck // Temporary is what net/http checks too (EMFILE and the like).
			if ne, ok := err.(net.Error); ok && ne.Temporary() && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				d.log.Warn("accept failed; retrying", "listener", l.bl.name, "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
					continue
				case <-l.closed:
					return
				}
			}
			l.err = err
			close(l.failed)
			return
		}
		delay = 0
		if !l.bl.admitConn() {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.shut {
			l.mu.Unlock()
			c.Close()
			l.bl.releaseConn()
			return
		}
		l.pending[c] = struct{}{}
		d.wg.Add(1) // while this goroutine holds its own count
		l.mu.Unlock()
		go l.setupAndHand(c)
	}
}

// setupAndHand sets c up and hands it to the http.Server, or, on a TCP
// proxy chain, relays it on this goroutine (counted in d.wg) until it
// ends or the listener closes; or closes it.
func (l *connListener) setupAndHand(c net.Conn) {
	defer l.bl.d.wg.Done()
	conn, ci := l.bl.setup(c)
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if conn == nil {
		c.Close() // never wrapped in a serverConn handed out
		l.bl.releaseConn()
		return
	}
	if cc := ci.chain; cc.tcp != nil {
		rt, _, _ := l.bl.state()
		if !l.connAllowed(cc, ci, rt.clusters) {
			conn.Close() // AuthorizationPolicy: never relayed
			return
		}
		l.bl.d.tcp.Serve(l.ctx, tcpproxy.Conn{Conn: conn, Dst: ci.dst, Inbound: cc.http.Inbound, Sec: l.bl.d.tcpSec(ci)},
			cc.tcp, rt.clusters)
		return
	}
	if ci.tls != nil && ci.tls.NegotiatedProtocol == "h2" {
		l.serveHTTP2(conn, ci)
		return
	}
	// HTTP/1.1 (plaintext or over TLS) is served on this goroutine; a
	// client that starts with HTTP/2's preface (h2c with prior
	// knowledge) is handed to the HTTP/2 server.
	ctx := context.WithValue(l.bl.d.baseCtx, connInfoKey{}, ci)
	l.bl.h1.ServeConn(ctx, conn, h1server.ConnOptions{
		AllowChunkedLength: ci.chain.allowChunkedLength,
		TLS:                ci.tls,
		Refused: func(status int, err error) {
			l.bl.d.log.Debug("request refused", "listener", l.bl.name, "remote", c.RemoteAddr().String(), "err", err.Error())
			l.bl.d.fwd.Refused(&ci.chain.http, ci.ds, status) // counted with DPE, as Envoy's codec errors
		},
		Handoff: func(h2 net.Conn) { l.serveHTTP2(h2, ci) },
		Bytes:   l.bytesHandler(ci),
	})
}

// connAllowed runs a TCP chain's network filters on a connection, in
// order, with one dynamic metadata for all (an RBAC filter's shadow
// result is what enables the ext_authz filter after it).
func (l *connListener) connAllowed(cc *chainConfig, ci *connInfo, clusters map[string]*cluster.Cluster) bool {
	if len(cc.connFilters) == 0 {
		return true
	}
	md := map[string]any{}
	for _, f := range cc.connFilters {
		switch {
		case f.rbac != nil && !f.rbac.AllowsWith(&ci.ds.Conn, md):
			return false
		case f.authz != nil && !f.authz.Allows(l.ctx, &ci.ds.Conn, md, forward.FilterUpstream(clusters)):
			return false
		}
	}
	return true
}

// serveHTTP2 serves an HTTP/2 connection on this goroutine (counted in
// d.wg), or with WEFT_HTTP2_SERVER=go hands it to the listener's
// http.Server.
func (l *connListener) serveHTTP2(conn net.Conn, ci *connInfo) {
	if l.bl.h2 == nil {
		l.handToHTTP2(l.bl.h2Guard(conn))
		return
	}
	l.bl.h2.ServeConn(context.WithValue(l.bl.d.baseCtx, connInfoKey{}, ci), conn)
}

// handToHTTP2 gives an HTTP/2 connection to the listener's http.Server,
// or closes it if the listener is closing.
func (l *connListener) handToHTTP2(conn net.Conn) {
	select {
	case l.conns <- conn:
	case <-l.closed:
		conn.Close()
	case <-l.failed:
		conn.Close()
	}
}

// setup picks c's filter chain in the listener's current configuration
// — after restoring its original destination (use_original_dst) and
// running the listener filters (the TLS and HTTP inspectors) — and, on a
// TLS chain, makes the handshake. It returns the connection (a *tls.Conn
// or a *serverConn) and what is known of it, or nil when c is refused.
func (bl *boundListener) setup(c net.Conn) (net.Conn, *connInfo) {
	_, lc, _ := bl.state()
	local := addrPort(c.LocalAddr())
	if lc.useOriginalDst {
		// Envoy's original_dst: the destination the client dialled before
		// the REDIRECT becomes the connection's local address. A
		// connection that was not redirected keeps its own.
		if dst, err := bl.d.originalDst(c); err == nil {
			local = dst
		} else {
			bl.d.log.Debug("no original destination; keeping the local address", "listener", bl.name, "remote", c.RemoteAddr().String(), "err", err)
		}
	}
	transport := transportRaw
	var (
		sni  string
		apps []string
		head []byte
	)
	port := local.Port()
	tlsOn := lc.inspectTLS.runs(port)
	// The HTTP inspector's verdict is read when it can change the chain
	// (appMatters), or for free while the TLS inspector waits anyway.
	httpOn := lc.inspectHTTP.runs(port) && (tlsOn || lc.appMatters(local))
	if tlsOn || httpOn {
		var err error
		head, err = inspect(c, lc.inspectTimeout, httpOn)
		switch {
		case len(head) > 0 && tlssocket.IsHandshake(head):
			if tlsOn {
				transport = transportTLS
				if lc.readHello {
					c.SetReadDeadline(deadline(lc.inspectTimeout))
					sni, apps, head = clientHello(c, head)
					c.SetReadDeadline(time.Time{})
				}
			}
		case len(head) > 0 && httpOn:
			apps = httpProtocols(head)
		}
		switch {
		case err == nil:
		case isTimeout(err) && lc.continueOnTimeout:
		case len(head) > 0 && !isTimeout(err):
			// The client sent its bytes and half-closed (or failed after
			// them): match on what it sent; its chain sees the rest.
		default:
			bl.d.log.Debug("connection closed before the listener filters were done", "listener", bl.name, "remote", c.RemoteAddr().String(), "err", err)
			return nil, nil
		}
	}
	cc := lc.match(local, sni, transport, apps)
	if cc == nil {
		bl.stats.noChainMatch.Inc()
		bl.d.log.Debug("connection refused: no filter chain matches", "listener", bl.name, "remote", c.RemoteAddr().String(),
			"destination", local.String(), "server_name", sni, "transport_protocol", transport, "application_protocols", apps)
		return nil, nil
	}
	ci := &connInfo{dst: local, sni: sni, transport: transport, apps: apps, chain: cc}
	sc := &serverConn{Conn: c, head: head, info: ci, bl: bl}
	if tc, ok := c.(*net.TCPConn); ok {
		sc.sio.Init(tc)
	}
	conn := filter.Connection{LocalAddr: local, RemoteAddr: addrPort(c.RemoteAddr())}
	socket := addrPort(c.LocalAddr())
	if cc.tls == nil {
		ci.ds = bl.d.fwd.NewDownstream(conn)
		ci.ds.Socket = socket
		ci.ds.Ctx = bl.cl.ctx
		if cc.tcp != nil {
			return sc, ci
		}
		return sc, ci
	}
	if head == nil {
		// No inspector: the TLS socket itself sees what the client sends.
		var err error
		if head, err = peek(c, handshakeTimeout); err != nil {
			bl.stats.sslError.Inc()
			bl.d.log.Debug("TLS connection closed before its first bytes", "listener", bl.name, "remote", c.RemoteAddr().String(), "err", err)
			return nil, nil
		}
		sc.head = head
	}
	if !tlssocket.IsHandshake(head) {
		// Plaintext on a TLS chain (STRICT): Envoy's handshake fails and
		// the connection closes; so does this one, without an answer.
		bl.stats.sslError.Inc()
		bl.d.log.Debug("plaintext connection refused: the filter chain requires TLS", "listener", bl.name, "remote", c.RemoteAddr().String())
		return nil, nil
	}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	tc := tls.Server(sc, cc.tls.Config())
	if err := tc.Handshake(); err != nil {
		bl.stats.sslError.Inc()
		bl.d.log.Debug("TLS handshake failed", "listener", bl.name, "remote", c.RemoteAddr().String(), "err", err)
		return nil, nil
	}
	c.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	bl.stats.handshake.Inc()
	if cs.DidResume {
		bl.stats.sessionReused.Inc()
	}
	conn.TLS = &cs
	conn.Peer = peerCertificate(&cs)
	ci.ds = bl.d.fwd.NewDownstream(conn)
	ci.ds.Socket = socket
	ci.ds.Ctx = bl.cl.ctx
	if cc.tcp != nil {
		return tc, ci
	}
	// HTTP/1.1 over TLS is served by the listener's h1server as
	// plaintext is, and HTTP/2 (ALPN h2) by its HTTP/2 server on the
	// decrypted bytes, as h2c; ServeHTTP sets Request.TLS from ci.
	ci.tls = &cs
	return tc, ci
}

// h2Guard is the read side of an HTTP/2 connection ahead of Go's HTTP/2
// server, with WEFT_HTTP2_SERVER=go (h2guard; Weft's h2server does the
// same itself): header blocks timed with the listener server's
// request headers timeout (a connection that completes no header block
// within it of the preface, or keeps one open longer, is closed and
// counted; Go's HTTP/2 server has no such timeout of its own), malformed
// requests reset as stream errors and counted, repeated settings applied
// in order.
func (bl *boundListener) h2Guard(c net.Conn) net.Conn {
	timeout := bl.srv.ReadHeaderTimeout
	return h2guard.New(c, h2guard.Options{
		HeaderTimeout: timeout,
		OnTimeout: func() {
			bl.stats.h2HeaderTimeout.Inc()
			bl.d.log.Debug("HTTP/2 connection closed: request headers timeout", "listener", bl.name, "remote", c.RemoteAddr().String(), "timeout", timeout)
		},
		OnMalformed: func(field string) {
			bl.stats.h2Messaging.Inc()
			bl.d.log.Debug("HTTP/2 stream reset: malformed request", "listener", bl.name, "remote", c.RemoteAddr().String(), "field", field)
		},
		// The server's own limits, so the guard's HPACK decoder stays in
		// step with the server's and holds only frames the server takes.
		MaxFrameSize:    uint32(bl.srv.HTTP2.MaxReadFrameSize),
		HeaderTableSize: uint32(bl.srv.HTTP2.MaxDecoderHeaderTableSize), // 0: both use 4096
	})
}

// admitConn counts a newly accepted connection against the connection
// limits, checked in Envoy's order: the global limit
// (Options.MaxConnections), the overload manager's
// reject_incoming_connections, the listener's own limit. False (counted
// as the refusal it is) when the connection must be closed.
func (bl *boundListener) admitConn() bool {
	d := bl.d
	if n := d.activeConns.Add(1); d.opts.MaxConnections > 0 && n > int64(d.opts.MaxConnections) {
		d.activeConns.Add(-1)
		bl.stats.globalOverflow.Inc()
		return false
	}
	if d.opts.Overload != nil && d.opts.Overload.RejectIncomingConnections() {
		d.activeConns.Add(-1)
		bl.stats.overloadReject.Inc()
		return false
	}
	limit := int64(d.opts.MaxConnectionsPerListener)
	if n := bl.active.Add(1); limit > 0 && n > limit {
		bl.active.Add(-1)
		d.activeConns.Add(-1)
		bl.stats.cxOverflow.Inc()
		return false
	}
	bl.stats.cxActive.Inc()
	return true
}

// releaseConn gives an admitted connection's place back.
func (bl *boundListener) releaseConn() {
	bl.active.Add(-1)
	bl.d.activeConns.Add(-1)
	bl.stats.cxActive.Dec()
}

// peek reads a connection's first bytes, waiting at most timeout (0: no
// limit).
func peek(c net.Conn, timeout time.Duration) ([]byte, error) {
	if timeout > 0 {
		c.SetReadDeadline(time.Now().Add(timeout))
		defer c.SetReadDeadline(time.Time{})
	}
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if n > 0 {
		return buf[:n], nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return nil, err
}

// h2Preface is the HTTP/2 client connection preface.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// inspect runs the listener filters' reads: the first bytes of c, within
// timeout (0: no limit). With http (the HTTP inspector) it reads on until
// httpProtocol can decide — at most len(h2Preface) bytes —; otherwise one
// read, enough for the TLS inspector. It returns what it read; err is the
// read error that stopped it early (a timeout, EOF), nil once decided.
func inspect(c net.Conn, timeout time.Duration, http bool) ([]byte, error) {
	if timeout > 0 {
		c.SetReadDeadline(time.Now().Add(timeout))
		defer c.SetReadDeadline(time.Time{})
	}
	// Room for the preface, or for a usual HTTP/1 request line whole in
	// the first read (the HTTP inspector reads on to its version).
	size := len(h2Preface)
	if http {
		size = 1 << 10
	}
	buf := make([]byte, size)
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		head := buf[:n]
		if n > 0 && (!http || tlssocket.IsHandshake(head) || httpDecided(head)) {
			return head, nil
		}
		if err != nil {
			return head, err
		}
		if m == 0 {
			return head, io.ErrNoProgress
		}
		if n == len(buf) {
			// An HTTP/1 request line longer than the preface: read on
			// to its version (httpDecided stops at maxInspectBytes).
			buf = append(buf, make([]byte, min(len(buf), maxInspectBytes-len(buf)))...)
		}
	}
}

// maxInspectBytes bounds what the HTTP inspector reads of a request line
// to find its version; a longer line is taken as HTTP/1.1.
const maxInspectBytes = 8 << 10

// httpDecided reports whether head is enough for httpProtocol: the
// HTTP/2 preface, bytes that cannot start an HTTP/1 request, or an
// HTTP/1 method and the rest of the request line (its version).
func httpDecided(head []byte) bool {
	if len(head) >= len(h2Preface) && string(head[:len(h2Preface)]) == h2Preface {
		return true
	}
	if len(head) < len(h2Preface) && string(head) == h2Preface[:len(head)] {
		return false // maybe the preface: read on
	}
	for i, b := range head {
		switch {
		case b == ' ':
			return bytes.IndexByte(head[i:], '\n') >= 0 || len(head) >= maxInspectBytes
		case !isMethodChar(b) || i >= maxMethodLen:
			return true // not an HTTP/1 method: decided, no protocol
		}
	}
	return false
}

// maxMethodLen bounds an HTTP/1 method token the inspector accepts.
const maxMethodLen = 16

// isMethodChar: HTTP methods in practice are upper-case letters, '-' and
// '_' (Envoy's parser knows a fixed list of such methods).
func isMethodChar(b byte) bool { return b >= 'A' && b <= 'Z' || b == '-' || b == '_' }

// The HTTP inspector's verdicts, as application protocol lists.
var (
	protosH2C    = []string{"h2c"}
	protosHTTP11 = []string{"http/1.1"}
	protosHTTP10 = []string{"http/1.0"}
)

// httpProtocols is httpProtocol as the list chains match on.
func httpProtocols(head []byte) []string {
	switch httpProtocol(head) {
	case "h2c":
		return protosH2C
	case "http/1.1":
		return protosHTTP11
	case "http/1.0":
		return protosHTTP10
	}
	return nil
}

// deadline is now+timeout, or none for 0.
func deadline(timeout time.Duration) time.Time {
	if timeout <= 0 {
		return time.Time{}
	}
	return time.Now().Add(timeout)
}

// httpProtocol is the http_inspector's verdict on a connection's first
// bytes: "h2c" for the HTTP/2 preface; for an HTTP/1 method followed by
// a space, "http/1.0" when the request line ends in HTTP/1.0 and
// "http/1.1" otherwise (a line not yet whole included); "" for anything
// else. As Envoy's, the HTTP/1.0 verdict matches none of the chains
// Istio sniffs HTTP with ("http/1.1", "h2c"): such a connection takes
// the port's TCP chain, as Istio's "http10 to auto" test expects.
func httpProtocol(head []byte) string {
	if len(head) >= len(h2Preface) && string(head[:len(h2Preface)]) == h2Preface {
		return "h2c"
	}
	for i, b := range head {
		if b == ' ' {
			if i == 0 || string(head[:i]) == "PRI" {
				return ""
			}
			if nl := bytes.IndexByte(head[i:], '\n'); nl >= 0 {
				line := bytes.TrimSuffix(head[i:i+nl], []byte{'\r'})
				if bytes.HasSuffix(line, []byte(" HTTP/1.0")) {
					return "http/1.0"
				}
			}
			return "http/1.1"
		}
		if !isMethodChar(b) || i >= maxMethodLen {
			return ""
		}
	}
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// peerCertificate describes the client certificate of a TLS connection;
// nil when the client sent none.
func peerCertificate(cs *tls.ConnectionState) *filter.PeerCertificate {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	p := &filter.PeerCertificate{
		Principal: tlssocket.Principal(leaf),
		DNSSANs:   leaf.DNSNames,
		Subject:   leaf.Subject.String(),
		Hash:      tlssocket.Hash(leaf),
	}
	for _, u := range leaf.URIs {
		p.URISANs = append(p.URISANs, u.String())
	}
	return p
}

// listenerStats are Envoy's per-listener TLS and filter chain statistics,
// as its Prometheus endpoint names them (envoy_listener_<stat>, label
// envoy_listener_address; counters without a _total suffix, like the
// envoy_cluster_* ones).
type listenerStats struct {
	handshake, sslError, sessionReused, noChainMatch, cxOverflow *prometheus.CounterVec
	globalOverflow, overloadReject, h2HeaderTimeout              *prometheus.CounterVec
	streamIdleTimeout, h2Messaging                               *prometheus.CounterVec
	cxActive                                                     *prometheus.GaugeVec
}

// boundStats are one listener's counters.
type boundStats struct {
	handshake, sslError, sessionReused, noChainMatch, cxOverflow prometheus.Counter
	globalOverflow, overloadReject, h2HeaderTimeout              prometheus.Counter
	streamIdleTimeout, h2Messaging                               prometheus.Counter
	cxActive                                                     prometheus.Gauge
}

const listenerAddressLabel = "envoy_listener_address"

func newListenerStats(reg prometheus.Registerer) (*listenerStats, error) {
	mk := func(name, help string) (*prometheus.CounterVec, error) {
		return telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{listenerAddressLabel}))
	}
	var s listenerStats
	var err error
	for _, m := range []struct {
		v          **prometheus.CounterVec
		name, help string
	}{
		{&s.handshake, "envoy_listener_ssl_handshake", "TLS handshakes completed on the listener (mutual TLS: the client's certificate verified)."},
		{&s.sslError, "envoy_listener_ssl_connection_error", "Connections on a TLS filter chain closed without a handshake: plaintext on a STRICT port, a certificate the listener does not accept, a failed handshake."},
		{&s.sessionReused, "envoy_listener_ssl_session_reused", "TLS handshakes that resumed a session."},
		{&s.noChainMatch, "envoy_listener_no_filter_chain_match", "Connections refused because no filter chain matches them."},
		{&s.cxOverflow, "envoy_listener_downstream_cx_overflow", "Connections closed at once because the listener held its maximum number of connections."},
		{&s.globalOverflow, "envoy_listener_downstream_global_cx_overflow", "Connections closed at once because all listeners together held the proxy's maximum number of connections (--max-connections)."},
		{&s.h2HeaderTimeout, "envoy_listener_http2_header_timeout", "HTTP/2 connections closed because a request's header block was not complete within request_headers_timeout (of the preface, for the first; of its first frame, for the others)."},
		{&s.streamIdleTimeout, "envoy_listener_http2_stream_idle_timeout", "HTTP/2 streams reset because nothing moved either way for stream_idle_timeout (a client that does not read its response or send its body)."},
		{&s.h2Messaging, "envoy_listener_http2_rx_messaging_error", "HTTP/2 streams reset with PROTOCOL_ERROR because their request was malformed (RFC 9113 §8.2.2: a connection-specific header field, or TE other than \"trailers\"); the request never reaches the upstream."},
		{&s.overloadReject, "envoy_listener_downstream_cx_overload_reject", "Connections closed at once because the overload manager rejects new connections (memory over --overload-memory-limit's threshold)."},
	} {
		if *m.v, err = mk(m.name, m.help); err != nil {
			return nil, err
		}
	}
	if s.cxActive, err = telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envoy_listener_downstream_cx_active",
		Help: "Connections the listener holds open."}, []string{listenerAddressLabel})); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *listenerStats) forListener(name string) boundStats {
	return boundStats{
		handshake:         s.handshake.WithLabelValues(name),
		sslError:          s.sslError.WithLabelValues(name),
		sessionReused:     s.sessionReused.WithLabelValues(name),
		noChainMatch:      s.noChainMatch.WithLabelValues(name),
		cxOverflow:        s.cxOverflow.WithLabelValues(name),
		globalOverflow:    s.globalOverflow.WithLabelValues(name),
		overloadReject:    s.overloadReject.WithLabelValues(name),
		h2HeaderTimeout:   s.h2HeaderTimeout.WithLabelValues(name),
		streamIdleTimeout: s.streamIdleTimeout.WithLabelValues(name),
		h2Messaging:       s.h2Messaging.WithLabelValues(name),
		cxActive:          s.cxActive.WithLabelValues(name),
	}
}

// tcpSec is the security labels of a TCP proxy connection: mutual TLS
// with the peer's principal on an inbound TLS chain, else none (inbound)
// or unknown (outbound: the client side cannot know the server's policy).
func (d *Dataplane) tcpSec(ci *connInfo) *telemetry.SecLabels {
	if !ci.chain.http.Inbound {
		return d.metrics.UnknownSec()
	}
	if p := ci.ds.Conn.Peer; p != nil && ci.ds.Conn.TLS != nil {
		return d.metrics.InternSec(telemetry.SecLabels{Policy: telemetry.PolicyMutualTLS,
			SourcePrincipal: telemetry.OrUnknown(p.Principal), DestinationPrincipal: telemetry.OrUnknown(d.opts.Principal)})
	}
	return d.metrics.NoneSec()
}

// bytesHandler is the byte path's handler of a plaintext connection's
// requests (forward/bytepath.go); nil over TLS or when the byte path is
// off.
func (l *connListener) bytesHandler(ci *connInfo) h1server.BytesHandler {
	if !forward.BytePath || ci.tls != nil {
		return nil
	}
	return &bytesConn{bl: l.bl, ci: ci}
}

// bytesConn offers one connection's requests to the byte path, with the
// chain ServeHTTP would choose for them.
type bytesConn struct {
	bl *boundListener
	ci *connInfo
}

func (b *bytesConn) ServeBytes(ctx context.Context, head []byte, w *bufio.Writer) (h1server.BytesResult, http.Handler) {
	bl, ci := b.bl, b.ci
	rt, lc, draining := bl.state()
	if draining || (bl.d.opts.Overload != nil && bl.d.opts.Overload.DisableHTTPKeepalive()) {
		return h1server.BytesDeclined, nil // the general path asks the client to go
	}
	cc := lc.match(ci.dst, ci.sni, ci.transport, ci.apps)
	if cc == nil || cc.tls != nil || ci.chain.tls != nil || cc.tcp != nil {
		return h1server.BytesDeclined, nil
	}
	tab, clusters := cc.table(rt), rt.clusters
	switch res, rs := bl.d.fwd.ServeBytes(ctx, head, w, &cc.http, ci.ds, tab, clusters); res {
	case forward.BytesServed:
		return h1server.BytesServed, nil
	case forward.BytesAborted:
		return h1server.BytesAborted, nil
	case forward.BytesResumed:
		return h1server.BytesDeclined, &resumeHandler{fwd: bl.d.fwd, l: &cc.http, ds: ci.ds, tab: tab, clusters: clusters, rs: rs}
	}
	return h1server.BytesDeclined, nil
}

// resumeHandler serves a request the byte path handed over, with the
// configuration it was routed on.
type resumeHandler struct {
	fwd      *forward.Forwarder
	l        *forward.Listener
	ds       *forward.Downstream
	tab      *route.Table
	clusters map[string]*cluster.Cluster
	rs       *forward.Resumed
}

func (h *resumeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.fwd.Resume(w, r, h.l, h.ds, h.tab, h.clusters, h.rs)
}

// Abandon lets go of what the byte path's attempt holds when the
// request is not served after all (h1server.Abandoner).
func (h *resumeHandler) Abandon() { h.rs.Abandon() }
