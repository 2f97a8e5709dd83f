// Package cpdial is how a proxy reaches its control plane: the replicas'
// addresses taken in turn (a list, where a host name stands for every
// address it resolves to), and TCP connections whose death is noticed in
// seconds even when the peer vanished without a FIN or RST (TCP keepalive
// probes and TCP_USER_TIMEOUT). The xDS client and the certificate
// manager both dial through it.
package cpdial

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// Socket parameters of connections to the control plane. See
// docs/control-plane.md, "Keepalive parameters and why".
const (
	// KeepaliveIdle is how long a connection may be silent before the
	// kernel probes the peer; KeepaliveInterval the time between probes.
	// Probes are answered by the peer's kernel, so they cost the control
	// plane no work: a few bytes per proxy every 2 s.
	KeepaliveIdle     = 2 * time.Second
	KeepaliveInterval = time.Second
	// KeepaliveCount is how many unanswered probes close the connection
	// when UserTimeout cannot be set (it takes precedence where it can).
	KeepaliveCount = 3
	// UserTimeout (TCP_USER_TIMEOUT) is how long sent data, or a keepalive
	// probe, may stay unacknowledged before the kernel closes the
	// connection. With the probes above a black-holed connection fails
	// about 4 s after the last byte received, whether it was busy or idle.
	UserTimeout = 4 * time.Second
	// ConnectTimeout bounds one TCP connect, so a replica that drops SYNs
	// costs seconds before the next one is tried.
	ConnectTimeout = 3 * time.Second
	// resolveTimeout bounds one DNS lookup of a replica's host name.
	resolveTimeout = 3 * time.Second
)

// Split parses a comma-separated list of host:port (spaces around the
// commas allowed) and checks each. The error names the bad entry.
func Split(list string) ([]string, error) {
	var out []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("control plane address %q: want host:port", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("no control plane address")
	}
	return out, nil
}

// Replicas hands out the control plane addresses to try, one after the
// other. A host name stands for all of its A and AAAA records, resolved
// again at the start of every round, so replicas added to or removed from
// DNS are picked up. The first address is chosen at random, so a fleet of
// proxies spreads over the replicas. Safe for concurrent use.
type Replicas struct {
	entries []string // as configured
	log     *slog.Logger
	lookup  func(ctx context.Context, host string) ([]string, error)

	mu       sync.Mutex
	resolved map[string][]string // entry -> its addresses, from the last good lookup
	round    []string            // addresses of the current round
	pos      int                 // how many of round were handed out
	offset   int                 // where rounds start, chosen once
}

// NewReplicas takes the list Split returns (or a single address). log
// receives failed lookups; nil for slog.Default().
func NewReplicas(addrs []string, log *slog.Logger) (*Replicas, error) {
	if len(addrs) == 0 {
		return nil, errors.New("cpdial: no control plane address")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("cpdial: control plane address %q: %w", a, err)
		}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Replicas{
		entries:  slices.Clone(addrs),
		log:      log,
		lookup:   net.DefaultResolver.LookupHost,
		resolved: map[string][]string{},
		offset:   rand.N(1 << 16),
	}, nil
}

// Next returns the address to try next. After the last address of a
// round it resolves the host names again and starts the next round where
// the rotation left off, so consecutive calls never return the same
// address twice in a row while there are several.
func (r *Replicas) Next(ctx context.Context) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos >= len(r.round) {
		r.resolve(ctx)
		r.pos = 0
	}
	a := r.round[(r.offset+r.pos)%len(r.round)]
	r.pos++
	if r.pos == len(r.round) {
		r.offset = (r.offset + r.pos) % len(r.round)
	}
	return a
}

// Len is the number of addresses in the current round (at least 1 once
// Next was called): how many attempts make one try of every replica.
func (r *Replicas) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(1, len(r.round))
}

// resolve rebuilds the round: IP addresses as they are, host names
// expanded to their records (sorted, so the rotation is stable across
// lookups). A failed lookup keeps the name's previous records, or the
// name itself when it never resolved (the dial then reports why).
func (r *Replicas) resolve(ctx context.Context) {
	var round []string
	for _, e := range r.entries {
		host, port, _ := net.SplitHostPort(e)
		if net.ParseIP(host) != nil {
			round = append(round, e)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		ips, err := r.lookup(lctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			if ctx.Err() == nil {
				r.log.Warn("resolving the control plane's host name failed; using its last known addresses", "host", host, "error", err, "last", r.resolved[e])
			}
			if prev := r.resolved[e]; len(prev) > 0 {
				round = append(round, prev...)
			} else {
				round = append(round, e)
			}
			continue
		}
		var addrs []string
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, port))
		}
		slices.Sort(addrs)
		addrs = slices.Compact(addrs)
		r.resolved[e] = addrs
		round = append(round, addrs...)
	}
	// One address listed twice (a name and its IP) is tried once a round.
	seen := map[string]bool{}
	r.round = slices.DeleteFunc(round, func(a string) bool {
		if seen[a] {
			return true
		}
		seen[a] = true
		return false
	})
}

// Dial connects to addr with the socket options above: TCP keepalive
// probes every KeepaliveInterval after KeepaliveIdle of silence, and
// TCP_USER_TIMEOUT where the platform has it.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{
		Timeout: ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     KeepaliveIdle,
			Interval: KeepaliveInterval,
			Count:    KeepaliveCount,
		},
		Control: setUserTimeout,
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the control plane at %s: %w", addr, err)
	}
	return c, nil
}
