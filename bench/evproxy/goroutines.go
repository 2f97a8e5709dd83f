//go:build linux

package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"weft.dev/weft/internal/proxy/sockio"
)

// serveGoroutines is -model goroutines: the loop's parsing and
// forwarding, written as Weft's data path is — a goroutine per client
// connection that blocks in its reads and writes (raw system calls
// through sockio, parked on Go's poller), with one upstream connection of
// its own.
func serveGoroutines(listen, upstream string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serveConn(c.(*net.TCPConn), upstream)
	}
}

type sockConn struct {
	*net.TCPConn
	io sockio.IO
}

func newSockConn(c *net.TCPConn) *sockConn {
	s := &sockConn{TCPConn: c}
	s.io.Init(c)
	return s
}

func (s *sockConn) Read(p []byte) (int, error) {
	if s.io.Ok() {
		return s.io.Read(p)
	}
	return s.TCPConn.Read(p)
}

func (s *sockConn) Write(p []byte) (int, error) {
	if s.io.Ok() {
		return s.io.Write(p)
	}
	return s.TCPConn.Write(p)
}

var errHead = errors.New("head too large, malformed or chunked")

func serveConn(tc *net.TCPConn, upstream string) error {
	c := newSockConn(tc)
	defer c.Close()
	var u *sockConn
	defer func() {
		if u != nil {
			u.Close()
		}
	}()
	buf := make([]byte, bufSize)
	ubuf := make([]byte, bufSize)
	var out []byte
	var fs [32]field
	n := 0
	for {
		head, err := readHead(c, buf, &n)
		if err != nil {
			return err
		}
		var length int64
		var ok bool
		var rt *route
		var start time.Time
		if doWork {
			start = time.Now()
			out, rt, length, ok = requestWork(out[:0], buf[:head], fs[:])
		} else {
			out, length, ok = rebuildHead(out[:0], buf[:head])
			out = append(out, "\r\n"...)
		}
		total := head + int(max(length, 0))
		if !ok || total > len(buf) {
			return errHead
		}
		for n < total {
			m, err := c.Read(buf[n:])
			if err != nil {
				return err
			}
			n += m
		}
		out = append(out, buf[head:total]...)
		n = copy(buf, buf[total:n])
		if u == nil {
			nc, err := net.Dial("tcp", upstream)
			if err != nil {
				return err
			}
			u = newSockConn(nc.(*net.TCPConn))
		}
		if _, err := u.Write(out); err != nil {
			return err
		}

		un := 0
		rhead, err := readHead(u, ubuf, &un)
		if err != nil {
			return err
		}
		out, length, ok = rebuildHead(out[:0], ubuf[:rhead])
		if !ok {
			return errHead
		}
		if length < 0 {
			out = append(out, "Connection: close\r\n"...)
		}
		out = append(out, "\r\n"...)
		body := int64(un - rhead)
		if length >= 0 && body > length {
			body = length
		}
		out = append(out, ubuf[rhead:rhead+int(body)]...)
		if _, err := c.Write(out); err != nil {
			return err
		}
		if rt != nil { // -work: the response counted as its head is relayed
			rt.record(ubuf[:rhead], time.Since(start))
		}
		if length < 0 {
			_, err := io.CopyBuffer(c, u, ubuf)
			return err
		}
		for remain := length - body; remain > 0; {
			m, err := u.Read(ubuf[:min(remain, int64(len(ubuf)))])
			if err != nil {
				return err
			}
			if _, err := c.Write(ubuf[:m]); err != nil {
				return err
			}
			remain -= int64(m)
		}
	}
}

// readHead reads into buf (holding *n bytes) until a whole head is in
// it, and returns its length.
func readHead(r io.Reader, buf []byte, n *int) (int, error) {
	for {
		if i := bytes.Index(buf[:*n], crlf2); i >= 0 {
			return i + 4, nil
		}
		if *n == len(buf) {
			return 0, errHead
		}
		m, err := r.Read(buf[*n:])
		if err != nil {
			return 0, err
		}
		*n += m
	}
}
