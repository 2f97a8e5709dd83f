package mesh

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"weft.dev/weft/internal/config"
)

// TelemetryIndex finds the Telemetry resources of a workload as Istio's
// applicableTelemetries does for a sidecar: the root namespace's
// Telemetry without selector (mesh-wide), then the workload namespace's
// without selector, then those of the workload's namespace whose selector
// matches its labels; the oldest wins where several apply at the mesh or
// namespace level. Telemetries attached with targetRef(s) are for
// gateways and waypoints and are left out. It also resolves access
// logging (AccessLogs) against the mesh config's providers. Immutable
// after construction.
type TelemetryIndex struct {
	rootNS string
	mesh   *meshconfig.MeshConfig
	byNS   map[string][]*config.Telemetry // oldest first
}

func newTelemetryIndex(ts []*config.Telemetry, rootNS string, mc *meshconfig.MeshConfig) *TelemetryIndex {
	if mc == nil {
		mc = config.DefaultMeshConfig()
	}
	idx := &TelemetryIndex{rootNS: rootNS, mesh: mc, byNS: map[string][]*config.Telemetry{}}
	for _, t := range ts {
		if t.Spec == nil || t.Spec.GetTargetRef() != nil || len(t.Spec.GetTargetRefs()) > 0 {
			continue
		}
		idx.byNS[t.Namespace] = append(idx.byNS[t.Namespace], t)
	}
	for _, list := range idx.byNS {
		slices.SortFunc(list, config.FirstSeen)
	}
	return idx
}

// TelemetrySet is the Telemetry resources that apply to one workload, least
// specific first.
type TelemetrySet struct {
	Mesh      *config.Telemetry   // the root namespace's, without selector
	Namespace *config.Telemetry   // the workload namespace's, without selector
	Workload  []*config.Telemetry // the workload namespace's whose selector matches, oldest first
}

// Key identifies the set: equal keys, equal sets (in one snapshot).
func (s TelemetrySet) Key() string {
	var b strings.Builder
	for _, t := range append([]*config.Telemetry{s.Mesh, s.Namespace}, s.Workload...) {
		if t != nil {
			b.WriteString(t.Namespace)
			b.WriteByte('/')
			b.WriteString(t.Name)
		}
		b.WriteByte('|')
	}
	return b.String()
}

// Ordered lists the set least specific first (nil entries left out).
func (s TelemetrySet) Ordered() []*config.Telemetry {
	var out []*config.Telemetry
	for _, t := range append([]*config.Telemetry{s.Mesh, s.Namespace}, s.Workload...) {
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

// For returns the Telemetry resources of a workload of namespace ns with
// these labels.
func (i *TelemetryIndex) For(ns string, labels map[string]string) TelemetrySet {
	var set TelemetrySet
	if i == nil {
		return set
	}
	namespaceWide := func(n string) *config.Telemetry {
		for _, t := range i.byNS[n] {
			if !config.HasSelector(t.Spec.GetSelector()) {
				return t
			}
		}
		return nil
	}
	set.Mesh = namespaceWide(i.rootNS)
	if ns != i.rootNS {
		set.Namespace = namespaceWide(ns)
	}
	for _, t := range i.byNS[ns] {
		if config.HasSelector(t.Spec.GetSelector()) && config.Selects(t.Spec.GetSelector(), labels) {
			set.Workload = append(set.Workload, t)
		}
	}
	return set
}

// MeshConfig is the mesh config the index resolves providers with.
func (i *TelemetryIndex) MeshConfig() *meshconfig.MeshConfig { return i.mesh }

// Mode is the side of the traffic a connection manager serves, as the
// Telemetry API's match.mode selects it.
type Mode = telemetry.WorkloadMode

// Modes: an outbound listener is the CLIENT side, an inbound one SERVER.
const (
	ModeClient = telemetry.WorkloadMode_CLIENT
	ModeServer = telemetry.WorkloadMode_SERVER
)

// AccessLog is one file access log a connection manager writes, resolved
// from an envoyFileAccessLog provider (or the mesh config's accessLogFile).
type AccessLog struct {
	// Provider is the provider's name ("" for mesh config accessLogFile).
	Provider string
	Path     string
	// Text is the text format; when JSON is set, the format is JSON
	// instead (field name → format).
	Text string
	JSON *structpb.Struct
	// Filter says which requests are logged; nil logs all.
	Filter *config.LogFilter
}

// IstioTextFormat is Istio's default text format (EnvoyTextLogFormat).
const IstioTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// IstioJSONFormat is Istio's default JSON format (EnvoyJSONLogFormatIstio).
func IstioJSONFormat() *structpb.Struct {
	m := map[string]any{
		"start_time": "%START_TIME%", "route_name": "%ROUTE_NAME%", "method": "%REQ(:METHOD)%",
		"path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%",
		"response_flags": "%RESPONSE_FLAGS%", "response_code_details": "%RESPONSE_CODE_DETAILS%",
		"connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%", "bytes_received": "%BYTES_RECEIVED%",
		"bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%", "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
		"x_forwarded_for": "%REQ(X-FORWARDED-FOR)%", "user_agent": "%REQ(USER-AGENT)%", "request_id": "%REQ(X-REQUEST-ID)%",
		"authority": "%REQ(:AUTHORITY)%", "upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
		"upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%", "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
		"downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%", "requested_server_name": "%REQUESTED_SERVER_NAME%",
		"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	}
	st, _ := structpb.NewStruct(m)
	return st
}

// AccessLogs resolves the access logs of a workload's connection managers
// of one side (mode), as Istio's Telemetries.AccessLogging: the
// Telemetry API when any Telemetry of the set has accessLogging or the
// mesh config has defaultProviders.accessLogging (the most specific
// Telemetry that names providers decides which; a later level's
// disabled: true turns one off; filters come from the most specific entry
// naming the provider), else the mesh config's legacy accessLogFile.
// Providers that are not envoyFileAccessLog, or not defined, are skipped.
// Sorted by provider name.
func (i *TelemetryIndex) AccessLogs(set TelemetrySet, mode Mode) []AccessLog {
	if i == nil {
		return nil
	}
	var levels [][]*telemetry.AccessLogging
	for _, t := range set.Ordered() {
		if len(t.Spec.GetAccessLogging()) > 0 {
			levels = append(levels, t.Spec.GetAccessLogging())
		}
	}
	defaults := i.mesh.GetDefaultProviders().GetAccessLogging()
	if len(levels) == 0 && len(defaults) == 0 {
		if f := i.mesh.GetAccessLogFile(); f != "" {
			return []AccessLog{i.fromMesh("", f)}
		}
		return nil
	}
	enabled := mergeLogs(levels, defaults, mode)
	var out []AccessLog
	for _, name := range sortedKeys(enabled) {
		spec := enabled[name]
		if spec.disabled {
			continue
		}
		p := i.provider(name)
		fl := p.GetEnvoyFileAccessLog()
		if fl == nil {
			continue // undefined, or not a file access log (tracing, metrics, gRPC ALS…)
		}
		var al AccessLog
		if p.GetName() == config.BuiltinAccessLogProvider && fl.GetLogFormat() == nil {
			al = i.fromMesh(p.GetName(), fl.GetPath())
		} else {
			al = fileLog(p.GetName(), fl)
		}
		if expr := spec.filter.GetExpression(); expr != "" {
			al.Filter, _ = config.ParseLogFilter(expr) // validated with the Telemetry
			if al.Filter != nil && al.Filter.Op == config.LogFilterNever {
				continue // "false": this provider logs nothing here
			}
		}
		out = append(out, al)
	}
	return out
}

type logSpec struct {
	filter   *telemetry.AccessLogging_Filter
	disabled bool
}

// mergeLogs is Istio's mergeLogs: which providers log for this mode, and
// each one's filter or disabled state.
func mergeLogs(levels [][]*telemetry.AccessLogging, defaults []string, mode Mode) map[string]logSpec {
	out := map[string]logSpec{}
	inScope := defaults
	filters := map[string]logSpec{}
	for _, level := range levels {
		var names []string
		for _, l := range level {
			if !matchMode(l.GetMatch(), mode) {
				continue
			}
			for _, p := range l.GetProviders() {
				names = append(names, p.GetName())
				filters[p.GetName()] = logSpec{filter: l.GetFilter()}
			}
		}
		if len(names) > 0 {
			inScope = names
		}
	}
	parent := defaults
	for _, level := range levels {
		for _, l := range level {
			names := providerNames(l.GetProviders())
			if len(names) == 0 {
				names = parent
			}
			parent = names
			for _, name := range names {
				if !slices.Contains(inScope, name) || !matchMode(l.GetMatch(), mode) {
					continue
				}
				if l.GetDisabled().GetValue() {
					out[name] = logSpec{disabled: true}
					continue
				}
				out[name] = filters[name]
			}
		}
	}
	if len(levels) == 0 {
		for _, d := range defaults {
			out[d] = logSpec{}
		}
	}
	return out
}

func matchMode(sel *telemetry.AccessLogging_LogSelector, mode Mode) bool {
	if sel == nil || sel.GetMode() == telemetry.WorkloadMode_CLIENT_AND_SERVER {
		return true
	}
	return sel.GetMode() == mode
}

func providerNames(ps []*telemetry.ProviderRef) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.GetName())
	}
	return out
}

// provider finds an extension provider by name, case-insensitively as
// Istio's fetchProvider.
func (i *TelemetryIndex) provider(name string) *meshconfig.MeshConfig_ExtensionProvider {
	for _, p := range i.mesh.GetExtensionProviders() {
		if strings.EqualFold(p.GetName(), name) {
			return p
		}
	}
	return nil
}

// fromMesh is Istio's FileAccessLogFromMeshConfig: the mesh config's
// accessLogFormat and accessLogEncoding, Istio's defaults when unset.
func (i *TelemetryIndex) fromMesh(name, path string) AccessLog {
	al := AccessLog{Provider: name, Path: path}
	if al.Path == "" {
		al.Path = "/dev/stdout"
	}
	if i.mesh.GetAccessLogEncoding() == meshconfig.MeshConfig_JSON {
		al.JSON = IstioJSONFormat()
		if f := i.mesh.GetAccessLogFormat(); f != "" {
			var st structpb.Struct
			if st.UnmarshalJSON([]byte(f)) == nil { // validated when the mesh config was read
				al.JSON = &st
			}
		}
		return al
	}
	al.Text = textFormat(i.mesh.GetAccessLogFormat())
	return al
}

// fileLog is Istio's fileAccessLogFromTelemetry.
func fileLog(name string, fl *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider) AccessLog {
	al := AccessLog{Provider: name, Path: fl.GetPath()}
	if al.Path == "" {
		al.Path = "/dev/stdout"
	}
	if labels, ok := fl.GetLogFormat().GetLogFormat().(*meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Labels); ok {
		al.JSON = labels.Labels
		if len(al.JSON.GetFields()) == 0 {
			al.JSON = IstioJSONFormat()
		}
		return al
	}
	al.Text = textFormat(fl.GetLogFormat().GetText())
	return al
}

// textFormat is Istio's fileAccessLogFormat: a newline added when missing,
// Istio's default format when empty.
func textFormat(s string) string {
	if s == "" {
		return IstioTextFormat
	}
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
