package config

import (
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// TestValidationRules checks Istio's rules one by one (and Weft's stricter
// ones), each on a minimal spec: want is every diagnostic, as
// "<severity> <path>: <message prefix>"; nil means the spec is accepted
// without a word. testdata/mistakes has the realistic cases.
func TestValidationRules(t *testing.T) {
	const route = "http: [{route: [{destination: {host: reviews}}]}]\n"
	tests := []struct {
		name string
		kind Kind
		ns   string
		spec string
		want []string
	}{
		// VirtualService: hosts, delegates, gateways.
		{"ip address host", KindVirtualService, "", "hosts: [10.0.0.1]\n" + route, nil},
		{"invalid host", KindVirtualService, "", "hosts: [foo.ba!r]\n" + route,
			[]string{`error spec.hosts[0]: domain name "foo.ba!r": label "ba!r" is not a DNS-1123 label`}},
		{"wildcard hosts overlap", KindVirtualService, "", "hosts: ['*.foo.bar', '*.bar']\n" + route,
			[]string{`error spec.hosts[1]: host "*.bar" overlaps spec.hosts[0] "*.foo.bar"`}},
		{"no routes", KindVirtualService, "", "hosts: [reviews]\n",
			[]string{`error spec: at least one of http, tcp or tls routes is required`}},
		{"delegate route delegates", KindVirtualService, "", "http: [{delegate: {name: other}}]\n",
			[]string{
				`error spec.http[0]: one of route, redirect or directResponse is required`,
				`error spec.http[0].delegate: a delegate VirtualService (one without hosts) cannot delegate again`,
			}},
		{"root route with route", KindVirtualService, "", "hosts: [reviews]\nhttp: [{delegate: {name: d}, route: [{destination: {host: reviews}}]}]\n",
			[]string{
				`error spec.http[0].route: a rule with delegate must not set route`,
				`warning spec.http[0].delegate: delegation is not supported by Weft yet`,
			}},
		{"gateway names", KindVirtualService, "", "hosts: [reviews]\ngateways: [mesh, ns1/gw, gw.ns1, b@d, ns1/*, '*/gw']\n" + route,
			[]string{
				`error spec.gateways[3]: gateway "b@d": domain name "b@d": label "b@d" is not`,
				`error spec.gateways[4]: gateway "ns1/*": name "*" is not a DNS-1123 label`,
				`error spec.gateways[5]: gateway "*/gw": namespace "*" is not a DNS-1123 label`,
				`warning spec.gateways[2]: gateway "gw.ns1" uses the legacy name.namespace form; prefer ns1/gw`,
			}},
		{"exportTo", KindVirtualService, "prod", "hosts: [reviews]\nexportTo: ['.', prod, '*']\n" + route,
			[]string{
				`error spec.exportTo: "*" (every namespace) cannot be combined`,
				`error spec.exportTo[1]: duplicate exportTo entry "prod"`,
			}},
		{"exportTo applied", KindVirtualService, "prod", "hosts: [reviews]\nexportTo: ['.', qa]\n" + route, nil},
		{"dr exportTo is applied", KindDestinationRule, "prod", "host: reviews\nexportTo: ['.', qa]\n", nil},
		// http routes.
		{"deprecated mirrorPercent", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}], mirror: {host: reviews}, mirrorPercent: 101}]\n",
			[]string{`error spec.http[0].mirrorPercent: mirrorPercent 101 is over 100`, `warning spec.http[0].mirrorPercent: mirrorPercent is deprecated`}},
		{"mirrors", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}], mirrors: [{percentage: {value: 5}}, {destination: {host: reviews, subset: Bad_}, percentage: {value: 101}}]}]\n",
			[]string{
				`error spec.http[0].mirrors[0].destination: destination is required`,
				`error spec.http[0].mirrors[1].destination.subset: subset name "Bad_" is not`,
				`error spec.http[0].mirrors[1].percentage: percentage 101 out of range 0-100`,
			}},
		{"fault variants", KindVirtualService, "", `hosts: [reviews]
http:
- route: [{destination: {host: reviews}}]
  fault: {abort: {percentage: {value: 1}}, delay: {percentage: {value: 0.00001}}}
- route: [{destination: {host: reviews}}]
  fault: {abort: {http2Error: CANCEL}, delay: {exponentialDelay: 1s, percent: 150}}
`, []string{
			`error spec.http[0].fault.delay.percentage: percentage 1e-05 out of range: want 0, or 0.0001 to 100`,
			`error spec.http[1].fault.abort.http2Error: http2Error aborts are not supported`,
			`error spec.http[1].fault.delay.exponentialDelay: exponentialDelay is not supported`,
			`error spec.http[1].fault.delay.percent: percent 150 out of range 0-100`,
			`warning spec.http[0].fault.abort: abort has no httpStatus or grpcStatus`,
			`warning spec.http[0].fault.delay: delay has no fixedDelay`,
			`warning spec.http[1]: this rule is never used`,
		}},
		{"cors", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}], corsPolicy: {allowHeaders: [x-a, '*', 'x b'], exposeHeaders: [''], maxAge: 1.5s}}]\n",
			[]string{
				`error spec.http[0].corsPolicy.allowHeaders[2]: "x b" is not a valid header name`,
				`error spec.http[0].corsPolicy.exposeHeaders[0]: "" is not a valid header name`,
				`error spec.http[0].corsPolicy.maxAge: maxAge is sent in whole seconds`,
			}},
		{"redirects", KindVirtualService, "", `hosts: [reviews]
http:
- match: [{uri: {exact: /a}}]
  redirect: {uri: /b, prefixRewrite: /c, scheme: ftp}
- redirect: {derivePort: FROM_REQUEST_PORT}
`, []string{
			`error spec.http[0].redirect: uri and prefixRewrite are mutually exclusive`,
			`error spec.http[0].redirect.prefixRewrite: prefixRewrite needs every uri match to be a prefix match; match[0].uri is not`,
			`error spec.http[0].redirect.scheme: scheme "ftp": want http or https`,
		}},
		{"direct response bodies", KindVirtualService, "", "hosts: [reviews]\nhttp:\n- match: [{uri: {exact: /a}}]\n  directResponse: {status: 200, body: {string: " + strings.Repeat("a", 200<<10) + "}}\n- directResponse: {status: 200, body: {string: " + strings.Repeat("a", 2<<20) + "}}\n",
			[]string{
				`error spec.http[1].directResponse.body: body is 2097152 bytes; at most 1 MiB`,
				`warning spec.http[0].directResponse.body: body is 204800 bytes`,
			}},
		{"rewrites", KindVirtualService, "", "hosts: [reviews]\nhttp:\n- match: [{uri: {exact: /a}}]\n  rewrite: {}\n  route: [{destination: {host: reviews}}]\n- route: [{destination: {host: reviews}}]\n  rewrite: {uriRegexRewrite: {match: '^/a'}}\n",
			[]string{
				`error spec.http[0].rewrite: a rewrite needs uri, uriRegexRewrite or authority`,
				`error spec.http[1].rewrite.uriRegexRewrite: uriRegexRewrite needs both match and rewrite`,
			}},
		{"durations", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}], timeout: 0.0015s, retries: {attempts: -1, perTryTimeout: 0s}}]\n",
			[]string{
				`error spec.http[0].retries.attempts: attempts -1 must not be negative`,
				`error spec.http[0].retries.perTryTimeout: duration 0s must be at least 1ms`,
				`error spec.http[0].timeout: duration 1.5ms must be a whole number of milliseconds`,
			}},
		{"retryOn status codes", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}], retries: {attempts: 2, retryOn: '503,599,gateway-error,'}}]\n",
			[]string{
				`error spec.http[0].retries.retryOn: unknown condition ""`,
				`error spec.http[0].retries.retryOn: unknown condition "599"`,
			}},
		{"match details", KindVirtualService, "", `hosts: [reviews]
http:
- match:
  - port: 70000
    sourceLabels: {"-bad": x}
    gateways: [b@d]
    withoutHeaders: {"x y": {exact: a}}
    method: {regex: "` + strings.Repeat("a", 1025) + `"}
  route: [{destination: {host: reviews}}]
`, []string{
			`error spec.http[0].match[0].gateways[0]: gateway "b@d"`,
			`error spec.http[0].match[0].method.regex: regex is 1025 characters long; at most 1024`,
			`error spec.http[0].match[0].port: port 70000 out of range 1-65535`,
			`error spec.http[0].match[0].sourceLabels.-bad: label key "-bad" is invalid`,
			`error spec.http[0].match[0].withoutHeaders.x y: header name "x y" is not a valid HTTP header name`,
		}},
		{"destinations", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: '*'}, weight: -1}, {destination: {host: reviews, subset: v.1}, headers: {request: {remove: [':path']}}}]}]\n",
			[]string{
				`error spec.http[0].route: the total weight of 2 destinations is 0`,
				`error spec.http[0].route[0].destination.host: destination host cannot be "*"`,
				`error spec.http[0].route[0].weight: weight -1 must not be negative`,
				`error spec.http[0].route[1].destination.subset: subset name "v.1" is not a DNS-1123 label`,
				`error spec.http[0].route[1].headers.request.remove[0]: pseudo-header ":path" cannot be changed`,
			}},
		{"header format", KindVirtualService, "", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}], headers: {response: {set: {x-a: '100%', x-b: \"tab\\there\"}}}}]\n",
			[]string{`error spec.http[0].headers.response.set.x-a: header value "100%": a lone % at the end`}},
		{"duplicate matches", KindVirtualService, "", `hosts: [reviews]
http:
- match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
  route: [{destination: {host: reviews}}]
- match: [{name: again, uri: {prefix: /a}}, {uri: {prefix: /b}}]
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /a}, headers: {x: {exact: z}}}]
  route: [{destination: {host: reviews}}]
`, []string{
			`warning spec.http[1]: this rule is never used: earlier rules take every one of its matches`,
			`warning spec.http[1].match[0]: this match is never used: spec.http[0] has the same conditions`,
			`warning spec.http[1].match[1]: this match is never used: spec.http[0] has the same conditions`,
		}},
		// tcp and tls routes.
		{"tcp routes", KindVirtualService, "", "hosts: [db.example.com]\ntcp:\n- match: [{destinationSubnets: [10.0.0.0/33, 10.0.0.1], port: 70000}]\n",
			[]string{
				`error spec.tcp[0].match[0].destinationSubnets[0]: "10.0.0.0/33" is not a valid CIDR block`,
				`error spec.tcp[0].match[0].port: port 70000 out of range 1-65535`,
				`error spec.tcp[0].route: a tcp route needs a route`,
			}},
		{"tls routes", KindVirtualService, "", `hosts: ["*.example.com"]
tls:
- match: [{sniHosts: [a.example.com, b.other.com, 10.0.0.1]}, {}]
  route: [{destination: {host: a.example.com}}]
- route: [{destination: {host: a.example.com}}]
`, []string{
			`error spec.tls[0].match[0].sniHosts[1]: SNI host "b.other.com" is not covered by any of the VirtualService's hosts [*.example.com]`,
			`error spec.tls[0].match[1].sniHosts: a tls match needs at least one SNI host`,
			`error spec.tls[1].match: a tls route needs at least one match`,
			`warning spec.tls[0].match[0].sniHosts[2]: SNI host "10.0.0.1" is an IP address`,
		}},

		// DestinationRule.
		{"dr host and subsets", KindDestinationRule, "", "host: 'reviews.*'\nsubsets: [{name: v1, labels: {version: 'v1 beta'}}]\n",
			[]string{
				`error spec.host: domain name "reviews.*": label "*" is not`,
				`error spec.subsets[0].labels.version: label value "v1 beta" is invalid`,
			}},
		{"outlier detection", KindDestinationRule, "", "host: reviews\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: -1, outlierDetectionHttpErrorCodes: [503, 99], baseEjectionTime: 0.0005s}}\n",
			[]string{
				`error spec.trafficPolicy.outlierDetection.baseEjectionTime: duration 500µs must be at least 1ms`,
				`error spec.trafficPolicy.outlierDetection.maxEjectionPercent: maxEjectionPercent -1 out of range 0-100`,
				`error spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]: HTTP status 99 out of range 100-599`,
			}},
		{"connection pool", KindDestinationRule, "", "host: reviews\ntrafficPolicy: {connectionPool: {http: {http2MaxRequests: -1, h2UpgradePolicy: UPGRADE, useClientProtocol: true, http2KeepAlive: {timeout: 1s}}, tcp: {idleTimeout: 0s}}}\n",
			[]string{
				`error spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval: interval is required`,
				`error spec.trafficPolicy.connectionPool.http.http2MaxRequests: -1 must not be negative`,
				`error spec.trafficPolicy.connectionPool.http.useClientProtocol: useClientProtocol cannot be true with h2UpgradePolicy: UPGRADE`,
			}},
		{"consistent hash", KindDestinationRule, "", `host: reviews
subsets:
- name: a
  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, attributes: [{name: x}, {name: x}, {}]}}}}
- name: b
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, minimumRingSize: 10, ringHash: {}}}}
- name: c
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}}
`, []string{
			`error spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name: duplicate cookie attribute "x"`,
			`error spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[2].name: cookie attribute name is required`,
			`error spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.minimumRingSize: minimumRingSize cannot be combined with ringHash or maglev`,
			`error spec.subsets[2].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize 5000011 must be less than 5000011`,
			`warning spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.minimumRingSize: minimumRingSize is deprecated`,
		}},
		{"locality settings", KindDestinationRule, "", `host: reviews
trafficPolicy:
  outlierDetection: {consecutive5xxErrors: 3}
  loadBalancer:
    localityLbSetting:
      distribute: [{from: us-east, to: {us-east: 0, us-west: 100}}]
  portLevelSettings:
  - port: {number: 80}
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer:
      localityLbSetting:
        failover: [{from: us-east/z1, to: us-west}]
        failoverPriority: [topology.kubernetes.io/zone]
  - port: {number: 81}
    loadBalancer:
      localityLbSetting: {failover: [{from: us-east, to: us-west}]}
      zoneAwareLbSetting: {}
  - port: {number: 70000}
`, []string{
			`error spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to.us-east: weight 0 out of range 1-100`,
			`error spec.trafficPolicy.portLevelSettings[0].loadBalancer.localityLbSetting.failoverPriority[0]: failoverPriority cannot name the topology label "topology.kubernetes.io/zone" when failover is set`,
			`error spec.trafficPolicy.portLevelSettings[1].loadBalancer: localityLbSetting and zoneAwareLbSetting are mutually exclusive`,
			`error spec.trafficPolicy.portLevelSettings[2]: port traffic policy is empty`,
			`error spec.trafficPolicy.portLevelSettings[2].port.number: port 70000 out of range 1-65535`,
			`warning spec.trafficPolicy.portLevelSettings[1].loadBalancer.localityLbSetting: failover needs outlierDetection`,
		}},
		{"tunnel and proxy protocol", KindDestinationRule, "", "host: reviews\nsubsets:\n- {name: a, trafficPolicy: {tunnel: {protocol: GET, targetHost: 'bad host', targetPort: 0}}}\n- {name: b, trafficPolicy: {tunnel: {targetHost: 10.0.0.1, targetPort: 80}, proxyProtocol: {}}}\n",
			[]string{
				`error spec.subsets[0].trafficPolicy.tunnel.protocol: tunnel protocol "GET": want CONNECT or POST`,
				`error spec.subsets[0].trafficPolicy.tunnel.targetHost: targetHost "bad host" must be a DNS name or an IP address`,
				`error spec.subsets[0].trafficPolicy.tunnel.targetPort: port 0 out of range 1-65535`,
				`error spec.subsets[1].trafficPolicy: tunnel and proxyProtocol are mutually exclusive`,
			}},
		{"client tls", KindDestinationRule, "prod", `host: reviews
subsets:
- {name: a, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}}}
- {name: b, trafficPolicy: {tls: {mode: MUTUAL, credentialName: cred, privateKey: /key.pem}}}
- {name: c, trafficPolicy: {tls: {mode: SIMPLE, credentialName: "configmap://other/ca"}}}
`, []string{
			`error spec.subsets[0].trafficPolicy.tls.insecureSkipVerify: insecureSkipVerify: true cannot be combined`,
			`error spec.subsets[1].trafficPolicy.tls.credentialName: with credentialName, clientCertificate, privateKey, caCertificates and caCrl must not be set`,
			`error spec.subsets[2].trafficPolicy.tls.credentialName: credentialName "configmap://other/ca": the ConfigMap must be in the rule's namespace "prod"`,
			`warning spec.subsets[1].trafficPolicy.tls.credentialName: credentialName is applied by gateways only`,
			`warning spec.subsets[2].trafficPolicy.tls.credentialName: a CA from a ConfigMap is not supported by Weft yet`,
		}},
		{"workload selector", KindDestinationRule, "prod", "host: reviews\nexportTo: ['*']\nworkloadSelector: {matchLabels: {app: '*'}}\ntrafficPolicy: {retryBudget: {percent: 150}}\n",
			[]string{
				`error spec.exportTo[0]: a DestinationRule with a workloadSelector can be exported only to its own namespace`,
				`error spec.trafficPolicy.retryBudget.percent: percent 150 out of range 0-100`,
				`error spec.workloadSelector.matchLabels.app: wildcards are not supported in selectors`,
			}},

		// ServiceEntry.
		{"se hosts and addresses", KindServiceEntry, "", "hosts: ['*', '*foo.com']\naddresses: [10.0.0.0/8, 300.1.1.1]\nresolution: STATIC\n",
			[]string{
				`error spec.addresses[1]: "300.1.1.1" is not an IP address or CIDR block`,
				`error spec.hosts[0]: host "*" is not allowed`,
				`warning spec.hosts[1]: partial wildcard "*foo.com" is not supported`,
			}},
		{"se none with selector", KindServiceEntry, "", "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nworkloadSelector: {labels: {}}\n",
			[]string{
				`warning spec.workloadSelector: workloadSelector has no labels, so it selects every WorkloadEntry`,
				`warning spec.workloadSelector: workloadSelector should not be set with resolution NONE`,
			}},
		{"se dns without endpoints", KindServiceEntry, "", "hosts: ['*.example.com']\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]\n",
			[]string{
				`error spec.hosts[0]: with resolution DNS and no endpoints, hosts are resolved by DNS`,
			}},
		{"se dns resolved by the proxies", KindServiceEntry, "", "hosts: [api.example.com]\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]\n", nil},
		{"se dns endpoint names", KindServiceEntry, "", "hosts: [api.example.com]\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]\nendpoints: [{address: eu.api.example.com}, {address: 10.0.0.1}]\n", nil},
		{"se static endpoint name", KindServiceEntry, "", "hosts: [api.example.com]\nresolution: STATIC\nports: [{number: 443, name: tls, protocol: TLS}]\nendpoints: [{address: eu.api.example.com}]\n",
			[]string{`error spec.endpoints[0].address: address "eu.api.example.com" must be an IP address with resolution STATIC`}},
		{"se dns round robin", KindServiceEntry, "", "hosts: [a.example.com]\nresolution: DNS_ROUND_ROBIN\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: 10.0.0.1}, {address: 10.0.0.2}]\n",
			[]string{`error spec.endpoints: resolution DNS_ROUND_ROBIN allows at most one endpoint, not 2`}},
		{"se dynamic dns", KindServiceEntry, "", "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\naddresses: [10.0.0.1]\nports: [{number: 5432, name: pg, protocol: TCP}]\n",
			[]string{
				`error spec.addresses: addresses are not allowed with resolution DYNAMIC_DNS`,
				`error spec.ports[0].protocol: with resolution DYNAMIC_DNS a port must be HTTP, TLS, GRPC or HTTP2`,
				`warning spec.resolution: Weft does not support resolution DYNAMIC_DNS yet`,
			}},
		{"se protocols", KindServiceEntry, "", "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 53, name: dns, protocol: UDP}, {number: 80, name: web, protocol: http}]\n",
			[]string{`warning spec.ports[0].protocol: Weft does not support protocol "UDP" yet`}},
		{"se export to", KindServiceEntry, "", "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nexportTo: ['~', '.']\n",
			[]string{`error spec.exportTo: "~" (no one) cannot be combined`}},
		{"se export to nobody", KindServiceEntry, "", "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nexportTo: ['~']\n",
			nil},
		{"se unix endpoint with two ports", KindServiceEntry, "", "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, protocol: HTTP2}]\nendpoints: [{address: 'unix://relative.sock'}]\n",
			[]string{
				`error spec.endpoints[0].address: a unix socket endpoint needs a ServiceEntry with exactly one port`,
				`error spec.endpoints[0].address: unix socket "relative.sock" must be an absolute path`,
				`error spec.endpoints[0].address: unix socket endpoints are not supported by Weft`,
			}},

		// WorkloadEntry.
		{"we labels, ports, locality", KindWorkloadEntry, "", "address: 10.0.0.1\nlabels: {version: 'v1/2'}\nports: {" + strings.Repeat("p", 63) + ": 80}\nlocality: a/b/c/d\n",
			[]string{
				`error spec.labels.version: label value "v1/2" is invalid`,
				`error spec.locality: locality "a/b/c/d" must be region/zone/subzone`,
				`error spec.ports.` + strings.Repeat("p", 63) + `: port name "` + strings.Repeat("p", 63) + `" is 63 characters long; at most 62`,
			}},
		{"we network without address", KindWorkloadEntry, "", "network: net2\n",
			[]string{`error spec.address: address is required (multi-network endpoints without an address are not supported yet)`}},
		// Gateway: servers, ports, hosts, TLS.
		// Fields new in Istio 1.32 (istio.io/api v1.32).
		{"gateway ecdh curves and alpn", KindGateway, "", "selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*.a.example.com\"]\n  tls: {mode: SIMPLE, credentialName: a-cert, ecdhCurves: [X25519, P-256, brainpool, X25519], alpnProtocols: [h2, '']}\n",
			[]string{
				`error spec.servers[0].tls.alpnProtocols[1]: an ALPN protocol name is 1 to 255 bytes`,
				`warning spec.servers[0].tls.ecdhCurves[2]: ignoring unknown ECDH curve "brainpool"`,
				`warning spec.servers[0].tls.ecdhCurves[3]: ignoring duplicate ECDH curve "X25519"`,
			}},
		{"outlier failure percentage", KindDestinationRule, "", "host: reviews\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: 5, failurePercentageThreshold: 85}}\n", nil},
		{"outlier failure percentage over 100", KindDestinationRule, "", "host: reviews\ntrafficPolicy: {outlierDetection: {failurePercentageThreshold: 101}}\n",
			[]string{`error spec.trafficPolicy.outlierDetection.failurePercentageThreshold: failurePercentageThreshold 101 out of range 0-100`}},
		{"backend utilization", KindDestinationRule, "", "host: reviews\ntrafficPolicy: {loadBalancer: {backendUtilization: {weightUpdatePeriod: 1s}}}\n",
			[]string{`error spec.trafficPolicy.loadBalancer.backendUtilization: backendUtilization (load balancing on utilization the endpoints report, ORCA) is not supported by Weft yet`}},
		{"ca cert credential", KindDestinationRule, "", "host: reviews\ntrafficPolicy: {tls: {mode: SIMPLE, caCertCredentialName: reviews-ca}}\n",
			[]string{`warning spec.trafficPolicy.tls.caCertCredentialName: caCertCredentialName is not supported by Weft yet`}},
		{"gateway ok", KindGateway, "", "selector: {istio: ingressgateway}\nservers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"team-a/*.a.example.com\"]\n  tls: {httpsRedirect: true}\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*.a.example.com\"]\n  tls: {mode: SIMPLE, credentialName: a-cert, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}\n", nil},
		{"gateway no servers", KindGateway, "", "selector: {istio: ingressgateway}\n",
			[]string{`error spec.servers: a gateway must have at least one server`}},
		{"gateway server without hosts or port name", KindGateway, "", "servers: [{port: {number: 80, protocol: HTTP}}]\n",
			[]string{`error spec.servers[0].hosts: a server must list at least one host`, `error spec.servers[0].port.name: port name must be set`}},
		{"gateway bad host", KindGateway, "", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"~/a.example.com\", \"ns/foo*.example.com\"]}]\n",
			[]string{`error spec.servers[0].hosts[0]: host "~/a.example.com": namespace "~" is not allowed`, `error spec.servers[0].hosts[1]: host "ns/foo*.example.com": partial wildcard`}},
		{"gateway https without tls", KindGateway, "", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"]}]\n",
			[]string{`error spec.servers[0].tls: a HTTPS server must have TLS settings`}},
		{"gateway simple without certificate", KindGateway, "", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE}}]\n",
			[]string{`error spec.servers[0].tls.privateKey: SIMPLE TLS requires a private key`, `error spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate`}},
		{"gateway mutual files without ca", KindGateway, "", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}}]\n",
			[]string{`error spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle`}},
		{"gateway istio mutual with credential", KindGateway, "", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: ISTIO_MUTUAL, credentialName: c}}]\n",
			[]string{`error spec.servers[0].tls.credentialName: ISTIO_MUTUAL uses the gateway's mesh certificate`}},
		{"gateway tls on tcp", KindGateway, "", "servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c}}]\n",
			[]string{`error spec.servers[0].tls: a TCP server cannot have TLS settings`}},
		{"gateway duplicate port name and mixed port", KindGateway, "", "servers:\n- {port: {number: 80, name: p, protocol: HTTP}, hosts: [\"*\"]}\n- {port: {number: 80, name: p, protocol: TCP}, hosts: [\"*\"]}\n",
			[]string{`error spec.servers[1].port.name: port names in servers must be unique`, `error spec.servers[1].port.protocol: port 80 is also spec.servers[0] with protocol HTTP`}},
		{"gateway unknown protocol and cipher", KindGateway, "", "servers:\n- {port: {number: 80, name: p, protocol: QUIC}, hosts: [\"*\"]}\n- {port: {number: 443, name: s, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c, cipherSuites: [NOPE]}}\n",
			[]string{`error spec.servers[0].port.protocol: invalid protocol "QUIC"`, `warning spec.servers[1].tls.cipherSuites[0]: ignoring unknown cipher suite "NOPE"`}},
		{"gateway auto passthrough", KindGateway, "", "servers: [{port: {number: 15443, name: tls, protocol: TLS}, hosts: [\"*.local\"], tls: {mode: AUTO_PASSTHROUGH}}]\n",
			[]string{`error spec.servers[0].tls.mode: AUTO_PASSTHROUGH`}},
		{"we dns name", KindWorkloadEntry, "", "address: vm1.example.internal\n",
			[]string{`warning spec.address: address "vm1.example.internal" is a DNS name: proxies resolve it for ServiceEntries with resolution DNS`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := map[Kind]proto.Message{
				KindVirtualService:  &networking.VirtualService{},
				KindDestinationRule: &networking.DestinationRule{},
				KindServiceEntry:    &networking.ServiceEntry{},
				KindWorkloadEntry:   &networking.WorkloadEntry{},
				KindGateway:         &networking.Gateway{},
			}[tc.kind]
			var root yaml.Node
			if err := yaml.Unmarshal([]byte(tc.spec), &root); err != nil {
				t.Fatal(err)
			}
			if len(root.Content) > 0 {
				dec := &yamlDecoder{pos: Positions{}}
				dec.message(root.Content[0], "spec", spec.ProtoReflect())
				if len(dec.errs) > 0 {
					t.Fatalf("decode: %v", dec.errs)
				}
			}
			var got []string
			for _, d := range validateResource(tc.ns, spec) {
				got = append(got, string(d.Severity)+" "+d.Path+": "+d.Message)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.want))
			ok := len(got) == len(want)
			for i := 0; ok && i < len(got); i++ {
				ok = strings.HasPrefix(got[i], want[i])
			}
			if !ok {
				t.Errorf("diagnostics:\ngot:\n\t%s\nwant (prefixes):\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
		})
	}
}
