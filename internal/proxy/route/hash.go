package route

import (
	"fmt"
	"net"
	"net/http"
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

// hashKey is a request's hash; ok is false when no policy produced a value.
type hashKey struct {
	hash uint64
	ok   bool
}

// RequestHash is the request's hash by the route's hash policies (for the
// hashing load balancers); ok is false when no policy produced a value.
// A cookie policy may add a Set-Cookie header to w. Called on the request
// goroutine.
func (re *Entry) RequestHash(r *http.Request, w http.ResponseWriter) (hash uint64, ok bool) {
	k := requestHash(re.hash, r, w)
	return k.hash, k.ok
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
