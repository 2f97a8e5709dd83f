// Package capture computes and installs the iptables rules that send a
// pod's TCP traffic through its weft-proxy without the application knowing:
// outbound connections are REDIRECTed to the proxy's outbound capture port,
// inbound ones to its inbound capture port, and the proxy's own traffic
// (matched by its UID or GID) is left alone. The rules follow Istio's
// istio-iptables in shape and in the meaning and defaults of every knob, so
// what users know about excluding traffic from Istio's capture holds here.
//
// It runs once, as the pod's init container (weft-proxy capture), in the
// pod's network namespace. Rules are applied with one iptables-restore
// --noflush call per address family, so a family's rules appear all at once
// or not at all, and everything outside Weft's own chains (and the jumps to
// them) is left as it was. The sidecar injector turns a pod's
// traffic.sidecar.istio.io/* annotations into the command's flags with
// ArgsFromAnnotations.
package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The nat-table chains Weft owns. Clean removes exactly these and the
// jumps to them from PREROUTING and OUTPUT.
const (
	ChainInbound    = "WEFT_INBOUND"     // PREROUTING jumps here: which inbound ports are captured
	ChainInRedirect = "WEFT_IN_REDIRECT" // REDIRECT to the inbound capture port
	ChainOutput     = "WEFT_OUTPUT"      // OUTPUT jumps here: which outbound connections are captured
	ChainRedirect   = "WEFT_REDIRECT"    // REDIRECT to the outbound capture port
)

// Chains lists Weft's chains in the order they are declared.
var Chains = []string{ChainInbound, ChainInRedirect, ChainOutput, ChainRedirect}

// Defaults, as Istio's.
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultProxyUID     = 1337
	DefaultProxyGID     = 1337
)

// ProxyPorts are the proxy's own ports, never captured inbound: admin
// (15000), the capture ports (15001, 15006), and the ports Istio's sidecar
// serves status, health and Prometheus metrics on (15020, 15021, 15090),
// which Istio excludes too.
var ProxyPorts = []uint16{15000, 15001, 15006, 15020, 15021, 15090}

// Family is an IP address family: its rules go to iptables or ip6tables.
type Family int

// The two families.
const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// loopback is the host loopback address Istio exempts (its
// HostIPv4LoopbackCidr default, and ::1).
func (f Family) loopback() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.1/32"
}

// inboundPassthroughSource is the source address the proxy uses to reach
// the application on inbound connections when it must not be captured
// again (Istio's 127.0.0.6 and ::6).
func (f Family) inboundPassthroughSource() string {
	if f == IPv6 {
		return "::6/128"
	}
	return "127.0.0.6/32"
}

// Ranges is a set of destination CIDRs, or every destination.
type Ranges struct {
	All      bool
	Prefixes []netip.Prefix
}

// ParseRanges parses Istio's syntax: "*" (everything), "" (nothing) or a
// comma-separated list of CIDRs (a bare address means just that address).
func ParseRanges(s string) (Ranges, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ranges{}, nil
	}
	if s == "*" {
		return Ranges{All: true}, nil
	}
	var r Ranges
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
			continue
		case part == "*":
			return Ranges{}, fmt.Errorf("%q: \"*\" must stand alone", s)
		case strings.Contains(part, "/"):
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return Ranges{}, fmt.Errorf("%q: %w", part, err)
			}
			r.Prefixes = append(r.Prefixes, p.Masked())
		default:
			a, err := netip.ParseAddr(part)
			if err != nil {
				return Ranges{}, fmt.Errorf("%q: not a CIDR or an IP address", part)
			}
			a = a.Unmap()
			r.Prefixes = append(r.Prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	slices.SortFunc(r.Prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	r.Prefixes = slices.Compact(r.Prefixes)
	return r, nil
}

// of returns the prefixes of one family.
func (r Ranges) of(f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range r.Prefixes {
		if p.Addr().Is6() == (f == IPv6) {
			out = append(out, p)
		}
	}
	return out
}

// hasLoopback reports whether a prefix of r holds a loopback address: the
// application's loopback traffic must then be captured too (Istio's
// HasLoopBackIP).
func (r Ranges) hasLoopback() bool {
	for _, p := range r.Prefixes {
		if p.Addr().IsLoopback() || p.Contains(netip.MustParseAddr("127.0.0.1")) || p.Contains(netip.IPv6Loopback()) {
			return true
		}
	}
	return false
}

func (r Ranges) String() string {
	if r.All {
		return "*"
	}
	s := make([]string, len(r.Prefixes))
	for i, p := range r.Prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Ports is a set of TCP ports, or every port.
type Ports struct {
	All   bool
	Ports []uint16
}

// ParsePorts parses Istio's syntax: "*" (every port), "" (none) or a
// comma-separated list of ports.
func ParsePorts(s string) (Ports, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ports{}, nil
	}
	if s == "*" {
		return Ports{All: true}, nil
	}
	var p Ports
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.ParseUint(part, 10, 16)
		if err != nil || n == 0 {
			return Ports{}, fmt.Errorf("%q: not a port (1-65535)", part)
		}
		p.Ports = append(p.Ports, uint16(n))
	}
	slices.Sort(p.Ports)
	p.Ports = slices.Compact(p.Ports)
	return p, nil
}

func (p Ports) String() string {
	if p.All {
		return "*"
	}
	s := make([]string, len(p.Ports))
	for i, n := range p.Ports {
		s[i] = strconv.Itoa(int(n))
	}
	return strings.Join(s, ",")
}

// Config is what to capture. The zero value captures nothing; Default
// gives Istio's defaults.
type Config struct {
	// OutboundPort is where outbound connections are redirected (the
	// proxy's outbound capture listener).
	OutboundPort uint16
	// InboundPort is where inbound connections are redirected.
	InboundPort uint16
	// ProxyUIDs and ProxyGIDs identify the proxy's own traffic, which is
	// never captured outbound (no loop). At least one of them is needed.
	ProxyUIDs, ProxyGIDs []uint32
	// IncludeOutbound are the destinations whose outbound connections are
	// captured ("*": all; empty: none).
	IncludeOutbound Ranges
	// ExcludeOutbound are destinations never captured, even if included.
	ExcludeOutbound []netip.Prefix
	// IncludeInbound are the local ports whose inbound connections are
	// captured ("*": all; empty: none).
	IncludeInbound Ports
	// ExcludeInbound are local ports not captured when IncludeInbound is
	// "*" (as in Istio, a list of included ports ignores it). ProxyPorts
	// and the capture ports are always excluded.
	ExcludeInbound []uint16
	// ExcludeOutboundPorts are destination ports never captured outbound.
	ExcludeOutboundPorts []uint16
	// IncludeOutboundPorts are destination ports captured outbound
	// whatever the destination address, unless it is excluded.
	IncludeOutboundPorts []uint16
	// ExcludeInterfaces are network interfaces whose traffic is never
	// captured, in or out.
	ExcludeInterfaces []string
}

// Default returns Istio's defaults: capture every outbound destination and
// every inbound port, the proxy running as 1337:1337.
func Default() Config {
	return Config{
		OutboundPort:    DefaultOutboundPort,
		InboundPort:     DefaultInboundPort,
		ProxyUIDs:       []uint32{DefaultProxyUID},
		ProxyGIDs:       []uint32{DefaultProxyGID},
		IncludeOutbound: Ranges{All: true},
		IncludeInbound:  Ports{All: true},
	}
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if c.OutboundPort == 0 {
		return fmt.Errorf("outbound port 0: must be 1-65535")
	}
	if c.InboundPort == 0 {
		return fmt.Errorf("inbound port 0: must be 1-65535")
	}
	if c.OutboundPort == c.InboundPort {
		return fmt.Errorf("outbound and inbound ports are both %d: they must differ", c.InboundPort)
	}
	for _, name := range c.ExcludeInterfaces {
		if !validInterface(name) {
			return fmt.Errorf("interface %q: not a network interface name", name)
		}
	}
	if len(c.ProxyUIDs) == 0 && len(c.ProxyGIDs) == 0 {
		return fmt.Errorf("no proxy UID and no proxy GID: the proxy's own connections would be captured (a loop)")
	}
	return nil
}

// validInterface reports whether name can be a Linux interface name (at
// most 15 bytes, no space, slash or colon), so it is safe in a rule.
func validInterface(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == ':' || r > '~' {
			return false
		}
	}
	return true
}

// excludedInbound returns the inbound ports never captured: the proxy's
// own and the user's, sorted.
func (c Config) excludedInbound() []uint16 {
	out := slices.Concat(ProxyPorts, []uint16{c.OutboundPort, c.InboundPort}, c.ExcludeInbound)
	slices.Sort(out)
	return slices.Compact(out)
}

// Rules returns the nat-table rules of one family, in iptables-restore
// syntax without the table header and COMMIT: Weft's chain declarations,
// a flush of each (so installing twice gives the same rules), then the
// rules in order.
func Rules(c Config, f Family) []string {
	return slices.Concat(prologue(), rules(c, f))
}

// prologue declares Weft's chains (creating those that do not exist) and
// flushes them.
func prologue() []string {
	var r []string
	for _, ch := range Chains {
		r = append(r, ":"+ch+" - [0:0]")
	}
	for _, ch := range Chains {
		r = append(r, "-F "+ch)
	}
	return r
}

// rules returns the "-A" lines of c for family f.
func rules(c Config, f Family) []string {
	var r []string
	add := func(chain string, spec ...string) {
		r = append(r, "-A "+chain+" "+strings.Join(spec, " "))
	}
	port := func(p uint16) string { return strconv.Itoa(int(p)) }

	add(ChainRedirect, "-p tcp -j REDIRECT --to-ports", port(c.OutboundPort))
	add(ChainInRedirect, "-p tcp -j REDIRECT --to-ports", port(c.InboundPort))

	// Inbound: PREROUTING sees connections arriving from outside the pod.
	if c.IncludeInbound.All || len(c.IncludeInbound.Ports) > 0 {
		add("PREROUTING", "-p tcp -j", ChainInbound)
		for _, i := range c.ExcludeInterfaces {
			add(ChainInbound, "-i", i, "-j RETURN")
		}
		if c.IncludeInbound.All {
			for _, p := range c.excludedInbound() {
				add(ChainInbound, "-p tcp --dport", port(p), "-j RETURN")
			}
			add(ChainInbound, "-p tcp -j", ChainInRedirect)
		} else {
			for _, p := range c.IncludeInbound.Ports {
				add(ChainInbound, "-p tcp --dport", port(p), "-j", ChainInRedirect)
			}
		}
	}

	// Outbound: OUTPUT sees connections made inside the pod, by the
	// application and by the proxy.
	add("OUTPUT", "-j", ChainOutput)
	for _, i := range c.ExcludeInterfaces {
		add(ChainOutput, "-o", i, "-j RETURN")
	}
	for _, p := range c.ExcludeOutboundPorts {
		add(ChainOutput, "-p tcp --dport", port(p), "-j RETURN")
	}
	// The proxy reaching the application from the inbound passthrough
	// address is never captured.
	add(ChainOutput, "-s", f.inboundPassthroughSource(), "-o lo -j RETURN")
	owner := func(kind string, ids []uint32) {
		for _, id := range ids {
			sid := strconv.FormatUint(uint64(id), 10)
			// The proxy connecting to this pod's own non-loopback address
			// (a call to a service this pod serves) goes through lo: it
			// is inbound traffic for the pod, so capture it as such.
			add(ChainOutput, "! -d", f.loopback(), "-o lo -p tcp -m owner --"+kind+"-owner", sid, "-j", ChainInRedirect)
			// Other loopback traffic of the application stays local,
			// unless loopback destinations are explicitly included.
			if !c.IncludeOutbound.hasLoopback() {
				add(ChainOutput, "-o lo -m owner ! --"+kind+"-owner", sid, "-j RETURN")
			}
			// The proxy's own outbound connections are never captured.
			add(ChainOutput, "-m owner --"+kind+"-owner", sid, "-j RETURN")
		}
	}
	owner("uid", c.ProxyUIDs)
	owner("gid", c.ProxyGIDs)
	add(ChainOutput, "-d", f.loopback(), "-j RETURN")
	for _, p := range c.ExcludeOutbound {
		if p.Addr().Is6() == (f == IPv6) {
			add(ChainOutput, "-d", p.String(), "-j RETURN")
		}
	}
	for _, p := range c.IncludeOutboundPorts {
		add(ChainOutput, "-p tcp --dport", port(p), "-j", ChainRedirect)
	}
	if c.IncludeOutbound.All {
		add(ChainOutput, "-j", ChainRedirect)
	} else {
		for _, p := range c.IncludeOutbound.of(f) {
			add(ChainOutput, "-d", p.String(), "-j", ChainRedirect)
		}
	}
	return r
}

// Ruleset returns the complete iptables-restore --noflush input that
// installs c for one family, as --dry-run prints it.
func Ruleset(c Config, f Family) string {
	return "*nat\n" + strings.Join(Rules(c, f), "\n") + "\nCOMMIT\n"
}
