package generate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
)

// Access logs (the Telemetry API's accessLogging).
//
// Each HTTP connection manager carries the access logs its workload's
// Telemetry resources resolve to for its side (mesh.TelemetryIndex:
// outbound listeners are the CLIENT side, inbound ones the SERVER side),
// as Istio's sidecars: one envoy.access_loggers.file per provider, sorted
// by provider name, its format Istio's (text_format_source, or
// json_format), its filter the Telemetry's expression as Envoy's native
// access log filters (config.ParseLogFilter accepts only what maps onto
// them exactly).

const fileAccessLogName = "envoy.access_loggers.file"

// Runtime keys of the comparison filters. Envoy requires one; the proxy
// uses the default value (no runtime overrides exist in a mesh).
const (
	runtimeKeyStatus   = "weft.access_log.status_code"
	runtimeKeyDuration = "weft.access_log.duration"
)

// withAccessLogs sets m's access logs for a workload of namespace ns with
// these labels, on the mode side. It returns m.
func withAccessLogs(s *mesh.Snapshot, m *hcm.HttpConnectionManager, ns string, labels map[string]string, mode mesh.Mode) *hcm.HttpConnectionManager {
	for _, al := range s.Telemetry.AccessLogs(s.Telemetry.For(ns, labels), mode) {
		m.AccessLog = append(m.AccessLog, fileAccessLog(al))
	}
	return m
}

// tcpAccessLogs are the access logs of a workload's TCP proxies on the
// mode side: the same providers, formats and filters as its connection
// managers', as Istio's sidecars log TCP connections (request and
// response operators print "-", the status code is 0).
func tcpAccessLogs(s *mesh.Snapshot, ns string, labels map[string]string, mode mesh.Mode) []*accesslogv3.AccessLog {
	var out []*accesslogv3.AccessLog
	for _, al := range s.Telemetry.AccessLogs(s.Telemetry.For(ns, labels), mode) {
		out = append(out, fileAccessLog(al))
	}
	return out
}

// fileAccessLog is Istio's fileAccessLogFromTelemetry with Weft's filter.
func fileAccessLog(al mesh.AccessLog) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: al.Path}
	sf := &core.SubstitutionFormatString{}
	if al.JSON != nil {
		sf.Format = &core.SubstitutionFormatString_JsonFormat{JsonFormat: al.JSON}
		sf.JsonFormatOptions = &core.JsonFormatOptions{SortProperties: false}
	} else {
		sf.Format = &core.SubstitutionFormatString_TextFormatSource{TextFormatSource: &core.DataSource{
			Specifier: &core.DataSource_InlineString{InlineString: al.Text},
		}}
	}
	fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: sf}
	return &accesslogv3.AccessLog{
		Name:       fileAccessLogName,
		Filter:     accessLogFilter(al.Filter),
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(fl)},
	}
}

// accessLogFilter translates a parsed Telemetry filter; nil for none.
func accessLogFilter(f *config.LogFilter) *accesslogv3.AccessLogFilter {
	if f == nil {
		return nil
	}
	switch f.Op {
	case config.LogFilterAnd, config.LogFilterOr:
		var children []*accesslogv3.AccessLogFilter
		for _, c := range f.Children {
			children = append(children, accessLogFilter(c))
		}
		if f.Op == config.LogFilterAnd {
			return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{Filters: children}}}
		}
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{Filters: children}}}
	case config.LogFilterStatusCode:
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: comparison(f, runtimeKeyStatus)}}}
	case config.LogFilterDuration:
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_DurationFilter{
			DurationFilter: &accesslogv3.DurationFilter{Comparison: comparison(f, runtimeKeyDuration)}}}
	case config.LogFilterHeader:
		return headerFilter(logHeaderMatcher(f))
	}
	return nil
}

// logHeaderMatcher is the HeaderMatcher of a LogFilterHeader node.
func logHeaderMatcher(f *config.LogFilter) *route.HeaderMatcher {
	h := &route.HeaderMatcher{Name: f.Header, InvertMatch: f.Invert}
	if f.Match == config.MatchPresent {
		h.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
		return h
	}
	sm := &matcherv3.StringMatcher{}
	switch f.Match {
	case config.MatchExact:
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: f.HeaderValue}
	case config.MatchPrefix:
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: f.HeaderValue}
	case config.MatchSuffix:
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: f.HeaderValue}
	case config.MatchContains:
		sm.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: f.HeaderValue}
	case config.MatchRegex:
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: f.HeaderValue}}
	}
	h.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: sm}
	return h
}

func headerFilter(h *route.HeaderMatcher) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_HeaderFilter{HeaderFilter: &accesslogv3.HeaderFilter{Header: h}}}
}

// comparison is Envoy's ComparisonFilter for f: it has EQ, NE, GE and LE,
// so > v is >= v+1 and < v is <= v-1 (integers).
func comparison(f *config.LogFilter, key string) *accesslogv3.ComparisonFilter {
	op, v := accesslogv3.ComparisonFilter_EQ, f.Value
	switch f.Cmp {
	case config.CmpNE:
		op = accesslogv3.ComparisonFilter_NE
	case config.CmpGE:
		op = accesslogv3.ComparisonFilter_GE
	case config.CmpGT:
		op, v = accesslogv3.ComparisonFilter_GE, v+1
	case config.CmpLE:
		op = accesslogv3.ComparisonFilter_LE
	case config.CmpLT:
		op, v = accesslogv3.ComparisonFilter_LE, v-1
	}
	return &accesslogv3.ComparisonFilter{Op: op, Value: &core.RuntimeUInt32{DefaultValue: uint32(v), RuntimeKey: key}}
}
