package config_test

import (
	"fmt"
	"strings"
	"testing"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/xds/generate"
)

// The documents every case starts from: the reviews service (two
// versions, subsets v1 and v2) and a VirtualService, DestinationRule or
// extra WorkloadEntry carrying the value under test.
const paritySE = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 10.1.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 10.1.0.2, labels: {app: reviews, version: v2}}
`

const parityDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// withRoute is the service, its subsets and a VirtualService whose one
// http route is r (YAML, indented two spaces under http:).
func withRoute(r string) string {
	return paritySE + "---\n" + parityDR + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
` + r
}

// withPolicy is the service with a DestinationRule whose trafficPolicy is
// tp (YAML, indented four spaces), and a route through it.
func withPolicy(tp string) string {
	return paritySE + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
` + tp
}

// withWorkload is the service plus a third workload (spec YAML).
func withWorkload(spec string) string {
	return paritySE + `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v3}
spec: ` + spec + "\n"
}

// withEndpoint is a service whose one inline endpoint is ep (flow YAML)
// with resolution res.
func withEndpoint(res, ep string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments}
spec:
  hosts: [payments.example.internal]
  resolution: %s
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [%s]
`, res, ep)
}

// parityCase is one value the proxy refuses (or, where weft-proxy is more
// lenient than Envoy, silently misreads). good is the same config with a
// value both accept.
type parityCase struct {
	name      string
	good, bad string
	path      string // where the control plane reports bad
	// nack is a substring of the proxy's reason for rejecting bad when it
	// is generated anyway; "" when weft-proxy takes it and silent shows
	// what would go wrong instead.
	nack   string
	silent func(generate.Resources) error
}

func parityCases() []parityCase {
	r := func(extra string) string {
		return "  - route: [{destination: {host: reviews, subset: v1}}]\n" + extra
	}
	m := func(match string) string {
		return "  - match: [" + match + "]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n"
	}
	long := strings.Repeat("a", 17000)
	return []parityCase{
		// Retries and timeouts.
		{name: "retryOn unknown condition", path: "spec.http[0].retries.retryOn",
			good: withRoute(r("    retries: {attempts: 2, retryOn: '5xx,reset'}\n")),
			bad:  withRoute(r("    retries: {attempts: 2, retryOn: '5xx,sometimes'}\n")),
			silent: func(res generate.Resources) error {
				// weft-proxy ignores conditions it does not know, so the
				// retry policy silently retries on less than was asked.
				if on := firstRoute(res).GetRoute().GetRetryPolicy().GetRetryOn(); !strings.Contains(on, "sometimes") {
					return fmt.Errorf("retry_on %q", on)
				}
				return nil
			}},
		{name: "retry backoff 0s", path: "spec.http[0].retries.backoff",
			good: withRoute(r("    retries: {attempts: 2, backoff: 0.025s}\n")),
			bad:  withRoute(r("    retries: {attempts: 2, backoff: 0s}\n")),
			nack: "BaseInterval"},
		// Fault injection.
		{name: "fault httpStatus 999", path: "spec.http[0].fault.abort.httpStatus",
			good: withRoute(r("    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}\n")),
			bad:  withRoute(r("    fault: {abort: {httpStatus: 999, percentage: {value: 10}}}\n")),
			nack: "abort.http_status: 999 out of range"},
		{name: "fault httpStatus 600", path: "spec.http[0].fault.abort.httpStatus",
			good: withRoute(r("    fault: {abort: {httpStatus: 599, percentage: {value: 10}}}\n")),
			bad:  withRoute(r("    fault: {abort: {httpStatus: 600, percentage: {value: 10}}}\n")),
			nack: "abort.http_status: 600 out of range"},
		{name: "fault percentage 250", path: "spec.http[0].fault.abort.percentage",
			good: withRoute(r("    fault: {abort: {httpStatus: 503, percentage: {value: 25}}}\n")),
			bad:  withRoute(r("    fault: {abort: {httpStatus: 503, percentage: {value: 250}}}\n")),
			silent: func(res generate.Resources) error {
				// 2,500,000 per million: weft-proxy clamps it to 100%.
				var f faultv3.HTTPFault
				if err := firstRoute(res).GetTypedPerFilterConfig()["envoy.filters.http.fault"].UnmarshalTo(&f); err != nil {
					return err
				}
				if n := f.GetAbort().GetPercentage().GetNumerator(); n <= 1_000_000 {
					return fmt.Errorf("numerator %d", n)
				}
				return nil
			}},
		// Header operations.
		{name: "header value with a newline", path: "spec.http[0].headers.request.set.x-env",
			good: withRoute(r("    headers: {request: {set: {x-env: prod}}}\n")),
			bad:  withRoute(r("    headers: {request: {set: {x-env: \"prod\\nx-admin: true\"}}}\n")),
			nack: "HeaderValue.Value"},
		{name: "header value with a substitution", path: "spec.http[0].headers.request.set.x-host",
			good: withRoute(r("    headers: {request: {set: {x-host: '100%%'}}}\n")),
			bad:  withRoute(r("    headers: {request: {set: {x-host: '%HOSTNAME%'}}}\n")),
			nack: "substitution commands are unsupported"},
		{name: "header value over 16 KiB", path: "spec.http[0].headers.response.add.x-big",
			good: withRoute(r("    headers: {response: {add: {x-big: " + long[:16384] + "}}}\n")),
			bad:  withRoute(r("    headers: {response: {add: {x-big: " + long + "}}}\n")),
			nack: "HeaderValue.Value"},
		{name: "empty header name", path: "spec.http[0].headers.request.set.",
			good: withRoute(r("    headers: {request: {set: {x-a: b}}}\n")),
			bad:  withRoute(r("    headers: {request: {set: {'': b}}}\n")),
			nack: "HeaderValue.Key"},
		{name: "header name that is not a token", path: "spec.http[0].headers.response.add.x-cache/status",
			good: withRoute(r("    headers: {response: {add: {x-cache-status: hit}}}\n")),
			bad:  withRoute(r("    headers: {response: {add: {x-cache/status: hit}}}\n")),
			silent: func(res generate.Resources) error {
				// Accepted, but Go's HTTP stack refuses to send it: every
				// response through the route would fail.
				for _, h := range firstRoute(res).GetResponseHeadersToAdd() {
					if !httpguts.ValidHeaderFieldName(h.GetHeader().GetKey()) {
						return nil
					}
				}
				return fmt.Errorf("no invalid header name in the route")
			}},
		{name: "pseudo-header set", path: "spec.http[0].headers.request.set.:path",
			good: withRoute(r("    headers: {request: {set: {x-path: /v2}}}\n")),
			bad:  withRoute(r("    headers: {request: {set: {':path': /v2}}}\n")),
			silent: func(res generate.Resources) error {
				// The generator drops it: the rewrite the user asked for
				// silently does not happen.
				if n := len(firstRoute(res).GetRequestHeadersToAdd()); n != 0 {
					return fmt.Errorf("%d headers to add", n)
				}
				return nil
			}},
		// Matches.
		{name: "match on :status", path: "spec.http[0].match[0].headers.:status",
			good: withRoute(m("{headers: {':method': {exact: GET}}}")),
			bad:  withRoute(m("{headers: {':status': {exact: '503'}}}")),
			nack: "unsupported pseudo-header"},
		{name: "empty header prefix", path: "spec.http[0].match[0].headers.x-canary.prefix",
			good: withRoute(m("{headers: {x-canary: {prefix: t}}}")),
			bad:  withRoute(m("{headers: {x-canary: {prefix: ''}}}")),
			nack: "StringMatcher.Prefix"},
		{name: "empty uri regex", path: "spec.http[0].match[0].uri.regex",
			good: withRoute(m("{uri: {regex: '/v[12]/.*'}}")),
			bad:  withRoute(m("{uri: {regex: ''}}")),
			nack: "RegexMatcher.Regex"},
		{name: "invalid uri regex", path: "spec.http[0].match[0].uri.regex",
			good: withRoute(m("{uri: {regex: '/api/(v1|v2)'}}")),
			bad:  withRoute(m("{uri: {regex: '/api/(v1|v2'}}")),
			nack: "safe_regex"},
		{name: "empty query parameter name", path: "spec.http[0].match[0].queryParams.",
			good: withRoute(m("{queryParams: {q: {exact: a}}}")),
			bad:  withRoute(m("{queryParams: {'': {exact: a}}}")),
			nack: "QueryParameterMatcher.Name"},
		// Route actions.
		{name: "direct response status 600", path: "spec.http[0].directResponse.status",
			good: withRoute("  - directResponse: {status: 599}\n"),
			bad:  withRoute("  - directResponse: {status: 600}\n"),
			nack: "DirectResponseAction.Status"},
		{name: "redirect port 70000", path: "spec.http[0].redirect.port",
			good: withRoute("  - redirect: {uri: /v2, port: 8080}\n"),
			bad:  withRoute("  - redirect: {uri: /v2, port: 70000}\n"),
			nack: "port_redirect: 70000 out of range"},
		{name: "redirect authority with a newline", path: "spec.http[0].redirect.authority",
			good: withRoute("  - redirect: {authority: reviews.example.com}\n"),
			bad:  withRoute("  - redirect: {authority: \"reviews\\n.example.com\"}\n"),
			nack: "RedirectAction.HostRedirect"},
		{name: "rewrite uri with a newline", path: "spec.http[0].rewrite.uri",
			good: withRoute(r("    rewrite: {uri: /v2}\n")),
			bad:  withRoute(r("    rewrite: {uri: \"/v2\\n\"}\n")),
			nack: "RouteAction.PrefixRewrite"},
		{name: "rewrite authority with a newline", path: "spec.http[0].rewrite.authority",
			good: withRoute(r("    rewrite: {authority: reviews.internal}\n")),
			bad:  withRoute(r("    rewrite: {authority: \"reviews\\r\\n.internal\"}\n")),
			nack: "RouteAction.HostRewriteLiteral"},
		{name: "regex rewrite with a missing group", path: "spec.http[0].rewrite.uriRegexRewrite.rewrite",
			good: withRoute(r("    rewrite: {uriRegexRewrite: {match: '^/v1/(.*)$', rewrite: '/v2/\\1'}}\n")),
			bad:  withRoute(r("    rewrite: {uriRegexRewrite: {match: '^/v1/(.*)$', rewrite: '/v2/\\2'}}\n")),
			nack: "but the pattern has 1 groups"},
		{name: "regex rewrite with an invalid regex", path: "spec.http[0].rewrite.uriRegexRewrite.match",
			good: withRoute(r("    rewrite: {uriRegexRewrite: {match: '^/v1/(.*)$', rewrite: '/v2/'}}\n")),
			bad:  withRoute(r("    rewrite: {uriRegexRewrite: {match: '^/v1/(.*$', rewrite: '/v2/'}}\n")),
			silent: func(res generate.Resources) error {
				// The generator leaves it out: the path is not rewritten.
				if rw := firstRoute(res).GetRoute().GetRegexRewrite(); rw != nil {
					return fmt.Errorf("regex_rewrite %v", rw)
				}
				return nil
			}},
		{name: "CORS origin regex", path: "spec.http[0].corsPolicy.allowOrigins[0].regex",
			good: withRoute(r("    corsPolicy: {allowOrigins: [{regex: 'https://.*[.]example[.]com'}]}\n")),
			bad:  withRoute(r("    corsPolicy: {allowOrigins: [{regex: 'https://(.*[.]example[.]com'}]}\n")),
			nack: "allow_origin_string_match[0]: safe_regex"},
		{name: "CORS empty origin prefix", path: "spec.http[0].corsPolicy.allowOrigins[0]",
			good: withRoute(r("    corsPolicy: {allowOrigins: [{prefix: 'https://'}]}\n")),
			bad:  withRoute(r("    corsPolicy: {allowOrigins: [{prefix: ''}]}\n")),
			silent: func(res generate.Resources) error {
				// weft-proxy takes an empty prefix, which allows every
				// origin; Envoy's schema refuses it.
				var c corsv3.CorsPolicy
				if err := firstRoute(res).GetTypedPerFilterConfig()["envoy.filters.http.cors"].UnmarshalTo(&c); err != nil {
					return err
				}
				if err := c.Validate(); err == nil {
					return fmt.Errorf("Envoy's schema accepts the CORS policy")
				}
				return nil
			}},
		{name: "weights over 32 bits", path: "spec.http[0].route",
			good: withRoute("  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 2147483647}\n    - {destination: {host: reviews, subset: v2}, weight: 1}\n"),
			bad:  withRoute("  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 2147483647}\n    - {destination: {host: reviews, subset: v2}, weight: 2147483647}\n    - {destination: {host: reviews, subset: v1}, weight: 2}\n"),
			nack: "the weights add up to more than 4294967295"},
		// Cluster settings.
		{name: "connect timeout 0s", path: "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
			good: withPolicy("    connectionPool: {tcp: {connectTimeout: 0.25s}}\n"),
			bad:  withPolicy("    connectionPool: {tcp: {connectTimeout: 0s}}\n"),
			nack: "Cluster.ConnectTimeout"},
		{name: "idle timeout negative", path: "spec.trafficPolicy.connectionPool.http.idleTimeout",
			good: withPolicy("    connectionPool: {http: {idleTimeout: 30s}}\n"),
			bad:  withPolicy("    connectionPool: {http: {idleTimeout: -1s}}\n"),
			nack: "idle_timeout: invalid"},
		{name: "outlier interval 0s", path: "spec.trafficPolicy.outlierDetection.interval",
			good: withPolicy("    outlierDetection: {consecutive5xxErrors: 5, interval: 10s}\n"),
			bad:  withPolicy("    outlierDetection: {consecutive5xxErrors: 5, interval: 0s}\n"),
			nack: "OutlierDetection.Interval"},
		{name: "max ejection percent 150", path: "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
			good: withPolicy("    outlierDetection: {consecutive5xxErrors: 5, maxEjectionPercent: 50}\n"),
			bad:  withPolicy("    outlierDetection: {consecutive5xxErrors: 5, maxEjectionPercent: 150}\n"),
			nack: "OutlierDetection.MaxEjectionPercent"},
		{name: "min health percent 150", path: "spec.trafficPolicy.outlierDetection.minHealthPercent",
			good: withPolicy("    outlierDetection: {consecutive5xxErrors: 5, minHealthPercent: 50}\n"),
			bad:  withPolicy("    outlierDetection: {consecutive5xxErrors: 5, minHealthPercent: 150}\n"),
			nack: "HealthyPanicThreshold"},
		{name: "maglev table not prime", path: "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
			good: withPolicy("    loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}\n"),
			bad:  withPolicy("    loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 1000}}}\n"),
			nack: "maglev_lb_config.table_size"},
		{name: "ring too large", path: "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
			good: withPolicy("    loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}\n"),
			bad:  withPolicy("    loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 8388609}}}\n"),
			nack: "MinimumRingSize"},
		{name: "hash on an empty header name", path: "spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName",
			good: withPolicy("    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n"),
			bad:  withPolicy("    loadBalancer: {consistentHash: {httpHeaderName: ''}}\n"),
			nack: "HeaderName"},
		{name: "hash on an empty query parameter", path: "spec.trafficPolicy.loadBalancer.consistentHash.httpQueryParameterName",
			good: withPolicy("    loadBalancer: {consistentHash: {httpQueryParameterName: user}}\n"),
			bad:  withPolicy("    loadBalancer: {consistentHash: {httpQueryParameterName: ''}}\n"),
			nack: "QueryParameter.Name"},
		{name: "warmup aggression 0", path: "spec.trafficPolicy.loadBalancer.warmup.aggression",
			good: withPolicy("    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, aggression: 0.5}}\n"),
			bad:  withPolicy("    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, aggression: 0}}\n"),
			nack: "slow_start_config.aggression"},
		{name: "warmup minimum percent 150", path: "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
			good: withPolicy("    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, minimumPercent: 10}}\n"),
			bad:  withPolicy("    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, minimumPercent: 150}}\n"),
			nack: "MinWeightPercent"},
		// Endpoints.
		{name: "workload address 999.1.1.1", path: "spec.address",
			good: withWorkload("{address: 10.1.0.3, labels: {app: reviews, version: v3}}"),
			bad:  withWorkload("{address: 999.1.1.1, labels: {app: reviews, version: v3}}"),
			silent: func(res generate.Resources) error {
				// It becomes an endpoint that can never be reached, and
				// Envoy would refuse it: EDS addresses must be IPs.
				return hasEndpoint(res, "999.1.1.1")
			}},
		{name: "workload on a unix socket", path: "spec.address",
			good: withWorkload("{address: 10.1.0.3, labels: {app: reviews, version: v3}}"),
			bad:  withWorkload("{address: 'unix:///var/run/reviews.sock', labels: {app: reviews, version: v3}}"),
			silent: func(res generate.Resources) error {
				return hasEndpoint(res, "unix:///var/run/reviews.sock")
			}},
		{name: "workload port 70000", path: "spec.ports.http",
			good: withWorkload("{address: 10.1.0.3, ports: {http: 19080}, labels: {app: reviews, version: v3}}"),
			bad:  withWorkload("{address: 10.1.0.3, ports: {http: 70000}, labels: {app: reviews, version: v3}}"),
			nack: "SocketAddress.PortValue"},
	}
}

// TestProxyRejectsWhatValidationRejects proves, value by value, that the
// control plane refuses what the proxy would: the good variant passes
// both; the bad one is an error at its field path, and the xDS a control
// plane without that check would generate is NACKed by weft-proxy (or,
// where weft-proxy is more lenient than Envoy, silently means something
// else, shown by the case's check).
func TestProxyRejectsWhatValidationRejects(t *testing.T) {
	for _, tc := range parityCases() {
		t.Run(tc.name, func(t *testing.T) {
			if errs := controlPlaneErrors(tc.good); len(errs) > 0 {
				t.Fatalf("good config rejected: %v", errs)
			}
			if err := proxyVerdict(t, generated(unvalidatedSnapshot(t, tc.good))); err != nil {
				t.Fatalf("proxy rejects the good config: %v", err)
			}

			errs := controlPlaneErrors(tc.bad)
			found := false
			for _, d := range errs {
				found = found || d.Path == tc.path
			}
			if !found {
				t.Errorf("control plane: no error at %s; got %v", tc.path, errs)
			}

			res := generated(unvalidatedSnapshot(t, tc.bad))
			err := proxyVerdict(t, res)
			switch {
			case tc.nack != "" && err == nil:
				t.Errorf("proxy accepts the bad config; want a NACK mentioning %q", tc.nack)
			case tc.nack != "" && !strings.Contains(err.Error(), tc.nack):
				t.Errorf("proxy NACK %q does not mention %q", err, tc.nack)
			case tc.nack == "" && err != nil:
				t.Errorf("proxy NACKs (%v); the case expects it to accept and misread the value", err)
			case tc.nack == "":
				if serr := tc.silent(res); serr != nil {
					t.Errorf("the bad value did not reach the proxy as expected: %v", serr)
				}
			}
		})
	}
}

// TestProxyAcceptsWhatValidationAccepts checks the other direction on the
// edge cases: Istio configs the control plane accepts are applied by the
// proxy, not NACKed.
func TestProxyAcceptsWhatValidationAccepts(t *testing.T) {
	r := "    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n"
	for _, tc := range []struct{ name, docs string }{
		{"withoutHeaders regex * is presence", withRoute("  - match: [{withoutHeaders: {x-canary: {regex: '*'}}}]\n" + r)},
		{"scheme match", withRoute("  - match: [{scheme: {exact: http}}]\n" + r)},
		{"pseudo-header matches", withRoute("  - match: [{headers: {':path': {prefix: /v2}, ':method': {exact: POST}, ':authority': {exact: reviews}}}]\n" + r)},
		{"empty uri prefix", withRoute("  - match: [{uri: {prefix: ''}}]\n" + r)},
		{"literal percent in a header", withRoute("  - route: [{destination: {host: reviews}}]\n    headers: {response: {set: {x-discount: '10%%'}}}\n")},
		{"authority rewrite through headers", withRoute("  - route: [{destination: {host: reviews}}]\n    headers: {request: {set: {':authority': reviews.internal}}}\n")},
		{"delegate without hosts", withRoute("  - route: [{destination: {host: reviews}}]\n") + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: delegate}
spec:
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
`},
		{"every retry condition", withRoute("  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 2, retryOn: '5xx,gateway-error,reset,connect-failure,retriable-4xx,refused-stream,retriable-status-codes,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable,503'}\n")},
		{"warmup aggression below 1", withPolicy("    loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 30s, aggression: 0.5, minimumPercent: 0}}\n")},
		{"distribute with failoverPriority", withPolicy("    loadBalancer: {localityLbSetting: {distribute: [{from: 'us-east/*', to: {'us-east/*': 100}}], failoverPriority: [version]}}\n    outlierDetection: {consecutive5xxErrors: 5}\n")},
		{"tcp idle timeout 0s disables it", withPolicy("    connectionPool: {tcp: {idleTimeout: 0s}}\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if errs := controlPlaneErrors(tc.docs); len(errs) > 0 {
				t.Fatalf("control plane rejects it: %v", errs)
			}
			if err := proxyVerdict(t, generated(unvalidatedSnapshot(t, tc.docs))); err != nil {
				t.Fatalf("proxy rejects it: %v", err)
			}
		})
	}
}

// firstRoute is the first route of the reviews virtual host.
func firstRoute(res generate.Resources) *route.Route {
	for _, r := range res.Routes {
		for _, vh := range r.(*route.RouteConfiguration).GetVirtualHosts() {
			if strings.HasPrefix(vh.GetName(), "reviews.") && len(vh.GetRoutes()) > 0 {
				return vh.GetRoutes()[0]
			}
		}
	}
	return nil
}

// hasEndpoint reports an error unless some assignment has an endpoint at addr.
func hasEndpoint(res generate.Resources, addr string) error {
	for _, r := range res.Endpoints {
		for _, l := range r.(*endpoint.ClusterLoadAssignment).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == addr {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("no endpoint at %s", addr)
}
