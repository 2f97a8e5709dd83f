package dataplane

import (
	"net/http"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// HttpProtocolOptions.use_downstream_protocol_config (Istio's
// connectionPool.http.useClientProtocol): the upstream request uses the HTTP
// version of the downstream one — h2c when the client spoke HTTP/2,
// HTTP/1.1 otherwise. The cluster's pool then holds both transports; both
// live in the clusterPool, so they survive updates that leave the Cluster
// unchanged.

// useDownstreamProtocol reports whether the cluster's upstream HTTP version
// follows the downstream request's. upstreamHTTP2 has already validated the
// options (and reports such a cluster as HTTP/1.1 by default).
func useDownstreamProtocol(c *cluster.Cluster) bool {
	a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if !ok {
		return false
	}
	var o upstreamhttp.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return false
	}
	return o.GetUseDownstreamProtocolConfig() != nil
}

// enableDownstreamProtocol adds the h2c transport of a use-downstream-protocol
// pool, a copy of the HTTP/1.1 transport (dialer, timeouts, idle timeout)
// speaking HTTP/2 with prior knowledge. Called while translating, after
// configurePool, before any request uses the pool.
func (p *clusterPool) enableDownstreamProtocol() {
	t := p.transport.Clone()
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	t.Protocols = protocols
	p.h2c = t
}

// downstreamH2 reports whether a request that arrived as r goes upstream
// over the pool's h2c transport rather than HTTP/1.1.
func (p *clusterPool) downstreamH2(r *http.Request) bool {
	return p.h2c != nil && r.ProtoMajor == 2
}

// transportFor is the transport of an upstream request for a downstream
// request r: the h2c one when the pool follows the downstream protocol and
// r is HTTP/2, the cluster's own otherwise.
func (p *clusterPool) transportFor(r *http.Request) *http.Transport {
	if p.downstreamH2(r) {
		return p.h2c
	}
	return p.transport
}
