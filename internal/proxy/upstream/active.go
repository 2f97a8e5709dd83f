package upstream

import (
	"context"
	"net"
	"sync/atomic"

	"weft.dev/weft/internal/proxy/sockio"
)

// dialer is the pool's net.Dialer. Its TCP connections are read and
// written with raw system calls (sockio) and, when the pool counts them
// (Options.CountActive), counted while they are open.
type dialer struct {
	*net.Dialer
	active ActiveCounter // nil: not counted
}

// DialContext dials as net.Dialer does; the connection, when counted,
// is uncounted by its first Close.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return c, err
	}
	if d.active != nil {
		d.active.Inc()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Embedding keeps every method of *net.TCPConn (CloseWrite for
		// half-closes, SyscallConn for the liveness peek).
		t := &tcpConn{TCPConn: tc, active: d.active}
		t.sio.Init(tc)
		return t, nil
	}
	if d.active == nil {
		return c, nil
	}
	return &countedConn{Conn: c, active: d.active}, nil
}

// tcpConn is a dialed TCP connection, counted as active until closed
// when active is set.
type tcpConn struct {
	*net.TCPConn
	active ActiveCounter // nil: not counted
	closed atomic.Bool
	sio    sockio.IO // in use when Ok
}

func (c *tcpConn) Read(p []byte) (int, error) {
	if c.sio.Ok() {
		return c.sio.Read(p)
	}
	return c.TCPConn.Read(p)
}

func (c *tcpConn) Write(p []byte) (int, error) {
	if c.sio.Ok() {
		return c.sio.Write(p)
	}
	return c.TCPConn.Write(p)
}

func (c *tcpConn) Close() error {
	if c.active != nil && c.closed.CompareAndSwap(false, true) {
		c.active.Dec()
	}
	return c.TCPConn.Close()
}

// countedConn is any other connection counted as active until closed.
type countedConn struct {
	net.Conn
	active ActiveCounter
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.active.Dec()
	}
	return c.Conn.Close()
}
