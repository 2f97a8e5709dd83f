package cluster

import (
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// DumpAssignment returns cla, an endpoint assignment of c, for
// /config_dump with c's outlier state filled in, as Envoy's EDS dump does:
// an ejected endpoint shows health_status UNHEALTHY, and every endpoint
// the detector tracks carries metadata.filter_metadata
// ["envoy.outlier_detection"] = {ejected, ejected_until (RFC 3339),
// ejections}. Without outlier detection cla is returned as it is; cla is
// never modified. Safe from any goroutine.
func (c *Cluster) DumpAssignment(cla *endpointv3.ClusterLoadAssignment) *endpointv3.ClusterLoadAssignment {
	st := c.cell.built()
	if st == nil || st.outlier == nil {
		return cla // no outlier detection, or no request yet: none ejected
	}
	od := st.outlier
	cla = proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
	for _, loc := range cla.GetEndpoints() {
		for _, lbe := range loc.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			st, ok := od.status(endpointKey(sa.GetAddress(), sa.GetPortValue()))
			if !ok {
				continue
			}
			if st.ejected {
				lbe.HealthStatus = core.HealthStatus_UNHEALTHY
			}
			fields := map[string]*structpb.Value{
				"ejected":   structpb.NewBoolValue(st.ejected),
				"ejections": structpb.NewNumberValue(float64(st.ejections)),
			}
			if st.ejected {
				fields["ejected_until"] = structpb.NewStringValue(st.ejectedUntil.UTC().Format(time.RFC3339Nano))
			}
			if lbe.Metadata == nil {
				lbe.Metadata = &core.Metadata{}
			}
			if lbe.Metadata.FilterMetadata == nil {
				lbe.Metadata.FilterMetadata = map[string]*structpb.Struct{}
			}
			lbe.Metadata.FilterMetadata["envoy.outlier_detection"] = &structpb.Struct{Fields: fields}
		}
	}
	return cla
}
