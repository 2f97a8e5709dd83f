package dataplane

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// Listener filters that run only for some connections, and the TLS
// inspector's reading of a ClientHello.
//
// A listener filter's filter_disabled is Envoy's
// ListenerFilterChainMatchPredicate: when it matches a connection, the
// filter does not run for it. Istio uses it to run the HTTP inspector only
// on the ports whose protocol is sniffed, so a server-first protocol
// (MySQL, SMTP) on any other port is never held waiting for a first byte
// its client will not send.
//
// The TLS inspector reads the ClientHello's server name (SNI) and ALPN
// list when a chain of the listener matches on server_names or
// application_protocols, as Envoy's tls_inspector sets the connection's
// requested server name and application protocols: a sidecar offers
// "h2"/"http/1.1" when it carries HTTP, nothing for a byte stream, and
// the inbound side of a sniffed port picks its HTTP or TCP chain by it;
// VirtualService tls routes pick their chain by the SNI.

// portPredicate reports whether a filter is disabled for a connection to
// a destination port.
type portPredicate func(port uint16) bool

// maxPredicateDepth bounds how deeply predicates may nest.
const maxPredicateDepth = 8

// parsePredicate compiles p. Errors name the field below filter_disabled.
func parsePredicate(p *listener.ListenerFilterChainMatchPredicate) (portPredicate, error) {
	return parsePredicateAt(p, 0)
}

func parsePredicateAt(p *listener.ListenerFilterChainMatchPredicate, depth int) (portPredicate, error) {
	if depth > maxPredicateDepth {
		return nil, fmt.Errorf("nested more than %d levels deep", maxPredicateDepth)
	}
	set := func(field string, rules []*listener.ListenerFilterChainMatchPredicate) ([]portPredicate, error) {
		if len(rules) < 2 {
			return nil, fmt.Errorf("%s.rules: want at least 2 rules, have %d", field, len(rules))
		}
		out := make([]portPredicate, 0, len(rules))
		for i, r := range rules {
			f, err := parsePredicateAt(r, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s.rules[%d].%w", field, i, err)
			}
			out = append(out, f)
		}
		return out, nil
	}
	switch r := p.GetRule().(type) {
	case *listener.ListenerFilterChainMatchPredicate_AnyMatch:
		if !r.AnyMatch {
			return nil, errors.New("any_match: must be true")
		}
		return func(uint16) bool { return true }, nil
	case *listener.ListenerFilterChainMatchPredicate_NotMatch:
		f, err := parsePredicateAt(r.NotMatch, depth+1)
		if err != nil {
			return nil, fmt.Errorf("not_match.%w", err)
		}
		return func(port uint16) bool { return !f(port) }, nil
	case *listener.ListenerFilterChainMatchPredicate_OrMatch:
		fs, err := set("or_match", r.OrMatch.GetRules())
		if err != nil {
			return nil, err
		}
		return func(port uint16) bool {
			for _, f := range fs {
				if f(port) {
					return true
				}
			}
			return false
		}, nil
	case *listener.ListenerFilterChainMatchPredicate_AndMatch:
		fs, err := set("and_match", r.AndMatch.GetRules())
		if err != nil {
			return nil, err
		}
		return func(port uint16) bool {
			for _, f := range fs {
				if !f(port) {
					return false
				}
			}
			return true
		}, nil
	case *listener.ListenerFilterChainMatchPredicate_DestinationPortRange:
		start, end := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if start < 0 || end > 65536 || start >= end {
			return nil, fmt.Errorf("destination_port_range: [%d, %d) is not a port range", start, end)
		}
		return func(port uint16) bool { return int32(port) >= start && int32(port) < end }, nil
	case nil:
		return nil, errors.New("rule: empty")
	default:
		return nil, fmt.Errorf("rule: %T is not supported (the proxy matches any_match, not_match, or_match, and_match and destination_port_range)", r)
	}
}

// inspector is one inspecting listener filter of a listener.
type inspector struct {
	on       bool
	disabled portPredicate // nil: never disabled
}

// runs reports whether the inspector runs for a connection to port.
func (i inspector) runs(port uint16) bool {
	return i.on && (i.disabled == nil || !i.disabled(port))
}

// errHelloRead ends a handshake once the ClientHello has been read.
var errHelloRead = errors.New("client hello read")

// clientHello reads the rest of a TLS ClientHello whose first bytes are
// head from c (within the read deadline the caller set) and returns its
// server name, its ALPN list and every byte read, head included, for the
// handshake that follows to read again. A connection that ends, or sends
// something other than a ClientHello, returns what was read and no name
// or protocols: the chain is picked without them and its handshake fails
// as it would.
func clientHello(c net.Conn, head []byte) (sni string, alpn []string, read []byte) {
	var buf bytes.Buffer
	buf.Write(head)
	rc := &recordingConn{Conn: c, r: io.MultiReader(bytes.NewReader(head), io.TeeReader(c, &buf))}
	srv := tls.Server(rc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni, alpn = h.ServerName, append([]string(nil), h.SupportedProtos...)
		return nil, errHelloRead
	}})
	_ = srv.Handshake() // always fails: errHelloRead, or what the client sent
	return sni, alpn, buf.Bytes()
}

// recordingConn reads from r and swallows writes (the alert a refused
// handshake sends), so reading a ClientHello never answers the client.
type recordingConn struct {
	net.Conn
	r io.Reader
}

func (c *recordingConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *recordingConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recordingConn) Close() error                     { return nil }
