package generate

import (
	"math"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	xdstype "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

// DestinationRule trafficPolicy: connectionPool and outlierDetection, as
// Istio's cluster builder applies them (pilot/pkg/networking/core
// cluster_traffic_policy.go and MergeTrafficPolicy).

// mergedTrafficPolicy is the policy that governs one cluster: the
// DestinationRule's top-level policy, overridden by its portLevelSettings
// for the port, then by the subset's policy, then by the subset's
// portLevelSettings for the port. Each component (connectionPool,
// outlierDetection, loadBalancer, tls) is taken whole from the most
// specific level that sets it; a matching portLevelSettings entry replaces
// all of them, unset ones falling back to the defaults (Istio's semantics).
// Nil when there is no DestinationRule.
func mergedTrafficPolicy(s *mesh.Snapshot, dv mesh.DRView, host string, port uint32, subset string) *networking.TrafficPolicy {
	dr := s.Subsets.Rules(dv, host).Rule
	if dr == nil {
		return nil
	}
	policy := mergeTrafficPolicy(nil, dr.Spec.GetTrafficPolicy(), port)
	if subset == "" {
		return policy
	}
	for _, sub := range dr.Spec.GetSubsets() {
		if sub.GetName() == subset {
			return mergeTrafficPolicy(policy, sub.GetTrafficPolicy(), port)
		}
	}
	return policy
}

// mergeTrafficPolicy is Istio's MergeTrafficPolicy: over overrides base
// component by component, and over's portLevelSettings entry for port (if
// any) replaces the result.
func mergeTrafficPolicy(base, over *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	if over == nil {
		return base
	}
	merged := &networking.TrafficPolicy{}
	if base != nil {
		merged.ConnectionPool = base.GetConnectionPool()
		merged.OutlierDetection = base.GetOutlierDetection()
		merged.LoadBalancer = base.GetLoadBalancer()
		merged.Tls = base.GetTls()
	}
	if over.GetConnectionPool() != nil {
		merged.ConnectionPool = over.GetConnectionPool()
	}
	if over.GetOutlierDetection() != nil {
		merged.OutlierDetection = over.GetOutlierDetection()
	}
	if over.GetLoadBalancer() != nil {
		merged.LoadBalancer = over.GetLoadBalancer()
	}
	if over.GetTls() != nil {
		merged.Tls = over.GetTls()
	}
	for _, pl := range over.GetPortLevelSettings() {
		if pl.GetPort() != nil && pl.GetPort().GetNumber() == port {
			// Port-level policies do not inherit: unset parts are defaults.
			merged.ConnectionPool = pl.GetConnectionPool()
			merged.OutlierDetection = pl.GetOutlierDetection()
			merged.LoadBalancer = pl.GetLoadBalancer()
			merged.Tls = pl.GetTls()
			break
		}
	}
	return merged
}

// withTrafficPolicy applies the DestinationRule's connection pool and
// outlier detection to an outbound cluster of svc's port p (subset may be
// empty) and returns c.
func withTrafficPolicy(s *mesh.Snapshot, dv mesh.DRView, svc *registry.Service, p registry.Port, subset string, c *cluster.Cluster) *cluster.Cluster {
	policy := mergedTrafficPolicy(s, dv, svc.Hostname, p.Number, subset)
	applyConnectionPool(c, policy.GetConnectionPool(), p.Protocol, true)
	applyOutlierDetection(c, policy.GetOutlierDetection())
	return c
}

// withInboundConnectionPool applies the connection pool of the first
// service's DestinationRule to an inbound cluster, as Istio does (only the
// connection pool makes sense inbound), and returns c.
func withInboundConnectionPool(s *mesh.Snapshot, dv mesh.DRView, port uint32, proto registry.Protocol, svcs []*registry.Service, c *cluster.Cluster) *cluster.Cluster {
	var cp *networking.ConnectionPoolSettings
	if len(svcs) > 0 {
		cp = mergedTrafficPolicy(s, dv, svcs[0].Hostname, port, "").GetConnectionPool()
	}
	applyConnectionPool(c, cp, proto, false)
	return c
}

// defaultThresholds are Istio's circuit breaker defaults: effectively
// unlimited (Envoy's own defaults, 1024 and 3 retries, are too low for a
// mesh), with remaining-capacity gauges tracked.
func defaultThresholds() *cluster.CircuitBreakers_Thresholds {
	return &cluster.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(math.MaxUint32),
		MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
		MaxRequests:        wrapperspb.UInt32(math.MaxUint32),
		MaxRetries:         wrapperspb.UInt32(math.MaxUint32),
		TrackRemaining:     true,
	}
}

// applyConnectionPool is Istio's applyConnectionPool (+ applyH2Upgrade for
// outbound clusters). settings may be nil: every cluster gets the default
// thresholds.
func applyConnectionPool(c *cluster.Cluster, settings *networking.ConnectionPoolSettings, proto registry.Protocol, outbound bool) {
	th := defaultThresholds()
	var idle, maxConnDuration *durationpb.Duration
	var maxPerConn, maxStreams uint32
	var h2KeepAlive *networking.ConnectionPoolSettings_HTTPSettings_ConnectionKeepalive
	if h := settings.GetHttp(); h != nil {
		if h.GetHttp2MaxRequests() > 0 {
			th.MaxRequests = wrapperspb.UInt32(uint32(h.GetHttp2MaxRequests()))
		}
		if h.GetHttp1MaxPendingRequests() > 0 {
			th.MaxPendingRequests = wrapperspb.UInt32(uint32(h.GetHttp1MaxPendingRequests()))
		}
		if h.GetMaxRetries() > 0 {
			th.MaxRetries = wrapperspb.UInt32(uint32(h.GetMaxRetries()))
		}
		idle = h.GetIdleTimeout()
		maxPerConn = uint32(max(h.GetMaxRequestsPerConnection(), 0))
		maxStreams = uint32(max(h.GetMaxConcurrentStreams(), 0))
		h2KeepAlive = h.GetHttp2KeepAlive()
	}
	if t := settings.GetTcp(); t != nil {
		if t.GetConnectTimeout() != nil {
			c.ConnectTimeout = t.GetConnectTimeout()
		}
		if t.GetMaxConnections() > 0 {
			th.MaxConnections = wrapperspb.UInt32(uint32(t.GetMaxConnections()))
		}
		maxConnDuration = t.GetMaxConnectionDuration()
		if idle == nil {
			idle = t.GetIdleTimeout()
		}
		if ka := t.GetTcpKeepalive(); ka != nil {
			// An empty tcp_keepalive sets SO_KEEPALIVE with the OS defaults.
			k := &core.TcpKeepalive{}
			if ka.GetProbes() > 0 {
				k.KeepaliveProbes = wrapperspb.UInt32(ka.GetProbes())
			}
			if ka.GetTime() != nil {
				k.KeepaliveTime = wrapperspb.UInt32(uint32(ka.GetTime().GetSeconds()))
			}
			if ka.GetInterval() != nil {
				k.KeepaliveInterval = wrapperspb.UInt32(uint32(ka.GetInterval().GetSeconds()))
			}
			c.UpstreamConnectionOptions = &cluster.UpstreamConnectionOptions{TcpKeepalive: k}
		}
	}
	c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{th}}

	h2Upgrade := outbound && proto.IsHTTP() && !proto.IsHTTP2() &&
		settings.GetHttp().GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE
	useClient := settings.GetHttp().GetUseClientProtocol()
	if idle == nil && maxConnDuration == nil && maxPerConn == 0 && maxStreams == 0 && h2KeepAlive == nil && !h2Upgrade && !useClient {
		return
	}
	opts := httpProtocolOptions(c)
	if opts == nil {
		return // not an HTTP cluster: nothing to carry these
	}
	if h2Upgrade {
		opts.UpstreamProtocolOptions = &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
			},
		}
	}
	if idle != nil || maxConnDuration != nil || maxPerConn > 0 {
		common := &core.HttpProtocolOptions{IdleTimeout: idle, MaxConnectionDuration: maxConnDuration}
		if maxPerConn > 0 {
			common.MaxRequestsPerConnection = wrapperspb.UInt32(maxPerConn)
		}
		opts.CommonHttpProtocolOptions = common
	}
	if h2 := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions(); h2 != nil {
		if maxStreams > 0 {
			h2.MaxConcurrentStreams = wrapperspb.UInt32(maxStreams)
		}
		if h2KeepAlive != nil {
			// As Istio: only an HTTP/2 cluster's connections are pinged.
			h2.ConnectionKeepalive = &core.KeepaliveSettings{Interval: h2KeepAlive.GetInterval(), Timeout: h2KeepAlive.GetTimeout()}
		}
	}
	if useClient {
		// Istio's setUseDownstreamProtocol, applied last as Istio does: the
		// upstream speaks whatever HTTP version the downstream request used.
		opts.UpstreamProtocolOptions = &upstreamhttp.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttp.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &core.Http1ProtocolOptions{},
				Http2ProtocolOptions: &core.Http2ProtocolOptions{},
			},
		}
	}
	c.TypedExtensionProtocolOptions[httpProtocolOptionsKey] = mustAny(opts)
}

// httpProtocolOptions decodes the cluster's upstream HTTP options, or
// returns nil when it has none.
func httpProtocolOptions(c *cluster.Cluster) *upstreamhttp.HttpProtocolOptions {
	a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if a == nil {
		return nil
	}
	var o upstreamhttp.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil { // we wrote it: cannot fail
		panic(err)
	}
	return &o
}

// applyOutlierDetection is Istio's applyOutlierDetection: success-rate
// detection off, each consecutive-error detector enforced at 100% when its
// threshold is set, failure-percentage detection enforced when
// failurePercentageThreshold is set, and the panic threshold set from
// minHealthPercent (so 0, Istio's default, disables panic mode).
func applyOutlierDetection(c *cluster.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	out := &cluster.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	if e := od.GetConsecutive_5XxErrors(); e != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enforcing(e.GetValue()))
	}
	if e := od.GetConsecutiveGatewayErrors(); e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enforcing(e.GetValue()))
	}
	if t := od.GetFailurePercentageThreshold(); t != nil {
		// Istio 1.32's failurePercentageThreshold: Envoy's failure
		// percentage detector, enforced; its minimum hosts (5) and
		// request volume (50) are Envoy's defaults.
		out.FailurePercentageThreshold = wrapperspb.UInt32(t.GetValue())
		out.EnforcingFailurePercentage = wrapperspb.UInt32(100)
	}
	out.Interval = od.GetInterval()
	out.BaseEjectionTime = od.GetBaseEjectionTime()
	if od.GetMaxEjectionPercent() > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(od.GetMaxEjectionPercent()))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if n := od.GetConsecutiveLocalOriginFailures().GetValue(); n > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(n)
			out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
		}
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
	}
	c.OutlierDetection = out
	if c.CommonLbConfig == nil {
		c.CommonLbConfig = &cluster.Cluster_CommonLbConfig{}
	}
	c.CommonLbConfig.HealthyPanicThreshold = &xdstype.Percent{Value: float64(max(od.GetMinHealthPercent(), 0))}
}

func enforcing(threshold uint32) uint32 {
	if threshold > 0 {
		return 100
	}
	return 0
}
