package dataplane

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/xds/contract"
)

const (
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	defaultConnectTimeout  = 5 * time.Second // Envoy's default
	upstreamIdleTimeout    = 60 * time.Second
)

// clusterPool is the part of a cluster that survives updates which leave the
// Cluster resource unchanged: the connection pools and the round-robin
// position. It is shared by successive runtimes and safe for concurrent use.
type clusterPool struct {
	transport *http.Transport
	h1        *h1Pool // synchronous path for bodiless requests; nil for h2c clusters
	h2        bool
	h2c       *http.Transport  // use_downstream_protocol_config: HTTP/2 requests go here (clientprotocol.go); else nil
	next      atomic.Uint64    // round-robin position
	dialer    *net.Dialer      // shared by transport and h1
	breaker   *breaker         // circuit_breakers (breaker.go)
	outlier   *outlierDetector // outlier_detection (outlier.go); nil when off
	warm      warmTracker      // slow start (slowstart.go)
}

// closeIdle closes the idle connections. Once the pool is retired (or the
// data plane closed) connections given back by in-flight requests are closed
// too (the Transport's are reaped by its IdleConnTimeout).
func (p *clusterPool) closeIdle() {
	p.transport.CloseIdleConnections()
	if p.h2c != nil {
		p.h2c.CloseIdleConnections()
	}
	if p.h1 != nil {
		p.h1.close()
	}
	if p.outlier != nil {
		p.outlier.stop()
	}
}

// clusterRT is a translated Cluster with its endpoints. Immutable.
type clusterRT struct {
	name   string
	cfg    *cluster.Cluster
	cla    *endpointv3.ClusterLoadAssignment
	pool   *clusterPool
	picker *picker
	stats  *clusterStats // envoy_cluster_* counters (clusterstats.go)
	// Metric labels: dstNoEndpoint when no endpoint was chosen (UH) and
	// dstInbound when this cluster serves an inbound listener.
	dstNoEndpoint *telemetry.DstLabels
	dstInbound    *telemetry.DstLabels
}

// errConnect marks upstream dial failures so the forwarder can answer UF.
type errConnect struct{ err error }

func (e *errConnect) Error() string { return "upstream connect: " + e.err.Error() }
func (e *errConnect) Unwrap() error { return e.err }

func newClusterPool(h2 bool, connectTimeout time.Duration) *clusterPool {
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	protocols := new(http.Protocols)
	if h2 {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &errConnect{err}
			}
			return c, nil
		},
		Protocols:           protocols,
		MaxIdleConns:        0, // no global limit
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     upstreamIdleTimeout,
		DisableCompression:  true, // pass Accept-Encoding and bodies through untouched
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     10 * time.Second,
		},
	}
	p := &clusterPool{transport: t, h2: h2, dialer: d}
	if !h2 {
		p.h1 = newH1Pool(d)
	}
	p.next.Store(rand.Uint64()) // proxies should not all start on the same endpoint
	return p
}

// translateCluster builds the runtime of one cluster. prev is the same-named
// cluster of the running runtime, or nil; its pool is reused when the Cluster
// resource is unchanged, its picker too when the endpoints are unchanged.
func (d *Dataplane) translateCluster(c *cluster.Cluster, eps map[string]*endpointv3.ClusterLoadAssignment, prev *clusterRT) (*clusterRT, error) {
	ct := &clusterRT{name: c.GetName(), cfg: c}
	var cla *endpointv3.ClusterLoadAssignment
	switch c.GetClusterDiscoveryType().(type) {
	case *cluster.Cluster_Type, nil:
	default:
		return nil, fmt.Errorf("cluster_type: custom cluster types are unsupported")
	}
	switch c.GetType() {
	case cluster.Cluster_EDS:
		svc := c.GetEdsClusterConfig().GetServiceName()
		if svc == "" {
			svc = c.GetName()
		}
		// A missing assignment means no endpoints yet (see xdsclient.Resources).
		cla = eps[svc]
	case cluster.Cluster_STATIC, cluster.Cluster_STRICT_DNS, cluster.Cluster_LOGICAL_DNS:
		cla = c.GetLoadAssignment()
	default:
		return nil, fmt.Errorf("type: %s is unsupported", c.GetType())
	}
	lbc, err := parseLBConfig(c)
	if err != nil {
		return nil, err
	}
	if c.GetLoadBalancingPolicy() != nil {
		return nil, fmt.Errorf("load_balancing_policy: unsupported")
	}
	if c.GetTransportSocket() != nil || len(c.GetTransportSocketMatches()) > 0 {
		return nil, fmt.Errorf("transport_socket: upstream TLS is unsupported")
	}
	h2, err := upstreamHTTP2(c)
	if err != nil {
		return nil, err
	}
	connectTimeout := defaultConnectTimeout
	if t := c.GetConnectTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			return nil, fmt.Errorf("connect_timeout: must be a positive duration")
		}
		connectTimeout = t.AsDuration()
	}
	svc, err := clusterService(c)
	if err != nil {
		return nil, err
	}
	ct.dstNoEndpoint = d.metrics.InternDst(telemetry.DstLabels{Service: svc.host, ServiceName: svc.name, ServiceNamespace: svc.namespace,
		Workload: telemetry.Unknown, WorkloadNamespace: telemetry.Unknown, App: telemetry.Unknown, Version: telemetry.Unknown})
	ct.dstInbound = d.metrics.InternDst(telemetry.DstLabels{Service: svc.host, ServiceName: svc.name, ServiceNamespace: svc.namespace,
		Workload: telemetry.OrUnknown(d.opts.Identity.WorkloadName), WorkloadNamespace: telemetry.OrUnknown(d.opts.Identity.Namespace),
		App: telemetry.OrUnknown(d.opts.Identity.Labels["app"]), Version: telemetry.OrUnknown(d.opts.Identity.Labels["version"])})

	ct.stats = d.clusterStats.stats(ct.name)
	if prev != nil && proto.Equal(prev.cfg, c) {
		ct.pool = prev.pool
	} else {
		ct.pool = newClusterPool(h2, connectTimeout)
		if err := configurePool(ct.pool, c, ct.stats); err != nil {
			return nil, err
		}
		if useDownstreamProtocol(c) {
			ct.pool.enableDownstreamProtocol()
		}
	}
	if prev != nil && ct.pool == prev.pool && proto.Equal(prev.cla, cla) {
		ct.cla, ct.picker = prev.cla, prev.picker
		return ct, nil
	}
	ct.cla = cla
	levels, err := d.translateEndpoints(cla, svc, c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil)
	if err != nil {
		return nil, err
	}
	ct.picker = buildPicker(levels, lbc, &ct.pool.next, overprovisioning(cla))
	if ct.pool.h1 != nil {
		for _, ep := range ct.picker.endpoints {
			ep.conns = ct.pool.h1.endpoint(ep.addr)
		}
	}
	ct.pool.outlier.attach(ct.picker.endpoints)
	ct.pool.warm.attach(ct.picker.endpoints, lbc.slowStart)
	return ct, nil
}

// upstreamHTTP2 reports whether the cluster speaks HTTP/2 (h2c) upstream.
func upstreamHTTP2(c *cluster.Cluster) (bool, error) {
	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		var o upstreamhttp.HttpProtocolOptions
		if err := a.UnmarshalTo(&o); err != nil {
			return false, fmt.Errorf("typed_extension_protocol_options[%q]: %w", httpProtocolOptionsKey, err)
		}
		switch p := o.GetUpstreamProtocolOptions().(type) {
		case *upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_:
			switch p.ExplicitHttpConfig.GetProtocolConfig().(type) {
			case *upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
				return true, nil
			case *upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
				return false, nil
			default:
				return false, fmt.Errorf("typed_extension_protocol_options[%q].explicit_http_config: only http_protocol_options or http2_protocol_options are supported", httpProtocolOptionsKey)
			}
		case *upstreamhttp.HttpProtocolOptions_UseDownstreamProtocolConfig:
			return false, nil // HTTP/1.1 unless the downstream request is HTTP/2 (clientprotocol.go)
		case nil:
		default:
			return false, fmt.Errorf("typed_extension_protocol_options[%q]: %T is unsupported", httpProtocolOptionsKey, p)
		}
	}
	return c.GetHttp2ProtocolOptions() != nil, nil //nolint:staticcheck // legacy field still honoured
}

type serviceRef struct{ host, name, namespace string }

var unknownService = serviceRef{host: telemetry.Unknown, name: telemetry.Unknown, namespace: telemetry.Unknown}

// clusterService reads filter_metadata.istio.services[0].
func clusterService(c *cluster.Cluster) (serviceRef, error) {
	md := c.GetMetadata().GetFilterMetadata()[contract.FilterMetadataIstio]
	if md == nil {
		return unknownService, nil
	}
	svcs := md.GetFields()[contract.MetaClusterServices]
	if svcs == nil || len(svcs.GetListValue().GetValues()) == 0 {
		return unknownService, nil
	}
	f := svcs.GetListValue().GetValues()[0].GetStructValue().GetFields()
	if f == nil {
		return serviceRef{}, fmt.Errorf("metadata.filter_metadata.istio.services[0]: want a struct")
	}
	return serviceRef{
		host:      telemetry.OrUnknown(f["host"].GetStringValue()),
		name:      telemetry.OrUnknown(f["name"].GetStringValue()),
		namespace: telemetry.OrUnknown(f["namespace"].GetStringValue()),
	}, nil
}

// isConnectError reports whether err is an upstream dial failure.
func isConnectError(err error) bool {
	var ce *errConnect
	return errors.As(err, &ce)
}
