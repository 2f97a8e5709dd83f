package dataplane

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"weft.dev/weft/internal/proxy/forward"
	"weft.dev/weft/internal/proxy/h1server"
	"weft.dev/weft/internal/proxy/h2server"
)

// DefaultListenerDrain is how long a listener removed by an update keeps
// serving when Options.ListenerDrain is zero. It must outlast the time the
// control plane takes to tell every client that the listener's workload is
// gone (debounce, at most 1 s by default, plus the push to every proxy).
// Envoy's --drain-time-s defaults to 600 s and Istio runs Envoy with 45 s
// (drainDuration), but Envoy stops accepting on a removed listener at once
// and only drains the connections it has. Weft keeps accepting while it
// drains — clients that have not heard of the change yet still connect —
// so a few seconds do the job.
const DefaultListenerDrain = 5 * time.Second

// drainTimeout bounds how long a removed listener waits for its in-flight
// requests once its drain period is over, before its connections are
// closed.
const drainTimeout = 30 * time.Second

// boundListener is one bound socket and the HTTP server on it. A listener
// whose configured address is unchanged keeps its boundListener across
// updates, so its connections and in-flight requests are untouched.
type boundListener struct {
	d    *Dataplane
	name string
	addr string       // configured address
	ln   net.Listener // the socket
	cl   *connListener
	// srv runs the accept loop's shutdown (it serves cl) and, with
	// WEFT_HTTP2_SERVER=go, the HTTP/2 connections set up (serve.go).
	srv *http.Server
	h1  *h1server.Server // serves the HTTP/1.1 connections set up, each on its setup goroutine
	h2  *h2server.Server // serves the HTTP/2 connections set up, each on its setup goroutine; nil with WEFT_HTTP2_SERVER=go
	// streamIdle is stream_idle_timeout for the HTTP/2 streams the
	// server serves (streamidle.go); 0: none. Set when bound, as the
	// server's other limits.
	streamIdle time.Duration
	stats      boundStats
	// active counts the connections accepted and not yet closed, for
	// Options.MaxConnectionsPerListener.
	active atomic.Int64
	// last is the runtime and config this listener was last part of; requests
	// use it only once the listener has been removed and is draining.
	last atomic.Pointer[listenerState]
	// drain is the drain in progress while the listener is out of the
	// configuration, nil while it is in it. Guarded by d.mu.
	drain *listenerDrain
}

type listenerState struct {
	rt *runtime
	lc *listenerConfig
}

// listenerDrain is one drain of a removed listener: it keeps accepting and
// serving on its last runtime, asking clients to go (Connection: close,
// GOAWAY), until its grace period ends, the data plane closes, or an update
// ends it early. Its fields are guarded by d.mu.
type listenerDrain struct {
	end       chan struct{} // closed to end the grace period early
	ended     bool          // end is closed
	reclaimed bool          // the listener is back in the configuration: the drain is void
}

// bind opens the socket for lc without serving yet, so a bind failure can
// abort an Apply before anything changes.
func (d *Dataplane) bind(lc *listenerConfig) (*boundListener, error) {
	ln, err := net.Listen("tcp", lc.addr)
	if err != nil {
		return nil, err
	}
	bl := &boundListener{d: d, name: lc.name, addr: lc.addr, ln: ln, stats: d.listenerStats.forListener(lc.name), streamIdle: lc.server.streamIdle}
	bl.cl = newConnListener(bl)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge, as Envoy's codec_type AUTO
	protocols.SetHTTP2(true)            // HTTP/2 over TLS, by ALPN
	// The server's limits are the listener's when it is bound (hcm.go);
	// an update keeps the server, so they change when the listener is
	// bound again. Each chain's header limits are enforced per request
	// whatever the update (forward.Limits).
	sl := lc.server
	idle := sl.idleTimeout
	if idle == 0 {
		idle = -1 // none; net/http's 0 would mean ReadTimeout's
	}
	bl.srv = &http.Server{
		Handler:           bl,
		Protocols:         protocols,
		ReadHeaderTimeout: sl.headersTimeout,
		IdleTimeout:       idle,
		// net/http answers 431 itself past MaxHeaderBytes+4 KiB of request
		// line and headers; the request path checks the exact limit.
		MaxHeaderBytes: sl.maxHeaderBytes,
		HTTP2:          &http.HTTP2Config{MaxConcurrentStreams: int(sl.maxStreams), MaxReadFrameSize: maxFrameSize},
		// (This server serves HTTP/2 only: HTTP/1.1 is bl.h1's.) Every
		// HTTP/2 stream starts with a write deadline, set by the
		// HTTP/2 server as it opens the stream; the idle watch pushes it
		// on while the stream moves (streamidle.go).
		WriteTimeout: streamWriteTimeout(sl.streamIdle),
		ErrorLog:     slog.NewLogLogger(d.log.Handler().WithAttrs([]slog.Attr{slog.String("listener", lc.name)}), slog.LevelDebug),
		BaseContext:  func(net.Listener) context.Context { return d.baseCtx },
		ConnContext:  connContext,
	}
	bl.h1 = &h1server.Server{
		Handler:           bl,
		ReadHeaderTimeout: sl.headersTimeout,
		IdleTimeout:       sl.idleTimeout,
		// Past MaxHeaderBytes+4 KiB of request line and headers the
		// server answers 431 itself, as net/http; the request path
		// checks the exact limit.
		MaxHeaderBytes: sl.maxHeaderBytes,
		Log:            d.log.With("listener", lc.name),
	}
	if !goHTTP2 {
		stats := bl.stats
		log := d.log.With("listener", lc.name)
		bl.h2 = &h2server.Server{
			Handler:              bl,
			MaxConcurrentStreams: sl.maxStreams,
			MaxHeaderBytes:       sl.maxHeaderBytes,
			IdleTimeout:          sl.idleTimeout,
			// stream_idle_timeout: the server's own sweep, one timer per
			// connection (the idle watch of streamidle.go is for Go's
			// server).
			StreamIdleTimeout: sl.streamIdle,
			OnStreamIdle:      func(string, string) { stats.streamIdleTimeout.Inc() },
			// Envoy's request_headers_timeout, for HTTP/2's header
			// blocks; counted as the h2guard counts it with Go's server.
			HeaderTimeout:   sl.headersTimeout,
			OnHeaderTimeout: func(string) { stats.h2HeaderTimeout.Inc() },
			// Every malformed request, as Envoy's http2.rx_messaging_error.
			OnMalformed: func(string, string) { stats.h2Messaging.Inc() },
			Log:         log,
		}
	}
	return bl, nil
}

// goHTTP2: WEFT_HTTP2_SERVER=go serves HTTP/2 with Go's own server, as
// Weft did before h2server; a way back while h2server is new.
var goHTTP2 = os.Getenv("WEFT_HTTP2_SERVER") == "go"

// shutdown stops bl's servers as http.Server.Shutdown: idle connections
// close now, busy ones after their request; it returns ctx.Err() when
// ctx ends first.
func (bl *boundListener) shutdown(ctx context.Context) error {
	var h1err, h2err error
	var wg sync.WaitGroup
	wg.Go(func() { h1err = bl.h1.Shutdown(ctx) })
	if bl.h2 != nil {
		wg.Go(func() { h2err = bl.h2.Shutdown(ctx) })
	}
	err := bl.srv.Shutdown(ctx)
	wg.Wait()
	return cmp.Or(err, h1err, h2err)
}

// closeNow closes bl's servers and every connection they hold.
func (bl *boundListener) closeNow() {
	bl.srv.Close()
	bl.h1.Close()
	if bl.h2 != nil {
		bl.h2.Close()
	}
}

// serve accepts and serves until the server is shut down. Called once per
// listener, with d.mu held.
func (bl *boundListener) serve() {
	bl.d.wg.Add(2)
	go bl.cl.acceptLoop()
	go func() {
		defer bl.d.wg.Done()
		// net.ErrClosed: a drain closed the socket before shutting the server down.
		if err := bl.srv.Serve(bl.cl); err != nil && err != http.ErrServerClosed && !errors.Is(err, net.ErrClosed) {
			bl.d.log.Error("listener stopped", "listener", bl.name, "addr", bl.addr, "err", err)
		}
		bl.cl.Close() // also when the server was shut down before it served
	}()
}

// startDrain begins draining a listener that an update removed: for the
// data plane's drain period it keeps accepting and serving requests on the
// runtime it was last part of, each response asking the client to go
// elsewhere (ServeHTTP). Then it stops accepting, lets in-flight requests
// finish for at most drainTimeout (or until the data plane is closed) and
// closes its connections. An update that adds the listener back before the
// end takes it over (reclaim). The caller holds d.mu.
func (bl *boundListener) startDrain() {
	d := bl.d
	dr := &listenerDrain{end: make(chan struct{})}
	bl.drain = dr
	d.draining[bl] = struct{}{}
	d.drainingCount.Store(int64(len(d.draining)))
	d.log.Info("listener draining", "listener", bl.name, "addr", bl.addr, "drain", d.listenerDrain)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		grace := time.NewTimer(d.listenerDrain)
		defer grace.Stop()
		select {
		case <-grace.C:
		case <-dr.end:
		case <-d.graceCtx.Done(): // Close
		}
		d.mu.Lock()
		if dr.reclaimed {
			d.mu.Unlock()
			return
		}
		d.stopDraining(bl, dr)
		d.mu.Unlock()

		ctx, cancel := context.WithTimeout(d.drainCtx, drainTimeout)
		defer cancel()
		if err := bl.shutdown(ctx); err != nil {
			bl.closeNow()
		}
		d.log.Info("listener drained", "listener", bl.name, "addr", bl.addr)
	}()
}

// stopDraining ends dr, the drain of bl: bl leaves the draining set and its
// socket is closed at once, so the address is free for a new listener
// before d.mu is released; connections already accepted are still served
// until the drain goroutine shuts the server down. The caller holds d.mu.
func (d *Dataplane) stopDraining(bl *boundListener, dr *listenerDrain) {
	if _, ok := d.draining[bl]; !ok {
		return
	}
	delete(d.draining, bl)
	d.drainingCount.Store(int64(len(d.draining)))
	bl.drain = nil
	bl.cl.Close()
	if !dr.ended {
		dr.ended = true
		close(dr.end)
	}
}

// reclaimable returns the draining listener an update may take back for a
// listener named name at the configured address addr, or nil. The caller
// holds d.mu.
func (d *Dataplane) reclaimable(name, addr string) *boundListener {
	for bl := range d.draining {
		if bl.name == name && bl.addr == addr {
			return bl
		}
	}
	return nil
}

// reclaim puts a draining listener back into service: its socket, its
// connections and the requests in flight on them carry on, now on the
// current runtime. The caller holds d.mu and has stored the new runtime.
func (d *Dataplane) reclaim(bl *boundListener) {
	dr := bl.drain
	delete(d.draining, bl)
	d.drainingCount.Store(int64(len(d.draining)))
	bl.drain = nil
	dr.reclaimed = true
	if !dr.ended {
		dr.ended = true
		close(dr.end)
	}
	d.log.Info("listener back in the configuration while draining; it keeps its socket", "listener", bl.name, "addr", bl.addr)
}

// bindOverDrains binds lc like bind. If the address is taken by a
// listener that is draining under another name or an overlapping address
// (0.0.0.0:80 and 10.0.0.1:80), the new listener wins: those drains end
// now (their sockets close; accepted connections still finish) and the
// bind is tried again. The caller holds d.mu.
func (d *Dataplane) bindOverDrains(lc *listenerConfig) (*boundListener, error) {
	bl, err := d.bind(lc)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return bl, err
	}
	cut := false
	for dl := range d.draining {
		if addrsOverlap(dl.ln.Addr(), lc.addr) {
			d.log.Info("listener drain cut short: a new listener needs its address", "listener", dl.name, "addr", dl.addr, "new_listener", lc.name)
			d.stopDraining(dl, dl.drain)
			cut = true
		}
	}
	if !cut {
		return nil, err
	}
	return d.bind(lc)
}

// addrsOverlap reports whether a bound socket and a configured address
// want the same port on the same, or a wildcard, IP.
func addrsOverlap(bound net.Addr, configured string) bool {
	ta, ok := bound.(*net.TCPAddr)
	if !ok {
		return false
	}
	host, port, err := net.SplitHostPort(configured)
	if err != nil || port != strconv.Itoa(ta.Port) {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || ip.IsUnspecified() || ta.IP.IsUnspecified() || ip.Equal(ta.IP)
}

var connectionClose = []string{"close"} // shared, never modified

// ServeHTTP handles one downstream request on the runtime current when it
// started (or, once the listener is removed, the one it was last part
// of), with the filter chain the listener now has for the request's
// connection. Called concurrently by the listener's http.Server.
func (bl *boundListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, lc, draining := bl.state()
	ci := connOf(r)
	var cc *chainConfig
	var ds *forward.Downstream
	if ci == nil {
		cc = lc.match(netip.AddrPort{}, "", transportRaw, nil)
	} else {
		if r.TLS == nil && ci.tls != nil {
			r.TLS = ci.tls
		}
		cc, ds = lc.match(ci.dst, ci.sni, ci.transport, ci.apps), ci.ds
		if cc == nil || (cc.tls != nil) != (ci.chain.tls != nil) || cc.tcp != nil {
			// The update took away this connection's kind of chain (a
			// port that turned STRICT still has plaintext connections):
			// finish on the chain it was accepted on, as Envoy drains the
			// connections of a removed filter chain, and ask the client
			// to reconnect.
			cc, draining = ci.chain, true
		}
	}
	if cc == nil || cc.tcp != nil {
		// Not accepted by a bound listener, and no plaintext HTTP chain.
		w.Header()["Connection"] = connectionClose
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if draining || (bl.d.opts.Overload != nil && bl.d.opts.Overload.DisableHTTPKeepalive()) {
		// The listener was removed and drains, or the proxy is short of
		// memory (Envoy's disable_http_keepalive): ask the client to take
		// its next request elsewhere. HTTP/1.1 closes the connection
		// after this response; the HTTP/2 server turns the header into a
		// GOAWAY and closes once the connection is idle.
		w.Header()["Connection"] = connectionClose
	}
	if r.ProtoMajor == 2 && bl.streamIdle > 0 && bl.h2 == nil { // h2server watches its streams itself
		var iw *idleWatch
		w, r, iw = bl.watchIdle(w, r)
		defer iw.stop()
	}
	bl.d.fwd.Serve(w, r, &cc.http, ds, cc.table(rt), rt.clusters)
}

// state returns the runtime and listener config a new request uses: the
// current runtime, or the last one the listener was part of if it has been
// removed, in which case draining is true.
func (bl *boundListener) state() (rt *runtime, lc *listenerConfig, draining bool) {
	rt = bl.d.rt.Load()
	if lc := rt.listeners[bl.name]; lc != nil && lc.addr == bl.addr {
		return rt, lc, false
	}
	st := bl.last.Load()
	return st.rt, st.lc, true
}
