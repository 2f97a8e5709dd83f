package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// Filter chain matching, as Envoy's listener does it: the criteria of
// filter_chain_match are tried in a fixed order — destination_port, then
// the destination IP against prefix_ranges (the longest prefix that
// contains it), then server_names against the TLS ClientHello's SNI (the
// exact name, then the most specific wildcard "*.suffix"), then
// transport_protocol, then application_protocols —
// and at each step the chains that name the connection's value win over
// the chains that leave the criterion out; the others are never
// reconsidered (no backtracking). When nothing matches, the listener's
// default_filter_chain takes the connection, else it is refused.

// chainMatch is one chain's filter_chain_match, parsed.
type chainMatch struct {
	port      uint32         // destination_port; 0: any
	prefixes  []netip.Prefix // prefix_ranges, masked; empty: any
	names     []string       // server_names, lower case; empty: any
	transport string         // transport_protocol; "": any
	appProtos []string       // application_protocols; empty: any
}

// parseChainMatch reads m, refusing the criteria the proxy does not
// match on. Errors start with the field name, below filter_chain_match.
func parseChainMatch(m *listener.FilterChainMatch) (chainMatch, error) {
	var cm chainMatch
	if m == nil {
		return cm, nil
	}
	switch {
	case len(m.GetDirectSourcePrefixRanges()) > 0:
		return cm, errors.New("direct_source_prefix_ranges: not supported")
	case m.GetSourceType() != listener.FilterChainMatch_ANY:
		return cm, errors.New("source_type: not supported")
	case len(m.GetSourcePrefixRanges()) > 0:
		return cm, errors.New("source_prefix_ranges: not supported")
	case len(m.GetSourcePorts()) > 0:
		return cm, errors.New("source_ports: not supported")
	case m.GetAddressSuffix() != "" || m.GetSuffixLen() != nil:
		return cm, errors.New("address_suffix: not supported")
	}
	if p := m.GetDestinationPort(); p != nil {
		if p.GetValue() == 0 || p.GetValue() > 65535 {
			return cm, fmt.Errorf("destination_port: %d is not a port", p.GetValue())
		}
		cm.port = p.GetValue()
	}
	for i, r := range m.GetPrefixRanges() {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return cm, fmt.Errorf("prefix_ranges[%d].address_prefix: %q is not an IP address", i, r.GetAddressPrefix())
		}
		a = a.Unmap()
		bits := a.BitLen()
		if pl := r.GetPrefixLen(); pl != nil {
			bits = int(pl.GetValue())
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return cm, fmt.Errorf("prefix_ranges[%d].prefix_len: %d is too long for %s", i, bits, a)
		}
		cm.prefixes = append(cm.prefixes, p)
	}
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(n)
		switch {
		case n == "":
			return cm, fmt.Errorf("server_names[%d]: empty", i)
		case strings.Contains(n[1:], "*"), strings.HasPrefix(n, "*") && !strings.HasPrefix(n, "*."):
			// Envoy's wildcards are a whole leftmost label: "*.example.com".
			return cm, fmt.Errorf("server_names[%d]: %q is not a name or a wildcard \"*.suffix\"", i, n)
		}
		cm.names = append(cm.names, n)
	}
	cm.transport = m.GetTransportProtocol()
	if cm.transport != "" && cm.transport != transportTLS && cm.transport != transportRaw {
		return cm, fmt.Errorf("transport_protocol: %q is not one of %q, %q", cm.transport, transportTLS, transportRaw)
	}
	cm.appProtos = m.GetApplicationProtocols()
	for i, p := range cm.appProtos {
		if p == "" {
			return cm, fmt.Errorf("application_protocols[%d]: empty", i)
		}
	}
	return cm, nil
}

// chainIndex finds a connection's chain among a listener's filter_chains
// in Envoy's order. Immutable once built.
type chainIndex struct {
	byPort  map[uint32]*ipLevel
	anyPort *ipLevel
}

type ipLevel struct {
	// exact holds the single-address prefixes (a service VIP's /32 or
	// /128), the longest there are: one map lookup per connection even
	// with a chain per VIP. prefixed holds the others, longest first.
	exact    map[netip.Addr]*nameLevel
	prefixed []prefixLevel
	anyIP    *nameLevel
}

type prefixLevel struct {
	p    netip.Prefix
	next *nameLevel
}

// nameLevel is server_names: exact names, wildcards keyed by their
// suffix with its dot (".example.com" for "*.example.com"), and the
// chains that name none.
type nameLevel struct {
	exact, wild map[string]*transportLevel
	anyName     *transportLevel
}

// level returns the transport level of server name n ("" for the chains
// without server_names), creating it.
func (nl *nameLevel) level(n string) *transportLevel {
	m, key := &nl.exact, n
	switch {
	case n == "":
		if nl.anyName == nil {
			nl.anyName = &transportLevel{}
		}
		return nl.anyName
	case strings.HasPrefix(n, "*."):
		m, key = &nl.wild, n[1:]
	}
	if *m == nil {
		*m = map[string]*transportLevel{}
	}
	if (*m)[key] == nil {
		(*m)[key] = &transportLevel{}
	}
	return (*m)[key]
}

// find returns the transport level a connection with SNI sni takes: its
// exact name, else the longest wildcard suffix, else the chains without
// server_names (also for a connection without SNI).
func (nl *nameLevel) find(sni string) *transportLevel {
	if sni != "" {
		if tl := nl.exact[sni]; tl != nil {
			return tl
		}
		for i := 0; i < len(sni); i++ {
			if sni[i] == '.' {
				if tl := nl.wild[sni[i:]]; tl != nil {
					return tl
				}
			}
		}
	}
	return nl.anyName
}

type transportLevel struct {
	byTransport  map[string]*protoLevel
	anyTransport *protoLevel
}

type protoLevel struct {
	byProto  map[string]*indexed
	anyProto *indexed
}

// indexed is a chain and where it is in the listener (for errors).
type indexed struct {
	cc    *chainConfig
	field string
}

// buildChainIndex indexes chains (field names each, for errors). Two
// chains that match the same connection are refused, naming both, as
// Envoy refuses them.
func buildChainIndex(chains []*chainConfig, fields []string) (*chainIndex, error) {
	ix := &chainIndex{byPort: map[uint32]*ipLevel{}}
	for i, cc := range chains {
		m := cc.match
		var ipl *ipLevel
		if m.port == 0 {
			if ix.anyPort == nil {
				ix.anyPort = &ipLevel{}
			}
			ipl = ix.anyPort
		} else {
			if ix.byPort[m.port] == nil {
				ix.byPort[m.port] = &ipLevel{}
			}
			ipl = ix.byPort[m.port]
		}
		var nls []*nameLevel
		if len(m.prefixes) == 0 {
			if ipl.anyIP == nil {
				ipl.anyIP = &nameLevel{}
			}
			nls = append(nls, ipl.anyIP)
		}
		for _, p := range m.prefixes {
			if p.IsSingleIP() {
				if ipl.exact == nil {
					ipl.exact = map[netip.Addr]*nameLevel{}
				}
				if ipl.exact[p.Addr()] == nil {
					ipl.exact[p.Addr()] = &nameLevel{}
				}
				nls = append(nls, ipl.exact[p.Addr()])
				continue
			}
			j := slices.IndexFunc(ipl.prefixed, func(pl prefixLevel) bool { return pl.p == p })
			if j < 0 {
				ipl.prefixed = append(ipl.prefixed, prefixLevel{p: p, next: &nameLevel{}})
				j = len(ipl.prefixed) - 1
			}
			nls = append(nls, ipl.prefixed[j].next)
		}
		var tls []*transportLevel
		for _, nl := range nls {
			if len(m.names) == 0 {
				tls = append(tls, nl.level(""))
			}
			for _, n := range m.names {
				tls = append(tls, nl.level(n))
			}
		}
		for _, tl := range tls {
			var pl *protoLevel
			if m.transport == "" {
				if tl.anyTransport == nil {
					tl.anyTransport = &protoLevel{}
				}
				pl = tl.anyTransport
			} else {
				if tl.byTransport == nil {
					tl.byTransport = map[string]*protoLevel{}
				}
				if tl.byTransport[m.transport] == nil {
					tl.byTransport[m.transport] = &protoLevel{}
				}
				pl = tl.byTransport[m.transport]
			}
			me := &indexed{cc: cc, field: fields[i]}
			if len(m.appProtos) == 0 {
				if pl.anyProto != nil && pl.anyProto.cc != cc {
					return nil, dupMatch(pl.anyProto.field, fields[i])
				}
				pl.anyProto = me
			}
			for _, ap := range m.appProtos {
				if pl.byProto == nil {
					pl.byProto = map[string]*indexed{}
				}
				if o := pl.byProto[ap]; o != nil && o.cc != cc {
					return nil, dupMatch(o.field, fields[i])
				}
				pl.byProto[ap] = me
			}
		}
	}
	for _, ipl := range ix.levels() {
		slices.SortStableFunc(ipl.prefixed, func(a, b prefixLevel) int { return cmp.Compare(b.p.Bits(), a.p.Bits()) })
	}
	return ix, nil
}

func (ix *chainIndex) levels() []*ipLevel {
	out := make([]*ipLevel, 0, len(ix.byPort)+1)
	for _, l := range ix.byPort {
		out = append(out, l)
	}
	if ix.anyPort != nil {
		out = append(out, ix.anyPort)
	}
	return out
}

func dupMatch(first, second string) error {
	return fmt.Errorf("%s.filter_chain_match: matches the same connections as %s's (multiple filter chains with the same matching rules)", second, first)
}

// match returns the chain of a connection to dst (its destination,
// restored by use_original_dst) with TLS server name sni ("": none or
// not TLS), of transport protocol transport and application protocols
// apps, or nil. As Envoy, the first of apps (in the client's order) that
// a chain names wins; then a chain that names none.
func (ix *chainIndex) match(dst netip.AddrPort, sni, transport string, apps []string) *chainConfig {
	if ix == nil {
		return nil
	}
	ipl := ix.byPort[uint32(dst.Port())]
	if ipl == nil {
		ipl = ix.anyPort
	}
	if ipl == nil {
		return nil
	}
	ip := dst.Addr().Unmap().WithZone("")
	nl := ipl.exact[ip]
	if nl == nil && ip.IsValid() {
		for _, pl := range ipl.prefixed {
			if pl.p.Contains(ip) {
				nl = pl.next
				break
			}
		}
	}
	if nl == nil {
		nl = ipl.anyIP
	}
	if nl == nil {
		return nil
	}
	tl := nl.find(strings.ToLower(sni))
	if tl == nil {
		return nil
	}
	pl := tl.byTransport[transport]
	if pl == nil {
		pl = tl.anyTransport
	}
	if pl == nil {
		return nil
	}
	for _, app := range apps {
		if c := pl.byProto[app]; c != nil {
			return c.cc
		}
	}
	if pl.anyProto != nil {
		return pl.anyProto.cc
	}
	return nil
}
