package contract

import (
	"fmt"
	"slices"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's stats filter, which the Telemetry API's metrics overrides
// configure.
//
// Istio puts an HTTP filter and a network filter named istio.stats on its
// sidecars' listeners, configured with stats.PluginConfig (a message of
// istio/proxy, not of Envoy's API). No Go package generates that message,
// so Weft carries it the way Envoy accepts any extension's config without
// the message compiled in, and the way Istio's own proxy tests write it: a
// TypedStruct whose type_url is stats.PluginConfig's and whose value is
// the message in its JSON form. Weft writes and reads the fields it
// implements: metrics[].name, dimensions, tags_to_remove and drop.
const (
	StatsFilterName    = "istio.stats"
	StatsConfigTypeURL = "type.googleapis.com/stats.PluginConfig"
)

// Istio's metric names in a stats config (the Prometheus name without the
// istio_ prefix).
const (
	StatRequestsTotal       = "requests_total"
	StatRequestDuration     = "request_duration_milliseconds"
	StatRequestBytes        = "request_bytes"
	StatResponseBytes       = "response_bytes"
	StatTCPOpened           = "tcp_connections_opened_total"
	StatTCPClosed           = "tcp_connections_closed_total"
	StatTCPSentBytes        = "tcp_sent_bytes_total"
	StatTCPReceivedBytes    = "tcp_received_bytes_total"
	StatGRPCRequestMessages = "request_messages_total"
	StatGRPCReplyMessages   = "response_messages_total"
)

// StatsConfig is the part of stats.PluginConfig Weft implements: per-metric
// overrides, applied in order.
type StatsConfig struct {
	Metrics []StatsMetric
}

// StatsMetric is one stats.MetricConfig: for the metric Name (every metric
// when empty), Drop stops reporting it; otherwise TagsToRemove are left
// out of its labels and Dimensions set labels (added, or replacing a
// standard one's value) to the value of a CEL expression (internal/celexpr).
type StatsMetric struct {
	Name         string
	Dimensions   map[string]string
	TagsToRemove []string
	Drop         bool
}

// Any encodes c as the typed_config of an istio.stats filter.
func (c StatsConfig) Any() *anypb.Any {
	metrics := make([]any, 0, len(c.Metrics))
	for _, m := range c.Metrics {
		e := map[string]any{}
		if m.Name != "" {
			e["name"] = m.Name
		}
		if len(m.Dimensions) > 0 {
			d := map[string]any{}
			for k, v := range m.Dimensions {
				d[k] = v
			}
			e["dimensions"] = d
		}
		if len(m.TagsToRemove) > 0 {
			tags := make([]any, 0, len(m.TagsToRemove))
			for _, t := range m.TagsToRemove {
				tags = append(tags, t)
			}
			e["tags_to_remove"] = tags
		}
		if m.Drop {
			e["drop"] = true
		}
		metrics = append(metrics, e)
	}
	st, err := structpb.NewStruct(map[string]any{"metrics": metrics})
	if err != nil {
		panic(fmt.Sprintf("stats config: %v", err)) // strings, lists and maps only
	}
	a := &anypb.Any{}
	// Deterministic: equal configs encode to equal bytes (the control
	// plane shares resources by content).
	if err := anypb.MarshalFrom(a, &xdstype.TypedStruct{TypeUrl: StatsConfigTypeURL, Value: st}, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("stats config: %v", err))
	}
	return a
}

// ParseStatsConfig decodes the typed_config of an istio.stats filter: a
// TypedStruct (xds.type.v3 or udpa.type.v1, which share a wire format) of
// stats.PluginConfig. Fields Weft does not implement are ignored, as a
// newer config is read by an older Envoy; a field of the wrong type is an
// error that names it.
func ParseStatsConfig(a *anypb.Any) (StatsConfig, error) {
	var c StatsConfig
	if a == nil {
		return c, nil
	}
	switch a.GetTypeUrl() {
	case "type.googleapis.com/xds.type.v3.TypedStruct", "type.googleapis.com/udpa.type.v1.TypedStruct":
	default:
		return c, fmt.Errorf("typed_config: want a TypedStruct of %s, got %s", StatsConfigTypeURL, a.GetTypeUrl())
	}
	var ts xdstype.TypedStruct
	if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
		return c, fmt.Errorf("typed_config: %w", err)
	}
	if ts.GetTypeUrl() != StatsConfigTypeURL {
		return c, fmt.Errorf("typed_config.type_url: want %s, got %q", StatsConfigTypeURL, ts.GetTypeUrl())
	}
	mv, ok := ts.GetValue().GetFields()["metrics"]
	if !ok {
		return c, nil
	}
	list := mv.GetListValue()
	if list == nil {
		return c, fmt.Errorf("typed_config.value.metrics: want a list")
	}
	for i, v := range list.GetValues() {
		where := fmt.Sprintf("typed_config.value.metrics[%d]", i)
		e := v.GetStructValue()
		if e == nil {
			return c, fmt.Errorf("%s: want an object", where)
		}
		var m StatsMetric
		for k, f := range e.GetFields() {
			var err error
			switch k {
			case "name":
				m.Name, err = stringField(f)
			case "drop":
				b, ok := f.GetKind().(*structpb.Value_BoolValue)
				if !ok {
					err = fmt.Errorf("want true or false")
				} else {
					m.Drop = b.BoolValue
				}
			case "dimensions":
				s := f.GetStructValue()
				if s == nil {
					err = fmt.Errorf("want an object of label: expression")
					break
				}
				m.Dimensions = map[string]string{}
				for name, dv := range s.GetFields() {
					if m.Dimensions[name], err = stringField(dv); err != nil {
						err = fmt.Errorf("%s: %w", name, err)
						break
					}
				}
			case "tags_to_remove", "tagsToRemove":
				l := f.GetListValue()
				if l == nil {
					err = fmt.Errorf("want a list of label names")
					break
				}
				for _, t := range l.GetValues() {
					s, e := stringField(t)
					if e != nil {
						err = e
						break
					}
					m.TagsToRemove = append(m.TagsToRemove, s)
				}
			}
			if err != nil {
				return c, fmt.Errorf("%s.%s: %w", where, k, err)
			}
		}
		slices.Sort(m.TagsToRemove)
		c.Metrics = append(c.Metrics, m)
	}
	return c, nil
}

func stringField(v *structpb.Value) (string, error) {
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		return "", fmt.Errorf("want a string")
	}
	return s.StringValue, nil
}
