package forward

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/upstream"
)

// HTTP/1.1 upgrades (WebSocket), as Envoy's connection manager and router
// carry them: an Upgrade request whose type the connection manager's
// upgrade_configs (or the route's, which override them) enable is routed,
// filtered and admitted like any request, then sent to one endpoint on a
// connection of its own. A 101 answer turns both connections into a
// tunnel that copies bytes both ways until both sides have closed (or
// the stream idle timeout, or the listener closing, ends it); any other
// answer is an ordinary response. The route timeout bounds only the wait
// for the upgrade's answer. An upgrade that is not enabled gets a local
// 403 (response code details upgrade_failed).
//
// A request with an Upgrade header that does not switch protocols ends
// its connection (Connection: close): the client may already have sent
// bytes of the new protocol, and the connection's framing check stopped
// at the request (h1server). Upgrade: h2c is not an upgrade here: the
// header is dropped and the request served as any other, as Envoy's
// HTTP/1.1 codec does.

// detailsUpgradeFailed is Envoy's response code details of a refused
// upgrade.
const detailsUpgradeFailed = "upgrade_failed"

// switchesProtocols reports whether r asks to switch to a protocol other
// than h2c: whatever the answer, its connection cannot go on as
// HTTP/1.1 unless the proxy knows the switch did not happen.
func switchesProtocols(r *http.Request) bool {
	up := r.Header["Upgrade"]
	if r.ProtoMajor != 1 || len(up) == 0 {
		return false
	}
	for _, v := range up {
		if !strings.EqualFold(textproto.TrimString(v), "h2c") {
			return true
		}
	}
	return false
}

// upgradeType is the protocol r asks to switch to, lower case, or "" when
// r is not an upgrade: an HTTP/1.1 request with an Upgrade header (other
// than h2c) and the upgrade token in Connection, as Envoy's
// Utility::isUpgrade.
func upgradeType(r *http.Request) string {
	if !switchesProtocols(r) || !r.ProtoAtLeast(1, 1) {
		return ""
	}
	for _, v := range r.Header["Connection"] {
		if httpTokenListContains(v, "upgrade") {
			return strings.ToLower(textproto.TrimString(r.Header["Upgrade"][0]))
		}
	}
	return ""
}

// upgradeEnabled reports whether a request routed to re (nil: no route)
// may switch to typ: the route's upgrade_configs decide when they name
// typ, else the connection manager's.
func (l *Listener) upgradeEnabled(re *route.Entry, typ string) bool {
	if re != nil {
		if on, ok := re.Upgrades[typ]; ok {
			return on
		}
	}
	return l.Upgrades[typ]
}

// streamIdleTimeout is the idle timeout of an upgraded stream on route re:
// the route's idle_timeout, else the connection manager's
// stream_idle_timeout (0: none).
func (l *Listener) streamIdleTimeout(re *route.Entry) time.Duration {
	if re.IdleTimeout != nil {
		return *re.IdleTimeout
	}
	return l.StreamIdleTimeout
}

// upgradeHeaders adds to out, the upstream request, the headers of the
// upgrade r asks for, which copyRequestHeaders drops as hop-by-hop.
func upgradeHeaders(out, r http.Header) {
	out["Connection"] = connectionUpgrade
	out["Upgrade"] = r["Upgrade"]
}

var connectionUpgrade = []string{"Upgrade"} // shared, never modified

// attemptUpgrade sends the upgrade request out to ep on a connection of
// its own; ctx (the route's timeout) bounds the wait for the answer only.
func attemptUpgrade(ctx context.Context, r *http.Request, re *route.Entry, out *http.Request, c *cluster.Cluster, ep *cluster.Endpoint) attemptResult {
	resp, st, err := c.Upstream().Upgrade(ctx, ep.Conns(), out)
	if err != nil {
		return attemptResult{err: err, out: classify(err, false), cancel: noCancel}
	}
	return attemptResult{resp: resp, stream: st, out: outcomeResponse, cancel: noCancel}
}

// tunnel answers the downstream with the upstream's 101 head and copies
// bytes both ways until both sides have closed, the stream has been idle
// for idle (0: no limit), or ctx ends (the listener closes). It returns
// when both connections are closed and its goroutine has ended.
func (f *Forwarder) tunnel(ctx context.Context, w http.ResponseWriter, q *request, resp *http.Response, up *upstream.Stream, idle time.Duration) {
	defer up.Close()
	h := w.Header()
	delete(h, "Connection")
	copyResponseHeaders(h, resp.Header)
	h["Connection"] = connectionUpgrade
	if v := resp.Header["Upgrade"]; v != nil {
		h["Upgrade"] = v
	}
	q.code = http.StatusSwitchingProtocols
	if q.logging {
		q.alog.viaUpstream = true
	}
	dc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not an HTTP/1.1 connection (Serve checked the protocol): cannot happen
		// on a listener, only for callers of Serve with their own writer.
		f.log.Debug("upgrade: downstream connection cannot be taken over", "err", err)
		q.flags = "UC"
		panic(http.ErrAbortHandler)
	}
	defer dc.Close()
	dc.SetDeadline(time.Time{}) // net/http's header deadlines are not the tunnel's
	bw := brw.Writer
	bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	h.Write(bw)
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		q.flags = "DC"
		return
	}

	t := &tunnelState{closeAll: func() { dc.Close(); up.Close() }}
	t.touch()
	if idle > 0 {
		t.mu.Lock()
		t.timer = time.AfterFunc(idle, func() { t.checkIdle(idle) })
		t.mu.Unlock()
		defer t.stopTimer()
	}
	stop := context.AfterFunc(ctx, t.abort)
	defer stop()

	down := &bufferedConn{Conn: dc, br: brw.Reader}
	var wg sync.WaitGroup
	var sent int64
	wg.Go(func() { sent = t.copy(dc, up) }) // upstream → downstream
	received := t.copy(up, down)            // downstream → upstream
	wg.Wait()
	q.rspBody += sent
	q.tunnelIn = received
	switch {
	case t.idled.Load():
		q.flags = "SI" // Envoy's stream idle timeout flag
	case ctx.Err() != nil:
		q.flags = "DC" // the listener closed under the tunnel
	}
}

// tunnelState is what the two copies of a tunnel share.
type tunnelState struct {
	last     atomic.Int64 // unix nanoseconds of the last bytes moved
	idled    atomic.Bool
	closeAll func()
	once     sync.Once

	mu      sync.Mutex
	timer   *time.Timer // the idle check; nil: no idle timeout
	stopped bool        // the tunnel is over: the check must not rearm
}

func (t *tunnelState) touch() { t.last.Store(time.Now().UnixNano()) }

// abort closes both connections: both copies end.
func (t *tunnelState) abort() { t.once.Do(t.closeAll) }

// checkIdle runs on the timer: it aborts the tunnel if nothing moved for
// idle, else rearms for the rest.
func (t *tunnelState) checkIdle(idle time.Duration) {
	since := time.Since(time.Unix(0, t.last.Load()))
	if since >= idle {
		t.idled.Store(true)
		t.abort()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.timer.Reset(idle - since)
	}
}

// stopTimer ends the idle checks.
func (t *tunnelState) stopTimer() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	t.timer.Stop()
}

// copy copies src to dst until src ends, then half-closes dst so the far
// side sees the end too; an error on either side aborts the tunnel. It
// returns the bytes copied.
func (t *tunnelState) copy(dst net.Conn, src io.Reader) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			t.touch()
			if _, werr := dst.Write(buf[:k]); werr != nil {
				t.abort()
				return n
			}
			n += int64(k)
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				t.abort()
				return n
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
				t.abort() // the end cannot be passed on alone
			}
			return n
		}
	}
}

// bufferedConn is a hijacked connection whose reads return first what
// net/http had buffered past the request head.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}
