package rbac

import (
	"fmt"
	"log/slog"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/xdswire"
)

// This file is the RBAC engine as a network filter
// (envoy.filters.network.rbac): Istio puts one per action before the
// tcp_proxy of a workload's TCP filter chains. Its rules can only match
// what a connection has — addresses, ports, the TLS peer and SNI — so
// the decision is made once, when the connection has been accepted (after
// its TLS handshake), before anything is sent upstream. Envoy decides on
// the connection's first byte (enforcement_type ONE_TIME_ON_FIRST_BYTE):
// the decision is the same, but here a refused client never reaches the
// application, so a server-first protocol's greeting is not sent to it
// either.

// NetworkFilterName is the network filter's name.
const NetworkFilterName = "envoy.filters.network.rbac"

// ConnFilter is one network RBAC filter of a filter chain. Immutable.
type ConnFilter struct {
	engine *compiled
	log    *slog.Logger
}

// NewNetwork builds a network RBAC filter from its typed_config, an
// envoy.extensions.filters.network.rbac.v3.RBAC. Errors name the field.
func (f Factory) NewNetwork(config *anypb.Any) (*ConnFilter, error) {
	if config == nil {
		return nil, fmt.Errorf("typed_config: want envoy.extensions.filters.network.rbac.v3.RBAC")
	}
	var cfg rbacnetv3.RBAC
	if err := xdswire.UnmarshalAny(config, &cfg); err != nil {
		return nil, fmt.Errorf("want envoy.extensions.filters.network.rbac.v3.RBAC: %w", err)
	}
	switch {
	case cfg.GetMatcher() != nil:
		return nil, fmt.Errorf("matcher: the matcher-API form of RBAC is not supported; use rules")
	case cfg.GetShadowMatcher() != nil:
		return nil, fmt.Errorf("shadow_matcher: the matcher-API form of RBAC is not supported; use shadow_rules")
	case cfg.GetDelayDeny() != nil:
		return nil, fmt.Errorf("delay_deny: not supported")
	}
	// What the network filter adds to the HTTP filter's config is how and
	// when it decides (stat_prefix, enforcement_type); the rules are the
	// same messages, compiled the same way.
	e, err := Compile(&rbachttpv3.RBAC{
		Rules:                 cfg.GetRules(),
		ShadowRules:           cfg.GetShadowRules(),
		ShadowRulesStatPrefix: cfg.GetShadowRulesStatPrefix(),
	})
	if err != nil {
		return nil, err
	}
	return &ConnFilter{engine: f.compiled(e), log: f.Logger}, nil
}

// Allows decides a connection: dry-run rules are evaluated and counted,
// then the enforced rules allow it or not (counted in
// weft_proxy_rbac_denied_total, logged at debug). A refused connection is
// to be closed without being relayed.
func (c *ConnFilter) Allows(conn *filter.Connection) bool { return c.AllowsWith(conn, nil) }

// AllowsWith is Allows that also records the shadow rules' result in md,
// the connection's dynamic metadata by filter name (under
// NetworkFilterName, merged with what an earlier RBAC filter wrote), where
// a network ext_authz filter after it looks (Istio's CUSTOM on TCP).
func (c *ConnFilter) AllowsWith(conn *filter.Connection, md map[string]any) bool {
	e := c.engine
	if e.f.enforced == nil && e.f.shadow == nil {
		return true
	}
	req := connRequest(conn)
	d := e.f.Evaluate(req)
	if sm := e.f.ShadowMetadata(d); sm != nil && md != nil {
		merged, _ := md[NetworkFilterName].(map[string]any)
		if merged == nil {
			merged = map[string]any{}
			md[NetworkFilterName] = merged
		}
		for k, v := range sm {
			merged[k] = v
		}
	}
	if e.f.dryRunDenied(d) {
		inc(e.shadowDenied, d.Shadow.Policy)
		if c.log != nil {
			c.log.Debug("dry-run RBAC policy would refuse the connection", append(connAttrs(req), "shadow_policy", orNone(d.Shadow.Policy))...)
		}
	}
	if d.LogHint == LogYes {
		inc(e.logged, d.Policy)
		if c.log != nil {
			c.log.Info("connection audited", append(connAttrs(req), "policy", d.Policy)...)
		}
	}
	if d.Allowed {
		return true
	}
	inc(e.denied, d.Policy)
	if c.log != nil {
		c.log.Debug("connection refused", append(connAttrs(req), "action", e.action.String(), "details", d.ResponseDetails())...)
	}
	return false
}

// connRequest is what RBAC sees of a connection: no HTTP attributes, so
// HTTP matchers (headers, paths, methods) never match it, as in Envoy.
func connRequest(c *filter.Connection) *Request {
	req := &Request{
		DirectRemoteIP:  c.RemoteAddr.Addr().Unmap(),
		DestinationIP:   c.LocalAddr.Addr().Unmap(),
		DestinationPort: uint32(c.LocalAddr.Port()),
	}
	if c.TLS != nil {
		req.ServerName = c.TLS.ServerName
		req.Peer = &Peer{}
	}
	if p := c.Peer; p != nil {
		req.Peer = &Peer{URISANs: p.URISANs, DNSSANs: p.DNSSANs, Subject: p.Subject}
	}
	return req
}

func connAttrs(r *Request) []any {
	attrs := []any{"source_ip", r.DirectRemoteIP.String(), "destination", fmt.Sprintf("%s:%d", r.DestinationIP, r.DestinationPort)}
	if r.Peer != nil && len(r.Peer.URISANs) > 0 {
		attrs = append(attrs, "source_principal", r.Peer.URISANs[0])
	}
	return attrs
}
