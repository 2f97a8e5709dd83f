package upstream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"weft.dev/weft/internal/proxy/reqctx"
)

// Upgrade sends out, the upstream copy of an HTTP/1.1 Upgrade request
// (WebSocket), to the endpoint whose connections are conns, on a
// connection of its own — dialled with the cluster's transport socket
// (plaintext, TLS, Istio mutual TLS) and never pooled — and reads the
// response head. ctx bounds the dial and the wait for the head; once
// Upgrade returns, the connection no longer depends on it.
//
// A 101 Switching Protocols answer returns the connection switched to the
// new protocol as a Stream, which the caller owns and closes; the
// response's Body is then empty. Any other answer is a normal response
// whose Body reads from the connection and closes it; the Stream is nil.
// The connection always speaks HTTP/1.1, whatever the cluster's protocol
// (an upgrade has no HTTP/2 equivalent but extended CONNECT). A failure to
// connect, TLS handshake included, satisfies IsConnectError.
func (p *Pool) Upgrade(ctx context.Context, conns *Conns, out *http.Request) (*http.Response, *Stream, error) {
	if conns.autoSNI {
		conns = conns.forHost(out.Host)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	pc, err := conns.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	stop := reqctx.AfterFunc(ctx, pc.interrupt) // no allocation for an HTTP/1.1 server request
	fail := func(err error) (*http.Response, *Stream, error) {
		stop.Stop()
		pc.nc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, nil, cerr
		}
		return nil, nil, err
	}
	if err := out.Write(pc.bw); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	var resp *http.Response
	for n := 0; ; n++ {
		if resp, err = http.ReadResponse(pc.br, out); err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n == 5 {
			return fail(fmt.Errorf("upstream sent too many %d responses", resp.StatusCode))
		}
	}
	if !stop.Stop() {
		// ctx ended as the head arrived: the deadline the hook set
		// would break the connection.
		return fail(ctx.Err())
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body = &closingBody{ReadCloser: resp.Body, nc: pc.nc}
		return resp, nil, nil
	}
	resp.Body = http.NoBody
	return resp, &Stream{Conn: pc.nc, br: pc.br}, nil
}

// closingBody closes the upgrade connection with its non-101 response
// body.
type closingBody struct {
	io.ReadCloser
	nc net.Conn
}

func (b *closingBody) Close() error {
	b.ReadCloser.Close()
	return b.nc.Close()
}

// Stream is an upstream connection that switched protocols: reads return
// first what was read past the 101 response head. Not safe for concurrent
// reads (one reader, one writer).
type Stream struct {
	net.Conn
	br *bufio.Reader
}

func (s *Stream) Read(p []byte) (int, error) {
	if s.br != nil {
		if s.br.Buffered() > 0 {
			return s.br.Read(p)
		}
		s.br = nil
	}
	return s.Conn.Read(p)
}

// CloseWrite half-closes the connection: a TLS close_notify, or a TCP FIN.
// For TLS the TCP connection stays open for reading.
func (s *Stream) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
