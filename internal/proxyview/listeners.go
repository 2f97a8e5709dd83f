package proxyview

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

const (
	hcmFilter      = "envoy.filters.network.http_connection_manager"
	tcpProxyFilter = "envoy.filters.network.tcp_proxy"
)

// Filter narrows a proxy-config table, as istioctl's flags do. Zero
// fields match everything; each table uses the fields that apply to it.
type Filter struct {
	Address   string // listeners, endpoints: the IP
	Port      uint32 // listeners, clusters, endpoints
	Type      string // listeners: HTTP or TCP
	FQDN      string // clusters: the service host
	Subset    string // clusters
	Direction string // clusters: inbound or outbound
	Name      string // routes: the route configuration's name
	Cluster   string // endpoints: the cluster name
	Status    string // endpoints: HEALTHY, UNHEALTHY, …
}

// listenerChain is one row of the listeners table.
type listenerChain struct {
	name, address, port, direction, typ, match, dest string
}

func listenerRows(l *listener.Listener) []listenerChain {
	addr, port := socketAddress(l.GetAddress())
	base := listenerChain{name: l.GetName(), address: addr, port: port, direction: direction(l.GetTrafficDirection())}
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	var out []listenerChain
	for _, fc := range chains {
		r := base
		r.match = chainMatch(fc.GetFilterChainMatch())
		if fc == l.GetDefaultFilterChain() {
			r.match = "default"
		}
		r.typ, r.dest = chainDestination(fc)
		out = append(out, r)
	}
	if len(out) == 0 {
		out = append(out, base)
	}
	return out
}

func socketAddress(a *core.Address) (string, string) {
	if p := a.GetPipe(); p != nil {
		return p.GetPath(), ""
	}
	sa := a.GetSocketAddress()
	return sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)
}

func direction(d core.TrafficDirection) string {
	if d == core.TrafficDirection_UNSPECIFIED {
		return ""
	}
	return d.String()
}

// chainMatch summarises a filter chain match; "ALL" when it has none.
func chainMatch(m *listener.FilterChainMatch) string {
	var parts []string
	if p := m.GetDestinationPort(); p != nil {
		parts = append(parts, fmt.Sprintf("port %d", p.GetValue()))
	}
	if len(m.GetServerNames()) > 0 {
		parts = append(parts, "SNI "+strings.Join(m.GetServerNames(), ","))
	}
	if tp := m.GetTransportProtocol(); tp != "" {
		parts = append(parts, "transport "+tp)
	}
	if len(m.GetApplicationProtocols()) > 0 {
		parts = append(parts, "ALPN "+strings.Join(m.GetApplicationProtocols(), ","))
	}
	var cidrs []string
	for _, c := range m.GetPrefixRanges() {
		cidrs = append(cidrs, fmt.Sprintf("%s/%d", c.GetAddressPrefix(), c.GetPrefixLen().GetValue()))
	}
	if len(cidrs) > 0 {
		parts = append(parts, "dst "+strings.Join(cidrs, ","))
	}
	if len(parts) == 0 {
		return "ALL"
	}
	return strings.Join(parts, "; ")
}

// chainDestination says what a filter chain hands connections to: its
// type (HTTP, TCP) and destination (route configuration or cluster).
func chainDestination(fc *listener.FilterChain) (typ, dest string) {
	for _, f := range fc.GetFilters() {
		tc := f.GetTypedConfig()
		switch {
		case f.GetName() == hcmFilter || strings.HasSuffix(tc.GetTypeUrl(), "HttpConnectionManager"):
			var h hcm.HttpConnectionManager
			if tc == nil || tc.UnmarshalTo(&h) != nil {
				return "HTTP", ""
			}
			if rds := h.GetRds(); rds != nil {
				return "HTTP", "Route: " + rds.GetRouteConfigName()
			}
			if rc := h.GetRouteConfig(); rc != nil {
				dest := "Inline Route: " + rc.GetName()
				if cs := inlineClusters(rc); len(cs) > 0 {
					dest += " -> " + strings.Join(cs, ", ")
				}
				return "HTTP", dest
			}
			return "HTTP", ""
		case f.GetName() == tcpProxyFilter || strings.HasSuffix(tc.GetTypeUrl(), "TcpProxy"):
			var tp tcpproxy.TcpProxy
			if tc == nil || tc.UnmarshalTo(&tp) != nil {
				return "TCP", ""
			}
			if c := tp.GetCluster(); c != "" {
				return "TCP", "Cluster: " + c
			}
			var ws []string
			for _, c := range tp.GetWeightedClusters().GetClusters() {
				ws = append(ws, fmt.Sprintf("%s (%d)", c.GetName(), c.GetWeight()))
			}
			return "TCP", "Clusters: " + strings.Join(ws, ", ")
		}
	}
	var names []string
	for _, f := range fc.GetFilters() {
		names = append(names, f.GetName())
	}
	return "", strings.Join(names, ", ")
}

// inlineClusters lists the distinct clusters an inline route
// configuration sends to, in order.
func inlineClusters(rc *route.RouteConfiguration) []string {
	var out []string
	seen := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, c := range routeClusters(r.GetRoute()) {
				if !seen[c] {
					seen[c] = true
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// WriteListeners writes one row per filter chain of each listener.
func WriteListeners(w io.Writer, d *Dump, f Filter) error {
	t := newTable(w, "NAME", "ADDRESS", "PORT", "DIRECTION", "TYPE", "MATCH", "DESTINATION")
	for _, it := range d.Listeners {
		if !f.matchListener(it.Msg) {
			continue
		}
		for _, r := range listenerRows(it.Msg) {
			if f.Type != "" && !strings.EqualFold(f.Type, r.typ) {
				continue
			}
			t.row(r.name, r.address, r.port, r.direction, r.typ, r.match, r.dest)
		}
	}
	return t.flush()
}

func (f Filter) matchListener(l *listener.Listener) bool {
	addr, port := socketAddress(l.GetAddress())
	if f.Address != "" && f.Address != addr {
		return false
	}
	if f.Port != 0 && strconv.FormatUint(uint64(f.Port), 10) != port {
		return false
	}
	if f.Type == "" {
		return true
	}
	for _, r := range listenerRows(l) {
		if strings.EqualFold(f.Type, r.typ) {
			return true
		}
	}
	return false
}
