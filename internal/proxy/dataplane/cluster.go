package dataplane

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/upstream"
	"weft.dev/weft/internal/xds/contract"
)

// clusterPool is the part of a cluster that survives updates which leave the
// Cluster resource unchanged: the connection pools and the round-robin
// position. It is shared by successive runtimes and safe for concurrent use.
type clusterPool struct {
	up      *upstream.Pool   // connections to the endpoints
	next    atomic.Uint64    // round-robin position
	breaker *breaker         // circuit_breakers (breaker.go)
	outlier *outlierDetector // outlier_detection (outlier.go); nil when off
	warm    warmTracker      // slow start (slowstart.go)
}

// closeIdle closes the idle connections. Once the pool is retired (or the
// data plane closed) connections given back by in-flight requests are closed
// too (the Transport's are reaped by its IdleConnTimeout).
func (p *clusterPool) closeIdle() {
	p.up.CloseIdle()
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

func newClusterPool(o upstream.Options) *clusterPool {
	p := &clusterPool{up: upstream.NewPool(o)}
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
	uo, err := upstream.ParseOptions(c)
	if err != nil {
		return nil, err
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
		ct.pool = newClusterPool(uo)
		if err := configurePool(ct.pool, c, ct.stats); err != nil {
			return nil, err
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
	for _, ep := range ct.picker.endpoints {
		ep.conns = ct.pool.up.Endpoint(ep.addr) // nil for h2c
	}
	ct.pool.outlier.attach(ct.picker.endpoints)
	ct.pool.warm.attach(ct.picker.endpoints, lbc.slowStart)
	return ct, nil
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
