package dataplane

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// drainTimeout bounds how long a removed listener waits for its in-flight
// requests before its connections are closed.
const drainTimeout = 30 * time.Second

// boundListener is one bound socket and the HTTP server on it. A listener
// whose configured address is unchanged keeps its boundListener across
// updates, so its connections and in-flight requests are untouched.
type boundListener struct {
	d    *Dataplane
	name string
	addr string // configured address
	ln   net.Listener
	srv  *http.Server
	// last is the runtime and config this listener was last part of; requests
	// use it only once the listener has been removed and is draining.
	last atomic.Pointer[listenerState]
}

type listenerState struct {
	rt *runtime
	lc *listenerConfig
}

// bind opens the socket for lc without serving yet, so a bind failure can
// abort an Apply before anything changes.
func (d *Dataplane) bind(lc *listenerConfig) (*boundListener, error) {
	ln, err := net.Listen("tcp", lc.addr)
	if err != nil {
		return nil, err
	}
	bl := &boundListener{d: d, name: lc.name, addr: lc.addr, ln: ln}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge, as Envoy's codec_type AUTO
	bl.srv = &http.Server{
		Handler:           bl,
		Protocols:         protocols,
		ReadHeaderTimeout: 60 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler().WithAttrs([]slog.Attr{slog.String("listener", lc.name)}), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return d.baseCtx },
	}
	return bl, nil
}

// serve runs the server until it is shut down. Called once per listener.
func (bl *boundListener) serve() {
	bl.d.wg.Add(1)
	go func() {
		defer bl.d.wg.Done()
		if err := bl.srv.Serve(bl.ln); err != nil && err != http.ErrServerClosed {
			bl.d.log.Error("listener stopped", "listener", bl.name, "addr", bl.addr, "err", err)
		}
	}()
}

// drain stops accepting and lets in-flight requests finish for at most
// drainTimeout (or until the data plane is closed), then closes connections.
func (bl *boundListener) drain() {
	bl.d.wg.Add(1)
	go func() {
		defer bl.d.wg.Done()
		ctx, cancel := context.WithTimeout(bl.d.drainCtx, drainTimeout)
		defer cancel()
		if err := bl.srv.Shutdown(ctx); err != nil {
			bl.srv.Close()
		}
		bl.d.log.Info("listener drained", "listener", bl.name, "addr", bl.addr)
	}()
}

// state returns the runtime and listener config a new request uses: the
// current runtime, or the last one the listener was part of if it has been
// removed.
func (bl *boundListener) state() (*runtime, *listenerConfig) {
	rt := bl.d.rt.Load()
	if lc := rt.listeners[bl.name]; lc != nil && lc.addr == bl.addr {
		return rt, lc
	}
	st := bl.last.Load()
	return st.rt, st.lc
}
