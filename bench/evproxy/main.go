//go:build linux

// Command evproxy is an experiment, not a product: an HTTP/1.1 reverse
// proxy written in Go the way nginx is written. One OS thread waits on
// epoll itself (edge-triggered) and runs every connection's state machine
// when the kernel says a socket is ready — no goroutine per connection, no
// Go netpoller between the socket and the code, reads only when epoll has
// said there is something and never again after a short read (nginx's
// rule, unless epoll reported the peer's FIN with the data), raw system
// calls for reads and writes.
//
// It answers one question for issue 12 (docs/benchmarks.md, "Where the
// CPU goes"): how much of the CPU a request costs Weft above nginx is Go's
// I/O model — a goroutine per connection parked on the runtime's poller —
// and how much is the code a request runs. (The answer, 2026-12-07: the
// code; in Weft's own model this proxy costs what nginx does.) bench/ab.sh
// runs it beside weft-proxy and nginx (CMD_A/CMD_B), bench/throughput.sh
// on one core.
//
//	go run ./bench/evproxy -listen 127.0.0.1:8080 -upstream 127.0.0.1:8081
//
// It does what a reverse proxy must and no more: it parses the request and
// response heads into lines, drops hop-by-hop headers, rebuilds both heads,
// forwards Content-Length bodies, and keeps one upstream keep-alive
// connection per client connection (nginx's keepalive pool, simplified).
// No chunked bodies, TLS, timeouts, pipelining beyond one request at a
// time, or routing (but see -work, work.go). -model chooses how it waits: "netpoll" (the epoll
// descriptor parked on Go's own poller, so the runtime's scheduler does
// the sleeping), "epoll" (a blocking epoll_wait, as nginx), or
// "goroutines" — the same parsing and forwarding written as Weft's data
// path is, a goroutine per client connection blocked in reads and writes
// through internal/proxy/sockio, to tell the I/O model's cost from the
// amount of code.
package main

import (
	"bytes"
	"errors"
	"flag"
	"log"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	up := flag.String("upstream", "", "upstream ip:port (required)")
	model := flag.String("model", "netpoll", `"netpoll": one loop, asleep on Go's poller; "epoll": one loop, asleep in epoll_wait; "goroutines": a goroutine per connection, as Weft`)
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: Go's default, the CPUs it may run on)")
	flag.BoolVar(&doWork, "work", false, "with -model goroutines: route by Host, add a request id, record metrics (work.go)")
	flag.Parse()
	switch {
	case *model != "netpoll" && *model != "epoll" && *model != "goroutines":
		log.Fatalf(`evproxy: -model %q: "netpoll", "epoll" or "goroutines"`, *model)
	case doWork && *model != "goroutines":
		log.Fatalf("evproxy: -work is only in -model goroutines, not %q", *model)
	}
	la, err := netip.ParseAddrPort(*listen)
	if err != nil {
		log.Fatalf("evproxy: -listen: %v", err)
	}
	ua, err := netip.ParseAddrPort(*up)
	if err != nil {
		log.Fatalf("evproxy: -upstream: %v", err)
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if *model == "goroutines" {
		log.Fatalf("evproxy: %v", serveGoroutines(*listen, *up))
	}
	runtime.LockOSThread()
	p, err := newProxy(la, ua)
	if err != nil {
		log.Fatalf("evproxy: %v", err)
	}
	if *model == "epoll" {
		p.runEpoll() // never returns
	}
	log.Fatalf("evproxy: %v", p.runNetpoll())
}

const bufSize = 16 << 10

type proxy struct {
	ep, lfd int
	up      unix.SockaddrInet4
	conns   []*conn // by descriptor
	events  [128]unix.EpollEvent
	scratch []byte // the head being rebuilt
}

// conn is one socket: a client's, or the upstream connection paired
// with it.
type conn struct {
	fd      int
	up      bool
	peer    *conn // client: its upstream (nil until the first request); upstream: its client
	buf     []byte
	n       int    // bytes in buf
	out     []byte // what a write could not take yet (EAGAIN); EPOLLOUT sends it
	remain  int64  // upstream: response body bytes still to forward (-1: until EOF)
	inBody  bool   // upstream: between a response's head and its last byte
	busy    bool   // client: its request is upstream, its response not yet complete
	stalled bool   // client: its buffer filled while busy; read again after the response
	eof     bool   // epoll reported the peer's FIN or an error: read until 0 or EAGAIN
	closed  bool
}

func newProxy(la, ua netip.AddrPort) (*proxy, error) {
	if !la.Addr().Is4() || !ua.Addr().Is4() {
		return nil, errors.New("IPv4 addresses only")
	}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: int(la.Port()), Addr: la.Addr().As4()}); err != nil {
		return nil, err
	}
	if err := unix.Listen(lfd, 1024); err != nil {
		return nil, err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return nil, err
	}
	return &proxy{ep: ep, lfd: lfd, up: unix.SockaddrInet4{Port: int(ua.Port()), Addr: ua.Addr().As4()}}, nil
}

// runEpoll sleeps in epoll_wait, as nginx does.
func (p *proxy) runEpoll() {
	for {
		n, err := unix.EpollWait(p.ep, p.events[:], -1)
		if err != nil && err != unix.EINTR {
			log.Fatalf("evproxy: epoll_wait: %v", err)
		}
		p.handle(n)
	}
}

// runNetpoll parks the epoll descriptor on Go's poller and drains it
// with non-blocking epoll_waits when the runtime says it is readable; all
// within one RawConn.Read, so no readiness is reset in between.
func (p *proxy) runNetpoll() error {
	if err := unix.SetNonblock(p.ep, true); err != nil {
		return err
	}
	f := os.NewFile(uintptr(p.ep), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(uintptr) bool {
		for {
			n := epollWaitNow(p.ep, p.events[:])
			if n <= 0 {
				return false // nothing: park until the poller says so
			}
			p.handle(n)
		}
	})
}

func epollWaitNow(ep int, ev []unix.EpollEvent) int {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(ep), uintptr(unsafe.Pointer(&ev[0])), uintptr(len(ev)), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

func (p *proxy) handle(n int) {
	for i := 0; i < n; i++ {
		ev := p.events[i]
		fd := int(ev.Fd)
		if fd == p.lfd {
			p.accept()
			continue
		}
		if fd >= len(p.conns) || p.conns[fd] == nil {
			continue
		}
		c := p.conns[fd]
		if ev.Events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
			p.flush(c)
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !c.closed {
			// With the peer's FIN (or an error) reported, a short read
			// does not mean drained: the end is still to be read.
			c.eof = ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
			p.readable(c)
		}
	}
}

func (p *proxy) accept() {
	for {
		fd, _, err := unix.Accept4(p.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or a connection gone before it was taken
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		p.add(&conn{fd: fd, buf: make([]byte, bufSize)})
	}
}

func (p *proxy) add(c *conn) {
	for c.fd >= len(p.conns) {
		p.conns = append(p.conns, nil)
	}
	p.conns[c.fd] = c
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		log.Printf("evproxy: epoll_ctl: %v", err)
		p.close(c)
	}
}

// readable reads c until the kernel has nothing more (EAGAIN, or a read
// shorter than the room it had) and handles what came.
func (p *proxy) readable(c *conn) {
	for !c.closed {
		if c.n == len(c.buf) {
			if c.up || !c.busy {
				p.close(c) // a head larger than the buffer: out of scope here
				return
			}
			c.stalled = true // the client's next request waits for this response
			return
		}
		room := len(c.buf) - c.n
		m, errno := rawRead(c.fd, c.buf[c.n:])
		if errno == unix.EAGAIN {
			return
		}
		if errno != 0 || m == 0 {
			if c.up && c.remain < 0 && c.peer != nil { // a body that ends with the connection
				p.close(c.peer)
			}
			p.close(c)
			return
		}
		c.n += m
		if c.up {
			p.fromUpstream(c)
		} else {
			p.fromClient(c)
		}
		if m < room && !c.eof {
			return // drained: the next edge says when there is more
		}
	}
}

var crlf2 = []byte("\r\n\r\n")

// rebuildHead appends head (a request or response head up to and
// including its blank line) to dst without its hop-by-hop headers, and
// returns the Content-Length (-1 when there is none). ok is false for a
// malformed head or a chunked body (out of scope here).
func rebuildHead(dst, head []byte) (out []byte, length int64, ok bool) {
	lines := head[:len(head)-2]
	i := bytes.Index(lines, crlf2[:2])
	out = append(dst, lines[:i+2]...) // the request or status line
	length = -1
	for rest := lines[i+2:]; len(rest) > 0; {
		j := bytes.Index(rest, crlf2[:2])
		line := rest[:j+2]
		rest = rest[j+2:]
		name, value, found := bytes.Cut(line[:len(line)-2], []byte(":"))
		if !found {
			return out, 0, false
		}
		if hopByHop(name) {
			if bytes.EqualFold(name, []byte("Transfer-Encoding")) {
				return out, 0, false
			}
			continue
		}
		if bytes.EqualFold(name, []byte("Content-Length")) {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
			if err != nil || n < 0 {
				return out, 0, false
			}
			length = n
		}
		out = append(out, line...)
	}
	return out, length, true
}

// fromClient sends the buffered request upstream once it is whole.
func (p *proxy) fromClient(c *conn) {
	if c.busy || c.closed {
		return
	}
	head := bytes.Index(c.buf[:c.n], crlf2)
	if head < 0 {
		return
	}
	head += 4
	out, length, ok := rebuildHead(p.scratch[:0], c.buf[:head])
	p.scratch = out
	if !ok {
		p.close(c)
		return
	}
	out = append(out, "\r\n"...)
	total := head + int(max(length, 0))
	if total > len(c.buf) {
		p.close(c) // bodies larger than the buffer: out of scope
		return
	}
	if c.n < total {
		return // the rest of the body is on its way
	}
	out = append(out, c.buf[head:total]...)
	p.scratch = out
	c.n = copy(c.buf, c.buf[total:c.n])
	if c.peer == nil {
		u, err := p.dial()
		if err != nil {
			log.Printf("evproxy: upstream: %v", err)
			p.close(c)
			return
		}
		u.peer, c.peer = c, u
	}
	c.busy = true
	p.send(c.peer, out)
}

// fromUpstream forwards the response: the rebuilt head with the body
// bytes that came with it in one write, then the body as it comes.
func (p *proxy) fromUpstream(u *conn) {
	c := u.peer
	if c == nil || c.closed {
		p.close(u)
		return
	}
	if !u.inBody {
		head := bytes.Index(u.buf[:u.n], crlf2)
		if head < 0 {
			return
		}
		head += 4
		out, length, ok := rebuildHead(p.scratch[:0], u.buf[:head])
		p.scratch = out
		if !ok {
			p.close(c)
			return
		}
		u.remain = length
		if u.remain < 0 {
			out = append(out, "Connection: close\r\n"...) // the body ends with the connection
		}
		out = append(out, "\r\n"...)
		body := int64(u.n - head)
		if u.remain >= 0 && body > u.remain {
			body = u.remain // anything after the response is not ours to forward
		}
		out = append(out, u.buf[head:head+int(body)]...)
		p.scratch = out
		if u.remain > 0 {
			u.remain -= body
		}
		u.n = 0
		u.inBody = true
		p.send(c, out)
	} else if u.n > 0 {
		body := int64(u.n)
		if u.remain >= 0 && body > u.remain {
			body = u.remain
		}
		if u.remain > 0 {
			u.remain -= body
		}
		p.send(c, u.buf[:body])
		u.n = 0
	}
	if u.inBody && u.remain == 0 { // the whole response is out
		u.inBody = false
		c.busy = false
		if c.n > 0 {
			p.fromClient(c) // a request that came meanwhile
		}
		if c.stalled { // its buffer filled while it waited: read what the kernel holds
			c.stalled = false
			p.readable(c)
		}
	}
}

func hopByHop(name []byte) bool {
	for _, h := range [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade"} {
		if len(name) == len(h) && bytes.EqualFold(name, []byte(h)) {
			return true
		}
	}
	return false
}

// dial connects to the upstream (blocking: loopback connects at once),
// then makes the socket non-blocking.
func (p *proxy) dial() (*conn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &p.up); err != nil {
		unix.Close(fd)
		return nil, err
	}
	unix.SetNonblock(fd, true)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	u := &conn{fd: fd, up: true, buf: make([]byte, bufSize)}
	p.add(u)
	return u, nil
}

// send writes b to c now, keeping what the socket cannot take for
// EPOLLOUT.
func (p *proxy) send(c *conn, b []byte) {
	if c.closed {
		return
	}
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	m, errno := rawWrite(c.fd, b)
	if errno != 0 && errno != unix.EAGAIN {
		p.close(c)
		return
	}
	if m < len(b) {
		c.out = append(c.out[:0], b[m:]...)
	}
}

func (p *proxy) flush(c *conn) {
	m, errno := rawWrite(c.fd, c.out)
	if errno != 0 && errno != unix.EAGAIN {
		p.close(c)
		return
	}
	c.out = c.out[:copy(c.out, c.out[m:])]
}

func (p *proxy) close(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	p.conns[c.fd] = nil
	unix.Close(c.fd) // also leaves the epoll set
	if peer := c.peer; peer != nil {
		c.peer, peer.peer = nil, nil
		// A client gone takes its upstream connection; an upstream
		// connection gone mid-response takes the client (an idle one is
		// dialed again at the next request).
		if !c.up || peer.busy {
			p.close(peer)
		}
	}
}

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == unix.EINTR {
			continue
		}
		return int(n), errno
	}
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(n), 0
	}
}
