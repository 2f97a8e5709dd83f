package contract

import (
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	oauth2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	extauthznetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
)

// typedConfigs lists every message Weft's control plane puts inside a
// google.protobuf.Any (typed_config, typed_per_filter_config,
// typed_extension_protocol_options), besides the four resource types.
//
// Why it lives here: protobuf finds the message behind an Any by its type
// URL in a process-wide registry that only the generated package's init
// fills, so a type is only known to a binary that links its package. The
// proxy recognises some extensions by name alone (the previous_hosts retry
// predicate, the fault and CORS filter names) and never decodes them, so
// nothing else would pull their packages into weft-proxy, and its
// /config_dump could not print them. Both ends import this package; listing
// the types here links every one of them into both, and is the single list
// to extend when a generator starts emitting a new extension (the golden
// tests of internal/xds/generate and cmd/weft-proxy check it).
var typedConfigs = []proto.Message{
	(*hcmv3.HttpConnectionManager)(nil),                   // listener filter
	(*tracev3.OpenTelemetryConfig)(nil),                   // HttpConnectionManager.tracing provider
	(*routerv3.Router)(nil),                               // last HTTP filter
	(*faultv3.HTTPFault)(nil),                             // HTTP filter and per-route config
	(*corsv3.Cors)(nil),                                   // HTTP filter
	(*corsv3.CorsPolicy)(nil),                             // per-route config
	(*previoushostsv3.PreviousHostsPredicate)(nil),        // retry_host_predicate
	(*previousprioritiesv3.PreviousPrioritiesConfig)(nil), // retry_priority
	(*upstreamhttpv3.HttpProtocolOptions)(nil),            // cluster protocol options
	(*tlsv3.DownstreamTlsContext)(nil),                    // inbound filter chain transport socket
	(*tlsv3.UpstreamTlsContext)(nil),                      // cluster transport socket (matches)
	(*rawbufferv3.RawBuffer)(nil),                         // plaintext transport socket match
	(*tlsinspectorv3.TlsInspector)(nil),                   // listener filter of PERMISSIVE ports
	(*jwtauthnv3.JwtAuthentication)(nil),                  // HTTP filter (RequestAuthentication)
	(*rbacv3.RBAC)(nil),                                   // HTTP filter (AuthorizationPolicy)
	(*extauthzv3.ExtAuthz)(nil),                           // HTTP filter (AuthorizationPolicy CUSTOM)
	(*uritemplatev3.UriTemplateMatchConfig)(nil),          // RBAC path template ({*}, {**})
	(*tcpproxyv3.TcpProxy)(nil),                           // network filter of captured TCP and passthrough chains
	(*rbacnetv3.RBAC)(nil),                                // network filter before tcp_proxy (AuthorizationPolicy on TCP)
	(*extauthznetv3.ExtAuthz)(nil),                        // network filter before tcp_proxy (CUSTOM, gRPC provider)
	(*originaldstv3.OriginalDst)(nil),                     // listener filter of the virtual listeners
	(*httpinspectorv3.HttpInspector)(nil),                 // listener filter of the virtual listeners
	(*filev3.FileAccessLog)(nil),                          // connection managers' access_log (Telemetry accessLogging)
	(*xdstype.TypedStruct)(nil),                           // istio.stats filters (Telemetry metrics, stats.go)
	(*localratelimitv3.LocalRateLimit)(nil),               // HTTP filter and per-route config (RateLimit)
	(*ratelimitv3.RateLimit)(nil),                         // HTTP filter (RateLimit.global)
	(*ratelimitv3.RateLimitPerRoute)(nil),                 // per-route config (RateLimit.global)
	(*oauth2v3.OAuth2)(nil),                               // HTTP filter of gateways (OIDCLogin)
	(*routev3.FilterConfig)(nil),                          // per-route config turning a filter off (OIDCLogin elsewhere)
}

// TypedConfigURLs returns, sorted, the type URLs of every message the
// control plane may put inside a google.protobuf.Any. Any process that
// imports this package can resolve all of them.
func TypedConfigURLs() []string {
	out := make([]string, 0, len(typedConfigs))
	for _, m := range typedConfigs {
		out = append(out, "type.googleapis.com/"+string(m.ProtoReflect().Descriptor().FullName()))
	}
	slices.Sort(out)
	return out
}
