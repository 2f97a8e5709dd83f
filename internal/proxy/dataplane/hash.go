package dataplane

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// hashPolicy is one RouteAction.hash_policy entry.
type hashPolicy struct {
	kind       hashKind
	name       string // header (canonical), cookie or query parameter name
	cookiePath string
	cookieTTL  time.Duration
	hasTTL     bool // generate the cookie when absent
	terminal   bool
}

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashSourceIP
	hashQuery
)

// compileHashPolicies translates RouteAction.hash_policy.
func compileHashPolicies(in []*route.RouteAction_HashPolicy) ([]hashPolicy, error) {
	var out []hashPolicy
	for i, hp := range in {
		p := hashPolicy{terminal: hp.GetTerminal()}
		switch s := hp.GetPolicySpecifier().(type) {
		case *route.RouteAction_HashPolicy_Header_:
			if s.Header.GetHeaderName() == "" {
				return nil, fmt.Errorf("hash_policy[%d].header.header_name: empty", i)
			}
			if s.Header.GetRegexRewrite() != nil {
				return nil, fmt.Errorf("hash_policy[%d].header.regex_rewrite: unsupported", i)
			}
			p.kind, p.name = hashHeader, http.CanonicalHeaderKey(s.Header.GetHeaderName())
		case *route.RouteAction_HashPolicy_Cookie_:
			if s.Cookie.GetName() == "" {
				return nil, fmt.Errorf("hash_policy[%d].cookie.name: empty", i)
			}
			if len(s.Cookie.GetAttributes()) > 0 {
				return nil, fmt.Errorf("hash_policy[%d].cookie.attributes: unsupported", i)
			}
			p.kind, p.name, p.cookiePath = hashCookie, s.Cookie.GetName(), s.Cookie.GetPath()
			if t := s.Cookie.GetTtl(); t != nil {
				if err := t.CheckValid(); err != nil {
					return nil, fmt.Errorf("hash_policy[%d].cookie.ttl: %w", i, err)
				}
				p.hasTTL, p.cookieTTL = true, t.AsDuration()
			}
		case *route.RouteAction_HashPolicy_ConnectionProperties_:
			if !s.ConnectionProperties.GetSourceIp() {
				continue // hashes nothing
			}
			p.kind = hashSourceIP
		case *route.RouteAction_HashPolicy_QueryParameter_:
			if s.QueryParameter.GetName() == "" {
				return nil, fmt.Errorf("hash_policy[%d].query_parameter.name: empty", i)
			}
			p.kind, p.name = hashQuery, s.QueryParameter.GetName()
		default:
			return nil, fmt.Errorf("hash_policy[%d]: unsupported %T", i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// requestHash computes the request's hash as Envoy's HashPolicyImpl does:
// each policy that yields a value is mixed in (hash = rotl(hash,1) ^ h);
// a terminal policy with a value ends the walk. A cookie policy with a ttl
// whose cookie is absent generates one (xxHash64 of the connection
// addresses, hex), hashes it and adds its Set-Cookie to w's headers.
func requestHash(policies []hashPolicy, r *http.Request, w http.ResponseWriter) hashKey {
	var k hashKey
	for i := range policies {
		p := &policies[i]
		var h uint64
		var got bool
		switch p.kind {
		case hashHeader:
			// The first value (Envoy sorts and chains several).
			if vv := r.Header[p.name]; len(vv) > 0 {
				h, got = xxhash.Sum64String(vv[0]), true
			}
		case hashCookie:
			if c, err := r.Cookie(p.name); err == nil {
				h, got = xxhash.Sum64String(c.Value), true
			} else if p.hasTTL {
				v := strconv.FormatUint(xxhash.Sum64String(r.RemoteAddr+localAddr(r)), 16)
				w.Header().Add("Set-Cookie", setCookie(p.name, v, p.cookiePath, p.cookieTTL))
				h, got = xxhash.Sum64String(v), true
			}
		case hashSourceIP:
			if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
				h, got = xxhash.Sum64String(host), true
			}
		case hashQuery:
			if v := r.URL.Query()[p.name]; len(v) > 0 {
				h, got = xxhash.Sum64String(v[0]), true
			}
		}
		if !got {
			continue
		}
		if k.ok {
			k.hash = (k.hash<<1 | k.hash>>63) ^ h
		} else {
			k = hashKey{hash: h, ok: true}
		}
		if p.terminal {
			break
		}
	}
	return k
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

// setCookie renders Envoy's generated cookie: name="value"; Max-Age=N;
// Path=p; HttpOnly (no Max-Age for a zero ttl: a session cookie).
func setCookie(name, value, path string, ttl time.Duration) string {
	s := name + `="` + value + `"`
	if secs := int64(ttl / time.Second); secs > 0 {
		s += "; Max-Age=" + strconv.FormatInt(secs, 10)
	}
	if path != "" {
		s += "; Path=" + path
	}
	return s + "; HttpOnly"
}

// Envoy's ring hash defaults and bounds.
const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 << 20
	defaultMaglevSize  = 65537
)

// ringHash is Envoy's RING_HASH (ketama-style, xxHash64): each endpoint
// owns points on a ring in proportion to its weight; a request takes the
// first point at or after its hash. Built once per endpoint set.
type ringHash struct {
	endpoints []*endpoint
	hashes    []uint64 // sorted
	owners    []uint32 // owners[i] owns hashes[i]
}

var _ balancer = (*ringHash)(nil)

func newRingHash(eps []*endpoint, minSize, maxSize uint64) *ringHash {
	r := &ringHash{endpoints: eps}
	if len(eps) == 0 {
		return r
	}
	var total float64
	minW := 1.0
	for _, e := range eps {
		total += float64(max(e.weight, 1))
	}
	for _, e := range eps {
		minW = min(minW, float64(max(e.weight, 1))/total)
	}
	// As Envoy: scale so the lightest endpoint gets at least one point and
	// the ring has at least minSize points, at most maxSize.
	scale := min(float64(maxSize), max(float64(minSize), 1/minW))
	type point struct {
		h uint64
		o uint32
	}
	var pts []point
	var target, current float64
	for i, e := range eps {
		target += float64(max(e.weight, 1)) / total * scale
		n := uint64(target - current + 0.5)
		current += float64(n)
		for j := range n {
			pts = append(pts, point{xxhash.Sum64String(e.addr + "_" + strconv.FormatUint(j, 10)), uint32(i)})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return int(a.o) - int(b.o)
	})
	r.hashes = make([]uint64, len(pts))
	r.owners = make([]uint32, len(pts))
	for i, p := range pts {
		r.hashes[i], r.owners[i] = p.h, p.o
	}
	return r
}

// pick walks clockwise from the request's point to the first available
// endpoint: the same endpoint a ring without the unavailable ones gives.
func (r *ringHash) pick(k hashKey, ok func(*endpoint) bool) *endpoint {
	n := len(r.hashes)
	if n == 0 {
		return nil
	}
	if !k.ok {
		return randomAvailable(r.endpoints, ok)
	}
	i, _ := slices.BinarySearch(r.hashes, k.hash)
	for j := range n {
		if e := r.endpoints[r.owners[(i+j)%n]]; ok(e) {
			return e
		}
	}
	return nil
}

// maglev is Envoy's MAGLEV: a lookup table of a prime size in which each
// endpoint fills slots along its own permutation, in proportion to its
// weight. Built once per endpoint set.
type maglev struct {
	endpoints []*endpoint
	table     []uint32
}

var _ balancer = (*maglev)(nil)

func newMaglev(eps []*endpoint, size uint64) *maglev {
	m := &maglev{endpoints: eps}
	if len(eps) == 0 {
		return m
	}
	offset := make([]uint64, len(eps))
	skip := make([]uint64, len(eps))
	next := make([]uint64, len(eps))  // position in each endpoint's permutation
	count := make([]uint64, len(eps)) // slots each endpoint holds
	var maxW float64
	for i, e := range eps {
		offset[i] = xxhash.Sum64String(e.addr) % size
		skip[i] = xxhash.Sum64String(e.addr+"_skip")%(size-1) + 1
		maxW = max(maxW, float64(max(e.weight, 1)))
	}
	const empty = ^uint32(0)
	m.table = make([]uint32, size)
	for i := range m.table {
		m.table[i] = empty
	}
	filled := uint64(0)
	for round := 1.0; filled < size; round++ {
		for i, e := range eps {
			// Weighted: an endpoint takes a slot per round only while its
			// share (weight/max weight per round) is not used up.
			for float64(count[i]) < round*float64(max(e.weight, 1))/maxW && filled < size {
				// size is prime, so the permutation visits every slot.
				for {
					c := (offset[i] + next[i]*skip[i]) % size
					next[i]++
					if m.table[c] == empty {
						m.table[c] = uint32(i)
						filled++
						count[i]++
						break
					}
				}
			}
		}
	}
	return m
}

func (m *maglev) pick(k hashKey, ok func(*endpoint) bool) *endpoint {
	n := uint64(len(m.table))
	if n == 0 {
		return nil
	}
	if !k.ok {
		return randomAvailable(m.endpoints, ok)
	}
	i := k.hash % n
	if e := m.endpoints[m.table[i]]; ok(e) {
		return e
	}
	// An unavailable endpoint's slots fall to the next slots in the table
	// (deterministic per key).
	for j := uint64(1); j < n; j++ {
		if e := m.endpoints[m.table[(i+j)%n]]; ok(e) {
			return e
		}
	}
	return nil
}
