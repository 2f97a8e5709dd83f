package rbac

import (
	"fmt"
	"net/netip"
	"regexp"
	"weft.dev/weft/internal/proxy/xdswire"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// This file compiles envoy.config.rbac.v3.Permission and Principal trees
// into matchers. Both kinds evaluate against the same Request, so they
// share one small interface, as Envoy's RBAC::Matcher.

type matcher interface {
	matches(r *Request) bool
}

type anyMatcher struct{}

func (anyMatcher) matches(*Request) bool { return true }

type andMatcher []matcher

func (a andMatcher) matches(r *Request) bool {
	for _, m := range a {
		if !m.matches(r) {
			return false
		}
	}
	return true
}

type orMatcher []matcher

func (o orMatcher) matches(r *Request) bool {
	for _, m := range o {
		if m.matches(r) {
			return true
		}
	}
	return false
}

type notMatcher struct{ m matcher }

func (n notMatcher) matches(r *Request) bool { return !n.m.matches(r) }

type headerMatcher struct{ h headerMatch }

func (h *headerMatcher) matches(r *Request) bool { return h.h.matchRequest(r) }

type destPortMatcher uint32

func (p destPortMatcher) matches(r *Request) bool { return r.DestinationPort == uint32(p) }

// destPortRangeMatcher is the half-open range [start, end).
type destPortRangeMatcher struct{ start, end uint32 }

func (p destPortRangeMatcher) matches(r *Request) bool {
	return p.start <= r.DestinationPort && r.DestinationPort < p.end
}

type ipSource uint8

const (
	ipDestination  ipSource = iota // the local address the connection arrived on
	ipDirectRemote                 // the TCP peer (direct_remote_ip, and the deprecated source_ip)
	ipRemote                       // the original client (remote_ip)
)

type ipMatcher struct {
	prefix netip.Prefix
	src    ipSource
}

func (m ipMatcher) matches(r *Request) bool {
	var a netip.Addr
	switch m.src {
	case ipDestination:
		a = r.DestinationIP
	case ipDirectRemote:
		a = r.DirectRemoteIP
	case ipRemote:
		a = r.RemoteIP
		if !a.IsValid() {
			a = r.DirectRemoteIP
		}
	}
	return a.IsValid() && m.prefix.Contains(a.Unmap())
}

type serverNameMatcher struct{ s stringMatch }

// matches compares the SNI; a connection without one has "" (Envoy's
// requestedServerName), which an exact "" or a regex like ".*" matches.
func (m *serverNameMatcher) matches(r *Request) bool { return m.s.match(r.ServerName) }

type urlPathMatcher struct{ s stringMatch }

func (m *urlPathMatcher) matches(r *Request) bool {
	if r.Path == "" {
		return false // Envoy: no :path header, no match
	}
	return m.s.match(trimQuery(r.Path))
}

type uriTemplateMatcher struct {
	template string
	re       *regexp.Regexp
}

func (m *uriTemplateMatcher) matches(r *Request) bool { return m.re.MatchString(trimQuery(r.Path)) }

type metadataMatcher struct {
	filter string
	path   []string
	value  valueMatcher
	invert bool
}

func (m *metadataMatcher) matches(r *Request) bool {
	v, found := lookupMetadata(r.Metadata, m.filter, m.path)
	return m.value.matchValue(v, found) != m.invert
}

// authenticatedMatcher is Principal.authenticated: the connection is TLS
// and, when a name is given, a URI SAN, else a DNS SAN, else the subject of
// the peer certificate matches it (Envoy's AuthenticatedMatcher).
type authenticatedMatcher struct {
	name *stringMatch // nil: any TLS connection
}

func (m *authenticatedMatcher) matches(r *Request) bool {
	p := r.Peer
	if p == nil {
		return false
	}
	if m.name == nil {
		return true
	}
	for _, u := range p.URISANs {
		if m.name.match(u) {
			return true
		}
	}
	for _, d := range p.DNSSANs {
		if m.name.match(d) {
			return true
		}
	}
	return m.name.match(p.Subject)
}

func compilePermission(path string, p *rbacv3.Permission) (matcher, error) {
	if p == nil {
		return nil, fmt.Errorf("%s: missing permission", path)
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return anyMatcher{}, nil
	case *rbacv3.Permission_AndRules:
		ms, err := compilePermissions(path+".and_rules.rules", r.AndRules.GetRules())
		return andMatcher(ms), err
	case *rbacv3.Permission_OrRules:
		ms, err := compilePermissions(path+".or_rules.rules", r.OrRules.GetRules())
		return orMatcher(ms), err
	case *rbacv3.Permission_NotRule:
		m, err := compilePermission(path+".not_rule", r.NotRule)
		return notMatcher{m}, err
	case *rbacv3.Permission_Header:
		h, err := compileHeaderMatcher(path+".header", r.Header)
		return &headerMatcher{h}, err
	case *rbacv3.Permission_UrlPath:
		return compileURLPath(path+".url_path", r.UrlPath)
	case *rbacv3.Permission_DestinationIp:
		return compileIP(path+".destination_ip", r.DestinationIp, ipDestination)
	case *rbacv3.Permission_DestinationPort:
		return destPortMatcher(r.DestinationPort), nil
	case *rbacv3.Permission_DestinationPortRange:
		start, end := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if start < 0 || start > 65536 || end < 0 || end > 65536 || start >= end {
			return nil, fmt.Errorf("%s.destination_port_range: [%d, %d) is not a valid port range", path, start, end)
		}
		return destPortRangeMatcher{start: uint32(start), end: uint32(end)}, nil
	case *rbacv3.Permission_Metadata:
		return compileMetadata(path+".metadata", r.Metadata)
	case *rbacv3.Permission_SourcedMetadata:
		return compileSourcedMetadata(path+".sourced_metadata", r.SourcedMetadata)
	case *rbacv3.Permission_RequestedServerName:
		s, err := compileStringMatcher(path+".requested_server_name", r.RequestedServerName)
		return &serverNameMatcher{s}, err
	case *rbacv3.Permission_UriTemplate:
		return compileURITemplateRule(path+".uri_template", r.UriTemplate)
	case *rbacv3.Permission_Matcher:
		return nil, fmt.Errorf("%s.matcher: RBAC matcher extensions are not supported", path)
	case nil:
		return nil, fmt.Errorf("%s: permission has no rule", path)
	default:
		return nil, fmt.Errorf("%s: unsupported permission rule %T", path, r)
	}
}

func compilePermissions(path string, ps []*rbacv3.Permission) ([]matcher, error) {
	out := make([]matcher, 0, len(ps))
	for i, p := range ps {
		m, err := compilePermission(fmt.Sprintf("%s[%d]", path, i), p)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func compilePrincipal(path string, p *rbacv3.Principal) (matcher, error) {
	if p == nil {
		return nil, fmt.Errorf("%s: missing principal", path)
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return anyMatcher{}, nil
	case *rbacv3.Principal_AndIds:
		ms, err := compilePrincipals(path+".and_ids.ids", id.AndIds.GetIds())
		return andMatcher(ms), err
	case *rbacv3.Principal_OrIds:
		ms, err := compilePrincipals(path+".or_ids.ids", id.OrIds.GetIds())
		return orMatcher(ms), err
	case *rbacv3.Principal_NotId:
		m, err := compilePrincipal(path+".not_id", id.NotId)
		return notMatcher{m}, err
	case *rbacv3.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			return &authenticatedMatcher{}, nil
		}
		s, err := compileStringMatcher(path+".authenticated.principal_name", id.Authenticated.GetPrincipalName())
		return &authenticatedMatcher{name: &s}, err
	case *rbacv3.Principal_SourceIp:
		return compileIP(path+".source_ip", id.SourceIp, ipDirectRemote)
	case *rbacv3.Principal_DirectRemoteIp:
		return compileIP(path+".direct_remote_ip", id.DirectRemoteIp, ipDirectRemote)
	case *rbacv3.Principal_RemoteIp:
		return compileIP(path+".remote_ip", id.RemoteIp, ipRemote)
	case *rbacv3.Principal_Header:
		h, err := compileHeaderMatcher(path+".header", id.Header)
		return &headerMatcher{h}, err
	case *rbacv3.Principal_UrlPath:
		return compileURLPath(path+".url_path", id.UrlPath)
	case *rbacv3.Principal_Metadata:
		return compileMetadata(path+".metadata", id.Metadata)
	case *rbacv3.Principal_SourcedMetadata:
		return compileSourcedMetadata(path+".sourced_metadata", id.SourcedMetadata)
	case *rbacv3.Principal_FilterState:
		return nil, fmt.Errorf("%s.filter_state: filter state principals are not supported (Weft's sidecar identifies peers with authenticated)", path)
	case *rbacv3.Principal_Custom:
		return nil, fmt.Errorf("%s.custom: custom principal extensions are not supported", path)
	case nil:
		return nil, fmt.Errorf("%s: principal has no identifier", path)
	default:
		return nil, fmt.Errorf("%s: unsupported principal identifier %T", path, id)
	}
}

func compilePrincipals(path string, ps []*rbacv3.Principal) ([]matcher, error) {
	out := make([]matcher, 0, len(ps))
	for i, p := range ps {
		m, err := compilePrincipal(fmt.Sprintf("%s[%d]", path, i), p)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func compileURLPath(path string, pm *matcherv3.PathMatcher) (matcher, error) {
	sm := pm.GetPath()
	if sm == nil {
		return nil, fmt.Errorf("%s: missing path rule", path)
	}
	s, err := compileStringMatcher(path+".path", sm)
	if err != nil {
		return nil, err
	}
	return &urlPathMatcher{s}, nil
}

func compileIP(path string, c *corev3.CidrRange, src ipSource) (matcher, error) {
	pfx, err := compileCIDR(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ipMatcher{prefix: pfx, src: src}, nil
}

// compileCIDR turns a CidrRange into a masked prefix. An unset prefix_len
// is 0, as in Envoy (the range then holds every address of its family).
func compileCIDR(c *corev3.CidrRange) (netip.Prefix, error) {
	addr, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q: %w", c.GetAddressPrefix(), err)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q: zones are not allowed", c.GetAddressPrefix())
	}
	bits := 0
	if c.GetPrefixLen() != nil {
		bits = int(c.GetPrefixLen().GetValue())
	}
	if bits > addr.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d is longer than the %d bits of %s", bits, addr.BitLen(), addr)
	}
	return netip.PrefixFrom(addr, bits).Masked(), nil
}

func compileMetadata(path string, m *matcherv3.MetadataMatcher) (matcher, error) {
	if m == nil {
		return nil, fmt.Errorf("%s: missing metadata matcher", path)
	}
	if m.GetFilter() == "" {
		return nil, fmt.Errorf("%s.filter: must not be empty", path)
	}
	if len(m.GetPath()) == 0 {
		return nil, fmt.Errorf("%s.path: must not be empty", path)
	}
	keys := make([]string, 0, len(m.GetPath()))
	for i, seg := range m.GetPath() {
		k := seg.GetKey()
		if k == "" {
			return nil, fmt.Errorf("%s.path[%d].key: must not be empty", path, i)
		}
		keys = append(keys, k)
	}
	v, err := compileValueMatcher(path+".value", m.GetValue())
	if err != nil {
		return nil, err
	}
	return &metadataMatcher{filter: m.GetFilter(), path: keys, value: v, invert: m.GetInvert()}, nil
}

func compileSourcedMetadata(path string, s *rbacv3.SourcedMetadata) (matcher, error) {
	if s.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC {
		return nil, fmt.Errorf("%s.metadata_source: %s is not supported (only DYNAMIC)", path, s.GetMetadataSource())
	}
	return compileMetadata(path+".metadata_matcher", s.GetMetadataMatcher())
}

func compileURITemplateRule(path string, ext *corev3.TypedExtensionConfig) (matcher, error) {
	var cfg uritemplatev3.UriTemplateMatchConfig
	if ext.GetTypedConfig() == nil {
		return nil, fmt.Errorf("%s.typed_config: missing", path)
	}
	if err := xdswire.UnmarshalAny(ext.GetTypedConfig(), &cfg); err != nil {
		return nil, fmt.Errorf("%s.typed_config: only %s is supported: %w", path, "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig", err)
	}
	re, err := compileURITemplate(cfg.GetPathTemplate())
	if err != nil {
		return nil, fmt.Errorf("%s.typed_config.path_template: %w", path, err)
	}
	return &uriTemplateMatcher{template: cfg.GetPathTemplate(), re: re}, nil
}
