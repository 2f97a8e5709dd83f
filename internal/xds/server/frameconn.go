package server

import (
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
)

// ADS connections are written without gRPC's write buffer.
//
// gRPC-Go's connection writer borrows a write buffer from a pool shared
// by all connections for each batch of frames and gives it back when it
// flushes, but it yields (runtime.Gosched) before flushing a batch
// smaller than 1,000 bytes so more frames can join it. When thousands of
// proxies ping at once — they do 10 s after every mesh-wide push, since
// the push reset every proxy's keepalive timer — every writer acking a
// ping holds a buffer across its yield: at 2,000 proxies ~1,400 buffers
// of 16 KiB were out at once, and the pool (a sync.Pool) kept them until
// the collector had run twice, 28 MB of a 127 MB live heap
// (docs/benchmarks.md, "Ping acks without write buffers").
//
// With the buffer off, gRPC writes each frame straight to the
// connection: a frame written by x/net's framer in one Write, a DATA
// frame as its 9-byte header and then its payload's pieces. Alone that
// would send every DATA frame's header in a packet and a system call of
// its own (TCP_NODELAY is on), or over TLS in a record of its own, so a
// frameWriter follows the frame boundaries of what it is given: a write
// that leaves a frame unfinished and is small is copied into a 64-byte
// array, and the next write sends it together with what it carries — in
// one writev in plaintext (frameConn), in one TLS write through a
// scratch buffer taken for that write only (tlsFrameConn); a full DATA
// frame is 9 bytes more than a TLS record holds, and its two records go
// out in one system call (recordConn.gathered). Nothing is held between
// frames, so a quiet connection holds no buffer at all.
//
// gRPC's reader takes its read buffers from a pool, and only when there
// is something to read, for connections it recognises (*net.TCPConn and
// a few other concrete types, or a type with its ReadOnReady method);
// any other connection, a TLS one included, gets a bufio.Reader of its
// own for its life (tlsReadBufferSize). It also sets the keepalive
// timeout as TCP_USER_TIMEOUT only on a *net.TCPConn. frameConn has
// ReadOnReady, and connListener sets the timeout.

// pendingMax is the most bytes frameConn holds back: DATA frame headers
// (9) and gRPC message prefixes (5), with room to spare.
const pendingMax = 64

// connListener gives gRPC each accepted TCP connection wrapped
// (frameConn in plaintext, recordConn under TLS), with the keepalive
// timeout set as TCP_USER_TIMEOUT, which gRPC sets only on a bare
// *net.TCPConn. Other connections go to gRPC as they are.
type connListener struct {
	net.Listener
	userTimeout time.Duration // 0: none
	wrap        func(*net.TCPConn) net.Conn
}

func (l connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	setUserTimeout(tc, l.userTimeout)
	return l.wrap(tc), nil
}

// frameCreds are a TLS endpoint's credentials whose handshakes return
// tlsFrameConns.
type frameCreds struct {
	credentials.TransportCredentials
}

func (c frameCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	rc, _ := raw.(*recordConn)
	return newTLSFrameConn(conn, rc), info, nil
}

func (c frameCreds) Clone() credentials.TransportCredentials {
	return frameCreds{c.TransportCredentials.Clone()}
}

// frameWriter holds back a frame's small leading writes until the write
// that continues them; send writes what is held and what follows.
// Writes come from gRPC's one writer goroutine per connection; mu only
// keeps a stray concurrent write from corrupting the frame tracking.
type frameWriter struct {
	mu      sync.Mutex
	pending [pendingMax]byte
	npend   int
	hdr     [9]byte // the current frame's header, as far as written
	nhdr    int     // -1 while in the frame's payload
	left    int     // payload bytes of the current frame not yet written
	send    func(held, b []byte) (int, error)
}

// advance follows the frames through b and reports whether b ends at a
// frame boundary.
func (w *frameWriter) advance(b []byte) bool {
	for len(b) > 0 {
		if w.left == 0 {
			n := copy(w.hdr[w.nhdr:], b)
			w.nhdr += n
			b = b[n:]
			if w.nhdr == len(w.hdr) {
				w.left = int(w.hdr[0])<<16 | int(w.hdr[1])<<8 | int(w.hdr[2])
				w.nhdr = 0
				if w.left > 0 {
					w.nhdr = -1
				}
			}
			continue
		}
		n := min(w.left, len(b))
		w.left -= n
		b = b[n:]
		if w.left == 0 {
			w.nhdr = 0
		}
	}
	return w.nhdr == 0
}

// Write sends b, or holds it back while it is a small part of a frame
// that the next write continues. It returns how much of b was written.
func (w *frameWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.advance(b) && w.npend+len(b) <= len(w.pending) {
		w.npend += copy(w.pending[w.npend:], b)
		return len(b), nil
	}
	held := w.pending[:w.npend]
	w.npend = 0
	return w.send(held, b)
}

// frameConn is a plaintext server-side HTTP/2 connection written through
// a frameWriter: what it holds goes out with the next write in one
// writev.
type frameConn struct {
	*net.TCPConn
	frameWriter
	raw  syscall.RawConn
	vec  [2][]byte
	bufs net.Buffers

	// read side: ReadOnReady's state, kept here so a read allocates nothing.
	rbuf   *[]byte
	rn     int
	rerr   error
	rsize  int
	rpool  mem.BufferPool
	doRead func(fd uintptr) bool
}

func newFrameConn(tc *net.TCPConn) net.Conn {
	raw, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	c := &frameConn{TCPConn: tc, raw: raw}
	c.send = c.writev
	c.doRead = c.readReady
	return c
}

// Write is the frameWriter's (TCPConn's is what it sends with).
func (c *frameConn) Write(b []byte) (int, error) { return c.frameWriter.Write(b) }

func (c *frameConn) writev(held, b []byte) (int, error) {
	if len(held) == 0 {
		return c.TCPConn.Write(b)
	}
	c.vec = [2][]byte{held, b}
	c.bufs = c.vec[:]
	n, err := c.bufs.WriteTo(c.TCPConn)
	c.vec = [2][]byte{}
	return max(0, int(n)-len(held)), err
}

// tlsFrameConn is a TLS server-side HTTP/2 connection (the connection
// the handshake returned) written through a frameWriter: a TLS record
// cannot be written in pieces, so what it holds and the write that
// continues it are copied into a scratch buffer, taken for that one
// write only, and written to the TLS connection at once.
type tlsFrameConn struct {
	net.Conn
	frameWriter
	records *recordConn // the TCP connection under Conn; nil if it is not one
}

func newTLSFrameConn(c net.Conn, records *recordConn) net.Conn {
	t := &tlsFrameConn{Conn: c, records: records}
	t.send = t.writeJoined
	return t
}

// Write is the frameWriter's.
func (c *tlsFrameConn) Write(b []byte) (int, error) { return c.frameWriter.Write(b) }

// scratchMax is the largest write joined in a scratch buffer: a full
// DATA frame's payload (HTTP/2's default maximum frame size) and what is
// held before it. A larger write is sent after what is held, apart.
const scratchMax = 16<<10 + pendingMax

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, scratchMax); return &b }}

// maxRecordPlaintext is the most a TLS record carries (RFC 8446 §5.1).
const maxRecordPlaintext = 16 << 10

// writeJoined writes held and b as one TLS write. A full DATA frame is
// its 9-byte header and 16 KiB of payload, 9 bytes more than a record
// holds, so crypto/tls writes it as two records, each with a system
// call of its own: the records of a write that needs two are gathered
// and sent in one (recordConn.gathered).
func (c *tlsFrameConn) writeJoined(held, b []byte) (int, error) {
	if c.records != nil && len(held)+len(b) > maxRecordPlaintext && len(held)+len(b) <= scratchMax {
		return c.records.gathered(func() (int, error) { return c.writeJoinedNow(held, b) })
	}
	return c.writeJoinedNow(held, b)
}

func (c *tlsFrameConn) writeJoinedNow(held, b []byte) (int, error) {
	if len(held) == 0 {
		return c.Conn.Write(b)
	}
	if len(held)+len(b) > scratchMax {
		if _, err := c.Conn.Write(held); err != nil {
			return 0, err
		}
		return c.Conn.Write(b)
	}
	sp := scratchPool.Get().(*[]byte)
	buf := append(append((*sp)[:0], held...), b...)
	n, err := c.Conn.Write(buf)
	*sp = buf[:0]
	scratchPool.Put(sp)
	return max(0, n-len(held)), err
}

// ReadOnReady is the optional read interface of gRPC-Go's transport
// (internal/transport/readyreader): it waits until the connection is
// readable and only then takes a buffer from pool and reads into it, so
// an idle connection holds no read buffer. It does what gRPC does for a
// *net.TCPConn itself.
func (c *frameConn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	c.rsize, c.rpool = bufSize, pool
	err := c.raw.Read(c.doRead)
	buf, n, rerr := c.rbuf, c.rn, c.rerr
	c.rbuf, c.rn, c.rerr, c.rpool = nil, 0, nil, nil
	switch {
	case err != nil:
		if buf != nil {
			pool.Put(buf)
		}
		return nil, 0, err
	case rerr != nil:
		return nil, 0, rerr // the buffer went back in readReady
	case n == 0:
		pool.Put(buf)
		return nil, 0, io.EOF
	}
	return buf, n, nil
}

// readReady reads once the descriptor is readable; it returns false
// (wait for readiness) when the read would block.
func (c *frameConn) readReady(fd uintptr) bool {
	c.rbuf = c.rpool.Get(c.rsize)
	// syscall, not x/sys/unix, as net does: the race detector's view of
	// the two differs (gRPC does the same).
	c.rn, c.rerr = syscall.Read(int(fd), *c.rbuf)
	if c.rerr != nil {
		c.rpool.Put(c.rbuf)
		c.rbuf, c.rn = nil, 0
	}
	return c.rerr != syscall.EAGAIN && c.rerr != syscall.EWOULDBLOCK
}

// recordConn is the TCP connection under a TLS one: each Read returns at
// most the rest of the current TLS record (its 5-byte header first,
// then its body). crypto/tls reads records into a buffer that it grows
// to hold whatever one read brings and never shrinks; when a proxy sent
// a burst of records — a subscription to 3,000 clusters by name is
// ~180 KB — that buffer kept ~40 KB per connection for the connection's
// life (81 MB at 2,000 proxies). Read record by record, it holds one
// record: at most what the peer puts in a record, 4 KiB from weft-proxy
// (whose write buffer for the control plane is that size). It costs a
// second read per record, and the control plane reads little.
//
// On the write side it can gather the records crypto/tls writes for one
// write and send them in one system call (gathered).
type recordConn struct {
	*net.TCPConn
	hdr  [5]byte
	nhdr int
	left int // body bytes of the current record not yet read

	wmu    sync.Mutex // orders writes: a gathered write and any other
	gather *[]byte    // while gathered runs: the records written so far
	out    io.Writer  // where records go; the TCP connection (tests may change it)
}

func newRecordConn(tc *net.TCPConn) net.Conn { return &recordConn{TCPConn: tc, out: tc} }

// gatherMax is a gathered write's buffer: the two records of a joined
// write of up to scratchMax bytes, with their headers and AEAD overhead.
const gatherMax = scratchMax + 256

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, gatherMax); return &b }}

// Write writes a record, or while a gathered write runs adds it to that
// write's records. crypto/tls writes one record per call, under its own
// lock, so the records are gathered in the order they are numbered; one
// written from another goroutine meanwhile (a close_notify, a key update)
// joins them in its place.
func (c *recordConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.gather != nil {
		*c.gather = append(*c.gather, b...)
		return len(b), nil
	}
	return c.out.Write(b)
}

// gathered runs write, a write to the TLS connection over c, gathering
// the records it writes, and sends them in one write. A failure to send
// them is write's failure: nothing of it may count as written.
func (c *recordConn) gathered(write func() (int, error)) (int, error) {
	bp := gatherPool.Get().(*[]byte)
	c.wmu.Lock()
	c.gather = bp
	c.wmu.Unlock()
	n, err := write()
	c.wmu.Lock()
	c.gather = nil
	if len(*bp) > 0 {
		if _, werr := c.out.Write(*bp); werr != nil {
			n, err = 0, werr
		}
	}
	c.wmu.Unlock()
	*bp = (*bp)[:0]
	gatherPool.Put(bp)
	return n, err
}

func (c *recordConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		// At a record's header: read no further than its end.
		n, err := c.TCPConn.Read(p[:min(len(p), len(c.hdr)-c.nhdr)])
		copy(c.hdr[c.nhdr:], p[:n])
		c.nhdr += n
		if c.nhdr == len(c.hdr) {
			c.nhdr, c.left = 0, int(c.hdr[3])<<8|int(c.hdr[4])
		}
		return n, err
	}
	n, err := c.TCPConn.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

func setUserTimeout(tc *net.TCPConn, d time.Duration) {
	if d <= 0 {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	ms := int(d / time.Millisecond)
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
}
