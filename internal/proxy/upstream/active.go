package upstream

import (
	"context"
	"net"
	"sync/atomic"
)

// dialer is the pool's net.Dialer, counting the connections it
// establishes while they are open (Options.CountActive).
type dialer struct {
	*net.Dialer
	active ActiveCounter // nil: not counted
}

// DialContext dials as net.Dialer does; the connection, when counted,
// is uncounted by its first Close.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil || d.active == nil {
		return c, err
	}
	d.active.Inc()
	if tc, ok := c.(*net.TCPConn); ok {
		// Embedding keeps every method of *net.TCPConn (CloseWrite for
		// half-closes, SyscallConn for the liveness peek).
		return &countedTCPConn{TCPConn: tc, active: d.active}, nil
	}
	return &countedConn{Conn: c, active: d.active}, nil
}

// countedTCPConn is a TCP connection counted as active until closed.
type countedTCPConn struct {
	*net.TCPConn
	active ActiveCounter
	closed atomic.Bool
}

func (c *countedTCPConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
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
