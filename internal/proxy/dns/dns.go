// Package dns is the proxy's DNS client for the clusters it resolves
// itself (Envoy's STRICT_DNS and LOGICAL_DNS): A and AAAA queries sent
// straight to given DNS servers, which, unlike the system resolver
// (net.Resolver), tell how long the answer may be kept (its TTL), so a
// cluster with respect_dns_ttl re-resolves when the records expire.
//
// It is a stub resolver: the servers must recurse; names are queried as
// written, fully qualified (no search domains, no /etc/hosts).
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DefaultTimeout bounds one query to one server when Client.Timeout is
// zero (c-ares' default, as Envoy's resolver uses it).
const DefaultTimeout = 5 * time.Second

// maxUDPSize is the largest UDP answer read; a server that needs more sets
// the truncated bit and the query is repeated over TCP.
const maxUDPSize = 1232

// ErrNotFound is wrapped by the error of a lookup whose name does not
// exist (NXDOMAIN) or has no address of the asked family.
var ErrNotFound = errors.New("no such host")

// Client sends queries to its servers, in order, until one answers. Its
// fields are set before the first lookup; safe for concurrent use.
type Client struct {
	// Servers are "host:port" (or "host", port 53) of DNS servers that
	// recurse.
	Servers []string
	// Timeout bounds one query to one server; zero means DefaultTimeout.
	Timeout time.Duration
}

// LookupIP returns the addresses of host of network "ip4" (A records),
// "ip6" (AAAA) or "ip" (both), and the smallest TTL of the records that
// gave them (CNAMEs included). A name that does not exist, or has no
// address of the family, is an error wrapping ErrNotFound. It blocks
// until an answer, an error from every server, or ctx ends.
func (c *Client) LookupIP(ctx context.Context, network, host string) ([]netip.Addr, time.Duration, error) {
	var types []dnsmessage.Type
	switch network {
	case "ip4":
		types = []dnsmessage.Type{dnsmessage.TypeA}
	case "ip6":
		types = []dnsmessage.Type{dnsmessage.TypeAAAA}
	case "ip":
		types = []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}
	default:
		return nil, 0, fmt.Errorf("dns: lookup %s: network %q: want ip4, ip6 or ip", host, network)
	}
	if len(c.Servers) == 0 {
		return nil, 0, fmt.Errorf("dns: lookup %s: no DNS server", host)
	}
	fqdn := host
	if len(fqdn) == 0 || fqdn[len(fqdn)-1] != '.' {
		fqdn += "."
	}
	name, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, 0, fmt.Errorf("dns: lookup %s: %w", host, err)
	}
	var (
		addrs []netip.Addr
		ttl   time.Duration
		errs  []error
	)
	for _, t := range types {
		a, d, err := c.query(ctx, name, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs = append(addrs, a...)
		if ttl == 0 || d < ttl {
			ttl = d
		}
	}
	if len(addrs) == 0 {
		if len(errs) == 0 {
			errs = append(errs, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("dns: lookup %s: %w", host, errors.Join(errs...))
	}
	return addrs, ttl, nil
}

// query asks each server in turn for the records of type t of name.
func (c *Client) query(ctx context.Context, name dnsmessage.Name, t dnsmessage.Type) ([]netip.Addr, time.Duration, error) {
	var errs []error
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		addrs, ttl, err := c.exchange(ctx, s, name, t)
		if err == nil || errors.Is(err, ErrNotFound) {
			return addrs, ttl, err // the name's answer: another server would say the same
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, errors.Join(errs...)
}

// exchange sends one query to server over UDP, and again over TCP when
// the answer is truncated.
func (c *Client) exchange(ctx context.Context, server string, name dnsmessage.Name, t dnsmessage.Type) ([]netip.Addr, time.Duration, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := uint16(rand.Uint32())
	q, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: name, Type: t, Class: dnsmessage.ClassINET}},
	}).Pack()
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", server, err)
	}
	resp, err := roundTrip(ctx, "udp", server, q)
	if err == nil {
		var h dnsmessage.Header
		if h, err = headerOf(resp); err == nil && h.Truncated {
			resp, err = roundTrip(ctx, "tcp", server, q)
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", server, err)
	}
	addrs, ttl, err := parseAnswer(resp, id, name, t)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", server, err)
	}
	return addrs, ttl, nil
}

func headerOf(b []byte) (dnsmessage.Header, error) {
	var p dnsmessage.Parser
	return p.Start(b)
}

// roundTrip writes q and reads one message, over UDP (one datagram) or
// TCP (length-prefixed). The connection is closed when ctx ends.
func roundTrip(ctx context.Context, network, server string, q []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if network == "udp" {
		if _, err := conn.Write(q); err != nil {
			return nil, err
		}
		buf := make([]byte, maxUDPSize)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return nil, ctxErr(ctx, err)
			}
			// A datagram from an earlier query, or garbage, is skipped.
			if n >= 2 && binary.BigEndian.Uint16(buf) == binary.BigEndian.Uint16(q) {
				return buf[:n], nil
			}
		}
	}
	msg := make([]byte, 2+len(q))
	binary.BigEndian.PutUint16(msg, uint16(len(q)))
	copy(msg[2:], q)
	if _, err := conn.Write(msg); err != nil {
		return nil, ctxErr(ctx, err)
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	resp := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, resp); err != nil {
		return nil, ctxErr(ctx, err)
	}
	return resp, nil
}

// ctxErr prefers the context's error to the closed connection's (or the
// deadline it set).
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if dl, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return err
}

// parseAnswer reads the A or AAAA records of an answer to query id for
// name: those of name and of the names its CNAMEs lead to.
func parseAnswer(b []byte, id uint16, name dnsmessage.Name, t dnsmessage.Type) ([]netip.Addr, time.Duration, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return nil, 0, fmt.Errorf("bad answer: %w", err)
	}
	if h.ID != id || !h.Response {
		return nil, 0, errors.New("bad answer: not a response to the query")
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, 0, fmt.Errorf("%s: %w", name, ErrNotFound)
	default:
		return nil, 0, fmt.Errorf("server answered %s", h.RCode)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, 0, fmt.Errorf("bad answer: %w", err)
	}
	want := map[string]bool{lower(name.String()): true}
	var (
		addrs []netip.Addr
		ttl   uint32
		first = true
	)
	minTTL := func(t uint32) {
		if first || t < ttl {
			ttl, first = t, false
		}
	}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("bad answer: %w", err)
		}
		owner := lower(rh.Name.String())
		switch {
		case !want[owner] || rh.Class != dnsmessage.ClassINET:
			err = p.SkipAnswer()
		case rh.Type == dnsmessage.TypeCNAME:
			var r dnsmessage.CNAMEResource
			if r, err = p.CNAMEResource(); err == nil {
				want[lower(r.CNAME.String())] = true
				minTTL(rh.TTL)
			}
		case rh.Type == t && t == dnsmessage.TypeA:
			var r dnsmessage.AResource
			if r, err = p.AResource(); err == nil {
				addrs = append(addrs, netip.AddrFrom4(r.A))
				minTTL(rh.TTL)
			}
		case rh.Type == t && t == dnsmessage.TypeAAAA:
			var r dnsmessage.AAAAResource
			if r, err = p.AAAAResource(); err == nil {
				addrs = append(addrs, netip.AddrFrom16(r.AAAA))
				minTTL(rh.TTL)
			}
		default:
			err = p.SkipAnswer()
		}
		if err != nil {
			return nil, 0, fmt.Errorf("bad answer: %w", err)
		}
	}
	if len(addrs) == 0 {
		return nil, 0, fmt.Errorf("%s: no %s record: %w", name, t, ErrNotFound)
	}
	return addrs, time.Duration(ttl) * time.Second, nil
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
