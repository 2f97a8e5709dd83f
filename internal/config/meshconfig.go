package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/proxy/accesslog"
)

// Mesh config.
//
// Istio keeps mesh-wide settings in a MeshConfig (the "mesh" key of the
// istio ConfigMap, istiod's --meshConfig file). Weft reads the same YAML
// document from `weft serve --mesh-config FILE`, once at start, into
// istio.io/api's MeshConfig, and uses what the Telemetry API needs of it:
// extensionProviders, defaultProviders, and the legacy access log fields
// (accessLogFile, accessLogFormat, accessLogEncoding), dnsRefreshRate
// for the clusters of DNS-resolved ServiceEntries, localityLbSetting,
// the locality load balancing of every DestinationRule that sets none,
// and pathNormalization, how every sidecar and gateway normalizes request
// paths before routing and authorization.
// Other fields are accepted (an Istio mesh config loads unchanged) and reported as not read
// by Weft: several of them have a `weft serve` flag instead.

// BuiltinAccessLogProvider is Istio's built-in access log provider, an
// envoyFileAccessLog to /dev/stdout whose format comes from the mesh
// config's accessLogFormat and accessLogEncoding.
const BuiltinAccessLogProvider = "envoy"

// BuiltinMetricsProvider is Istio's built-in Prometheus metrics provider,
// the default metrics provider, as Istio's installation sets
// defaultProviders.metrics.
const BuiltinMetricsProvider = "prometheus"

// meshConfigRead are the MeshConfig fields Weft reads (JSON names).
var meshConfigRead = map[string]bool{
	"extensionProviders": true, "defaultProviders": true,
	"accessLogFile": true, "accessLogFormat": true, "accessLogEncoding": true,
	"dnsRefreshRate": true, "localityLbSetting": true, "pathNormalization": true,
}

// meshConfigFlags names the `weft serve` flag that replaces a MeshConfig
// field Weft does not read.
var meshConfigFlags = map[string]string{
	"rootNamespace":         "--root-namespace",
	"trustDomain":           "--trust-domain",
	"outboundTrafficPolicy": "--outbound-traffic-policy",
}

// DefaultMeshConfig is Istio's default MeshConfig as far as Weft reads it:
// the built-in "envoy" access log provider, no default providers, text
// access logs, locality load balancing enabled (localityLbSetting:
// {enabled: true}: a DestinationRule with outlier detection keeps a
// proxy's traffic in its locality while it has healthy endpoints).
func DefaultMeshConfig() *meshconfig.MeshConfig {
	return &meshconfig.MeshConfig{
		LocalityLbSetting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)},
		DefaultProviders:  &meshconfig.MeshConfig_DefaultProviders{Metrics: []string{BuiltinMetricsProvider}},
		ExtensionProviders: []*meshconfig.MeshConfig_ExtensionProvider{{
			Name: BuiltinMetricsProvider,
			Provider: &meshconfig.MeshConfig_ExtensionProvider_Prometheus{
				Prometheus: &meshconfig.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{},
			},
		}, {
			Name: BuiltinAccessLogProvider,
			Provider: &meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{
				EnvoyFileAccessLog: &meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: "/dev/stdout"},
			},
		}},
	}
}

// LoadMeshConfig reads a mesh config file (see ParseMeshConfig).
func LoadMeshConfig(path string) (*meshconfig.MeshConfig, []Diagnostic, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("mesh config: %w", err)
	}
	return ParseMeshConfig(path, data)
}

// ParseMeshConfig decodes one MeshConfig YAML document read from file and
// applies it to DefaultMeshConfig as Istio's ApplyMeshConfig does: fields
// written replace the defaults, extensionProviders are added to the
// built-in ones (one of the same name replaces it). The error lists every
// problem, each with file, line and field path; warnings name the fields
// Weft does not read. The result is the caller's and is never modified
// afterwards by this package.
func ParseMeshConfig(file string, data []byte) (*meshconfig.MeshConfig, []Diagnostic, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line, msg := yamlErrorLine(err)
		d := Diagnostic{Severity: SeverityError, Code: CodeInvalidYAML, File: file, Line: line, Message: "invalid YAML: " + msg}
		return nil, nil, errors.New(d.Error())
	}
	user := &meshconfig.MeshConfig{}
	dec := &yamlDecoder{pos: Positions{}}
	var warns []Diagnostic
	if root.Kind != 0 && len(root.Content) > 0 && !isNull(root.Content[0]) {
		n := root.Content[0]
		if n.Kind != yaml.MappingNode {
			d := Diagnostic{Severity: SeverityError, Code: CodeInvalidField, File: file, Line: n.Line, Message: "a mesh config must be a mapping of MeshConfig fields, got " + describe(n)}
			return nil, nil, errors.New(d.Error())
		}
		dec.message(n, "", user.ProtoReflect())
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			if key.Value == "defaultConfig" {
				warns = append(warns, unreadDefaultConfig(file, n.Content[i+1])...)
				continue
			}
			if meshConfigRead[key.Value] || user.ProtoReflect().Descriptor().Fields().ByJSONName(key.Value) == nil && user.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(key.Value)) == nil {
				continue // read, or unknown (the decoder reported it)
			}
			msg := fmt.Sprintf("%s is not read by Weft and has no effect", key.Value)
			if f := meshConfigFlags[key.Value]; f != "" {
				msg += fmt.Sprintf(" (use weft serve %s)", f)
			}
			warns = append(warns, Diagnostic{Severity: SeverityWarning, Code: CodeInvalidValue, File: file, Line: key.Line, Column: key.Column, Path: key.Value, Message: msg})
		}
	}
	var errs []string
	for _, e := range dec.errs {
		pos := dec.pos.Lookup(e.path)
		errs = append(errs, Diagnostic{Severity: SeverityError, Code: CodeInvalidField, File: file, Line: pos.Line, Column: pos.Column, Path: e.path, Message: e.msg}.Error())
	}
	var is issues
	validateMeshConfig(&is, user)
	for _, d := range is {
		pos := dec.pos.Lookup(d.Path)
		d.File, d.Line, d.Column = file, pos.Line, pos.Column
		if d.Code == "" {
			d.Code = CodeInvalidValue
		}
		if d.Severity == SeverityError {
			errs = append(errs, d.Error())
		} else {
			warns = append(warns, d)
		}
	}
	if len(errs) > 0 {
		return nil, warns, fmt.Errorf("mesh config: %s", strings.Join(errs, "; "))
	}
	return applyMeshConfig(user), warns, nil
}

// unreadDefaultConfig warns about the fields of defaultConfig (a
// ProxyConfig) other than the ones Weft reads: tracing.sampling, the
// default of Telemetry's randomSamplingPercentage, and
// proxyMetadata.ISTIO_META_HTTP10, which makes every proxy accept
// HTTP/1.0, as in Istio.
func unreadDefaultConfig(file string, n *yaml.Node) []Diagnostic {
	var out []Diagnostic
	warn := func(key *yaml.Node, path string) {
		out = append(out, Diagnostic{Severity: SeverityWarning, Code: CodeInvalidValue, File: file, Line: key.Line, Column: key.Column, Path: path,
			Message: path + " is not read by Weft and has no effect (of defaultConfig, Weft reads tracing.sampling and proxyMetadata.ISTIO_META_HTTP10)"})
	}
	if n.Kind != yaml.MappingNode {
		return nil // the decoder reported it
	}
	read := map[string]string{"tracing": "sampling", "proxyMetadata": "ISTIO_META_HTTP10"}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		field, ok := read[key.Value]
		if !ok || val.Kind != yaml.MappingNode {
			warn(key, "defaultConfig."+key.Value)
			continue
		}
		for j := 0; j+1 < len(val.Content); j += 2 {
			if k := val.Content[j]; k.Value != field {
				warn(k, "defaultConfig."+key.Value+"."+k.Value)
			}
		}
	}
	return out
}

// applyMeshConfig lays user over DefaultMeshConfig.
func applyMeshConfig(user *meshconfig.MeshConfig) *meshconfig.MeshConfig {
	out := DefaultMeshConfig()
	defaults := out.ExtensionProviders
	proto.Merge(out, user)
	// A message the user writes replaces the default's rather than merge
	// into it, where merging would lose a false: enabled: false in a
	// BoolValue is its zero value, which proto.Merge does not copy.
	if l := user.GetLocalityLbSetting(); l != nil {
		out.LocalityLbSetting = proto.Clone(l).(*networking.LocalityLoadBalancerSetting)
		if l.GetEnabled() == nil {
			out.LocalityLbSetting.Enabled = wrapperspb.Bool(true) // the default's
		}
	}
	out.ExtensionProviders = defaults
	for _, p := range user.GetExtensionProviders() {
		replaced := false
		for i, d := range out.ExtensionProviders {
			if d.GetName() == p.GetName() {
				out.ExtensionProviders[i], replaced = p, true
			}
		}
		if !replaced {
			out.ExtensionProviders = append(out.ExtensionProviders, p)
		}
	}
	// Each default provider list the user writes replaces the default's;
	// one not written keeps it (metrics: prometheus).
	if dp := user.GetDefaultProviders(); dp != nil {
		def := DefaultMeshConfig().GetDefaultProviders()
		out.DefaultProviders = &meshconfig.MeshConfig_DefaultProviders{
			Metrics:       orDefault(dp.GetMetrics(), def.GetMetrics()),
			Tracing:       orDefault(dp.GetTracing(), def.GetTracing()),
			AccessLogging: orDefault(dp.GetAccessLogging(), def.GetAccessLogging()),
		}
	}
	return out
}

func orDefault(names, def []string) []string {
	if len(names) > 0 {
		return names
	}
	return def
}

// validateMeshConfig is what Istio's ValidateMeshConfig checks of the
// fields Weft reads, and Weft's check of the access log formats (the
// proxy must be able to render them).
func validateMeshConfig(is *issues, mc *meshconfig.MeshConfig) {
	// The mesh-wide setting applies only to rules with outlier detection
	// when it fails over, so that warning of a DestinationRule's does not
	// apply here (a non-nil outlierDetection skips it).
	validateLocalityLB(is, "localityLbSetting", mc.GetLocalityLbSetting(), &networking.OutlierDetection{})
	seen := map[string]bool{}
	for i, p := range mc.GetExtensionProviders() {
		path := fmt.Sprintf("extensionProviders[%d]", i)
		switch {
		case p.GetName() == "":
			is.errf(path+".name", "an extension provider needs a name")
		case seen[p.GetName()]:
			is.errf(path+".name", "extension provider %q is defined twice", p.GetName())
		}
		seen[p.GetName()] = true
		if p.GetProvider() == nil {
			is.errf(path, "extension provider %q sets no provider type (e.g. envoyFileAccessLog, opentelemetry)", p.GetName())
		}
		if fl := p.GetEnvoyFileAccessLog(); fl != nil {
			validateFileAccessLogFormat(is, path+".envoyFileAccessLog", fl)
		}
		if h := p.GetEnvoyExtAuthzHttp(); h != nil {
			validateExtAuthzHTTP(is, path+".envoyExtAuthzHttp", h)
		}
		if g := p.GetEnvoyExtAuthzGrpc(); g != nil {
			validateExtAuthzGRPC(is, path+".envoyExtAuthzGrpc", g)
		}
		if why := ExtAuthzProblem(p); why != "" {
			is.warnf(path, "extension provider %q: %s; CUSTOM AuthorizationPolicies naming it deny the requests their rules match", p.GetName(), why)
		}
		switch {
		case p.GetEnvoyHttpAls() != nil, p.GetEnvoyTcpAls() != nil, p.GetEnvoyOtelAls() != nil:
			is.warnf(path, "extension provider %q: Weft's proxy implements envoyFileAccessLog access logs only; Telemetry naming this provider logs nothing through it", p.GetName())
		case p.GetZipkin() != nil, p.GetDatadog() != nil, p.GetLightstep() != nil, p.GetSkywalking() != nil,
			p.GetStackdriver() != nil, p.GetOpencensus() != nil:
			is.warnf(path, "extension provider %q: Weft's proxy implements the opentelemetry tracer only (OTLP over gRPC or HTTP: Jaeger, the OpenTelemetry Collector and Datadog's agent take it, and the Collector forwards to Zipkin); Telemetry naming this provider traces nothing through it", p.GetName())
		}
	}
	if mc.GetAccessLogFormat() != "" && mc.GetAccessLogEncoding() == meshconfig.MeshConfig_TEXT {
		if err := CheckAccessLogFormat(mc.GetAccessLogFormat()); err != nil {
			is.errf("accessLogFormat", "%v", err)
		}
	}
	if mc.GetAccessLogFormat() != "" && mc.GetAccessLogEncoding() == meshconfig.MeshConfig_JSON {
		if err := CheckAccessLogJSON(mc.GetAccessLogFormat()); err != nil {
			is.errf("accessLogFormat", "%v", err)
		}
	}
	for _, f := range []struct {
		name  string
		names []string
	}{{"accessLogging", mc.GetDefaultProviders().GetAccessLogging()}, {"tracing", mc.GetDefaultProviders().GetTracing()}, {"metrics", mc.GetDefaultProviders().GetMetrics()}} {
		for i, n := range f.names {
			if !seen[n] && n != BuiltinAccessLogProvider && n != BuiltinMetricsProvider {
				is.warnf(fmt.Sprintf("defaultProviders.%s[%d]", f.name, i), "provider %q is not defined in extensionProviders; it is ignored", n)
			}
		}
	}
}

func validateFileAccessLogFormat(is *issues, path string, fl *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider) {
	switch f := fl.GetLogFormat().GetLogFormat().(type) {
	case *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Text:
		if err := CheckAccessLogFormat(f.Text); err != nil {
			is.errf(path+".logFormat.text", "%v", err)
		}
	case *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Labels:
		for _, k := range sortedKeys(f.Labels.GetFields()) {
			if v := f.Labels.GetFields()[k].GetStringValue(); v != "" {
				if err := CheckAccessLogFormat(v); err != nil {
					is.errf(path+".logFormat.labels."+k, "%v", err)
				}
			}
		}
	}
	if fl.GetOmitEmptyValues() {
		is.warnf(path+".omitEmptyValues", "omitEmptyValues is not supported by Weft's proxy and is ignored: missing values are written as \"-\" (null in JSON)")
	}
}

// CheckAccessLogFormat reports whether Weft's proxy can render a text
// access log format (its command operators), saying what it cannot.
func CheckAccessLogFormat(text string) error {
	_, err := accesslog.ParseText(text)
	return err
}

// CheckAccessLogJSON is CheckAccessLogFormat for a JSON format given as a
// JSON object of field names to formats (mesh config accessLogFormat with
// accessLogEncoding JSON).
func CheckAccessLogJSON(js string) error {
	var st structpb.Struct
	if err := st.UnmarshalJSON([]byte(js)); err != nil {
		return fmt.Errorf("accessLogFormat with accessLogEncoding JSON must be a JSON object of field names to formats: %w", err)
	}
	_, err := accesslog.ParseJSON(&st)
	return err
}

// ExtAuthzProblem is why Weft cannot use an ext_authz extension provider
// as written, or "": the CUSTOM policies naming it then deny the
// requests their rules match (fail closed, as Istio does with a provider
// it cannot use). validateMeshConfig warns with the same words.
func ExtAuthzProblem(p *meshconfig.MeshConfig_ExtensionProvider) string {
	switch {
	case p.GetEnvoyExtAuthzHttp().GetIncludeRequestBodyInCheck() != nil, p.GetEnvoyExtAuthzGrpc().GetIncludeRequestBodyInCheck() != nil:
		return "includeRequestBodyInCheck is not supported by Weft's proxy (it never sends the request body)"
	case p.GetEnvoyExtAuthzHttp().GetClearRouteCache(), p.GetEnvoyExtAuthzGrpc().GetClearRouteCache():
		return "clearRouteCache is not supported by Weft's proxy (the route is chosen before the check)"
	}
	return ""
}

// validateExtAuthzHTTP is Istio's ValidateExtensionProviderEnvoyExtAuthzHTTP
// and the checks of its authz builder.
func validateExtAuthzHTTP(is *issues, path string, h *meshconfig.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider) {
	validateExtAuthzCommon(is, path, h.GetService(), h.GetPort(), h.GetStatusOnError(), h.GetTimeout())
	if p := h.GetPathPrefix(); p != "" {
		if !strings.HasPrefix(p, "/") {
			is.errf(path+".pathPrefix", "pathPrefix must begin with /, found %q", p)
		} else if _, err := url.ParseRequestURI(p); err != nil {
			is.errf(path+".pathPrefix", "invalid pathPrefix %q: %v", p, err)
		}
	}
	for _, l := range []struct {
		name   string
		values []string
	}{
		{"includeRequestHeadersInCheck", h.GetIncludeRequestHeadersInCheck()},
		{"includeHeadersInCheck", h.GetIncludeHeadersInCheck()}, //nolint:staticcheck // deprecated, still read
		{"headersToUpstreamOnAllow", h.GetHeadersToUpstreamOnAllow()},
		{"headersToDownstreamOnDeny", h.GetHeadersToDownstreamOnDeny()},
		{"headersToDownstreamOnAllow", h.GetHeadersToDownstreamOnAllow()},
	} {
		for i, v := range l.values {
			if v == "*" {
				is.errf(fmt.Sprintf("%s.%s[%d]", path, l.name, i), "a single wildcard (\"*\") is not supported; use a prefix (\"x-*\") or suffix (\"*-id\") match")
			}
		}
	}
	for k := range h.GetIncludeAdditionalHeadersInCheck() {
		if !httpguts.ValidHeaderFieldName(k) {
			is.errf(path+".includeAdditionalHeadersInCheck", "%q is not a valid header name", k)
		}
	}
}

// validateExtAuthzGRPC is Istio's ValidateExtensionProviderEnvoyExtAuthzGRPC.
func validateExtAuthzGRPC(is *issues, path string, g *meshconfig.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider) {
	validateExtAuthzCommon(is, path, g.GetService(), g.GetPort(), g.GetStatusOnError(), g.GetTimeout())
}

func validateExtAuthzCommon(is *issues, path, service string, port uint32, statusOnError string, timeout *durationpb.Duration) {
	if service == "" {
		is.errf(path+".service", "service is required: the hostname (or namespace/hostname) of the authorization service")
	}
	if port < 1 || port > 65535 {
		is.errf(path+".port", "port must be in the range [1, 65535], found %d", port)
	}
	if statusOnError != "" {
		if code, err := strconv.Atoi(statusOnError); err != nil || code < 200 || code > 599 {
			is.errf(path+".statusOnError", "statusOnError %q is not an HTTP status code", statusOnError)
		}
	}
	if timeout != nil {
		if err := timeout.CheckValid(); err != nil || timeout.AsDuration() <= 0 {
			is.errf(path+".timeout", "timeout must be a positive duration")
		}
	}
}
