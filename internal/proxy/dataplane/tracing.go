package dataplane

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"weft.dev/weft/internal/proxy/xdswire"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/proxy/tracing"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// otelTracerName is Envoy's name of the OpenTelemetry tracer.
const otelTracerName = "envoy.tracers.opentelemetry"

// tracingConfig compiles HttpConnectionManager.tracing (nil: tracing off).
// The proxy has Envoy's OpenTelemetry tracer only; its collector is the
// first endpoint of the cluster its grpc_service (envoy_grpc) or
// http_service names. The exporter comes from d.exporters, shared by every
// listener with the same collector. where names m in errors.
func (d *Dataplane) tracingConfig(m *hcm.HttpConnectionManager, inbound bool, r *xdsclient.Resources, where string) (*tracing.Config, tracing.ExporterKey, error) {
	t := m.GetTracing()
	if t == nil {
		return nil, tracing.ExporterKey{}, nil
	}
	where += ".tracing"
	p := t.GetProvider()
	if p == nil {
		// Envoy: tracing without a provider traces nothing.
		return nil, tracing.ExporterKey{}, nil
	}
	var oc tracev3.OpenTelemetryConfig
	tc := p.GetTypedConfig()
	if tc == nil || !tc.MessageIs(&oc) {
		return nil, tracing.ExporterKey{}, fmt.Errorf("%s.provider (%s): unsupported tracer (the proxy has %s with an OpenTelemetryConfig)", where, p.GetName(), otelTracerName)
	}
	if err := xdswire.UnmarshalAny(tc, &oc); err != nil {
		return nil, tracing.ExporterKey{}, fmt.Errorf("%s.provider.typed_config: %w", where, err)
	}
	pw := where + ".provider.typed_config"
	k := tracing.ExporterKey{ServiceName: oc.GetServiceName()}
	if k.ServiceName == "" {
		k.ServiceName = "unknown_service:weft-proxy" // OpenTelemetry's default
	}
	if oc.GetSampler() != nil {
		return nil, k, fmt.Errorf("%s.sampler: custom samplers are not supported (use random_sampling)", pw)
	}
	switch {
	case oc.GetGrpcService() != nil:
		g := oc.GetGrpcService().GetEnvoyGrpc()
		if g == nil {
			return nil, k, fmt.Errorf("%s.grpc_service: want envoy_grpc naming a cluster", pw)
		}
		addr, err := clusterAddress(r, g.GetClusterName())
		if err != nil {
			return nil, k, fmt.Errorf("%s.grpc_service.envoy_grpc: %w", pw, err)
		}
		k.Protocol, k.Address, k.Authority = tracing.OTLPGRPC, addr, g.GetAuthority()
		k.Headers = headerKey(oc.GetGrpcService().GetInitialMetadata())
	case oc.GetHttpService() != nil:
		hs := oc.GetHttpService()
		c := hs.GetHttpUri().GetCluster()
		addr, err := clusterAddress(r, c)
		if err != nil {
			return nil, k, fmt.Errorf("%s.http_service.http_uri: %w", pw, err)
		}
		k.Protocol, k.Address, k.Path = tracing.OTLPHTTP, addr, uriPath(hs.GetHttpUri().GetUri())
		var hv []*core.HeaderValue
		for _, h := range hs.GetRequestHeadersToAdd() {
			hv = append(hv, h.GetHeader())
		}
		k.Headers = headerKey(hv)
	default:
		return nil, k, fmt.Errorf("%s: grpc_service or http_service required", pw)
	}
	exp, err := d.exporters.Get(k)
	if err != nil {
		return nil, k, fmt.Errorf("%s: %w", pw, err)
	}
	o := tracing.Options{
		Exporter:        exp,
		Inbound:         inbound,
		SamplingPercent: 100, // Envoy's default random_sampling
		NodeID:          d.opts.Identity.ID,
	}
	if rs := t.GetRandomSampling(); rs != nil {
		o.SamplingPercent = rs.GetValue()
	}
	if ov := t.GetOverallSampling(); ov != nil && ov.GetValue() < 100 {
		o.SamplingPercent = o.SamplingPercent * ov.GetValue() / 100
	}
	if l := contract.NodeLocality(d.opts.Identity.Locality); l != nil {
		o.Zone = l.GetZone()
	}
	if v := t.GetMaxPathTagLength(); v != nil {
		o.MaxPathTagLength = int(v.GetValue())
	}
	for i, ct := range t.GetCustomTags() {
		tag := tracing.CustomTag{Tag: ct.GetTag()}
		switch {
		case ct.GetLiteral() != nil:
			v := ct.GetLiteral().GetValue()
			tag.Literal = &v
		case ct.GetEnvironment() != nil:
			tag.Environment, tag.Default = ct.GetEnvironment().GetName(), ct.GetEnvironment().GetDefaultValue()
		case ct.GetRequestHeader() != nil:
			tag.RequestHeader, tag.Default = ct.GetRequestHeader().GetName(), ct.GetRequestHeader().GetDefaultValue()
		default:
			// Metadata and formatter tags read Envoy state the proxy
			// does not have (e.g. Istio's RBAC dry-run tags): left out.
			d.log.Debug("tracing custom tag not supported: left out", "where", fmt.Sprintf("%s.custom_tags[%d]", where, i), "tag", ct.GetTag())
			continue
		}
		o.CustomTags = append(o.CustomTags, tag)
	}
	return tracing.New(o), k, nil
}

// clusterAddress is the host:port of the first endpoint of cluster name
// in r (its load_assignment, or its EDS assignment).
func clusterAddress(r *xdsclient.Resources, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("cluster name empty")
	}
	c, err := r.Cluster(name)
	if err != nil {
		return "", err
	}
	if c == nil {
		return "", fmt.Errorf("cluster %q not found", name)
	}
	cla := c.GetLoadAssignment()
	if c.GetType() == clusterv3.Cluster_EDS {
		svc := c.GetEdsClusterConfig().GetServiceName()
		if svc == "" {
			svc = name
		}
		if cla, err = r.Endpoint(svc); err != nil {
			return "", err
		}
	}
	for _, le := range cla.GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() != "" && sa.GetPortValue() != 0 {
				return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
			}
		}
	}
	return "", fmt.Errorf("cluster %q has no endpoint", name)
}

// uriPath is the path of an http_uri.uri, with or without a scheme
// ("collector:4318/v1/traces", "http://collector:4318/v1/traces").
func uriPath(uri string) string {
	if strings.Contains(uri, "://") {
		if u, err := url.Parse(uri); err == nil {
			return u.Path
		}
	}
	if i := strings.IndexByte(uri, '/'); i >= 0 {
		return uri[i:]
	}
	return ""
}

// headerKey flattens headers into ExporterKey.Headers: "k=v" lines, sorted.
func headerKey(hs []*core.HeaderValue) string {
	var lines []string
	for _, h := range hs {
		if h.GetKey() != "" {
			lines = append(lines, h.GetKey()+"="+h.GetValue())
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
