package proxyview

import (
	"io"
	"net"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"weft.dev/weft/internal/xds/contract"
)

// outlierMetadata is where the proxy's config dump reports an endpoint's
// outlier-detection state (internal/proxy/cluster, DumpAssignment).
const outlierMetadata = "envoy.outlier_detection"

// assignment is one cluster's endpoints.
type assignment struct {
	cluster string
	cla     *endpoint.ClusterLoadAssignment
}

// assignments are the EDS assignments, then the endpoints of clusters
// that carry their own (STATIC inbound clusters).
func assignments(d *Dump) []assignment {
	out := make([]assignment, 0, len(d.Endpoints))
	for _, it := range d.Endpoints {
		out = append(out, assignment{cluster: it.Msg.GetClusterName(), cla: it.Msg})
	}
	for _, it := range d.Clusters {
		if it.Msg.GetType() != cluster.Cluster_EDS && it.Msg.GetLoadAssignment() != nil {
			out = append(out, assignment{cluster: it.Msg.GetName(), cla: it.Msg.GetLoadAssignment()})
		}
	}
	return out
}

// WriteEndpoints writes one row per endpoint of every cluster, with its
// health, outlier-detection state, weight, locality and priority.
func WriteEndpoints(w io.Writer, d *Dump, f Filter) error {
	t := newTable(w, "ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER", "WEIGHT", "LOCALITY", "PRIORITY")
	outlierOn := map[string]bool{}
	for _, it := range d.Clusters {
		outlierOn[it.Msg.GetName()] = it.Msg.GetOutlierDetection() != nil
	}
	for _, a := range assignments(d) {
		if f.Cluster != "" && f.Cluster != a.cluster {
			continue
		}
		for _, loc := range a.cla.GetEndpoints() {
			for _, lbe := range loc.GetLbEndpoints() {
				if !f.matchEndpoint(lbe) {
					continue
				}
				sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
				weight := "1"
				if w := lbe.GetLoadBalancingWeight(); w != nil {
					weight = strconv.FormatUint(uint64(w.GetValue()), 10)
				}
				t.row(net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)),
					lbe.GetHealthStatus().String(), outlierCheck(lbe, outlierOn[a.cluster]), a.cluster,
					weight, contract.LocalityString(loc.GetLocality()), strconv.FormatUint(uint64(loc.GetPriority()), 10))
			}
		}
	}
	return t.flush()
}

func (f Filter) matchEndpoint(lbe *endpoint.LbEndpoint) bool {
	sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
	if f.Address != "" && f.Address != sa.GetAddress() {
		return false
	}
	if f.Port != 0 && f.Port != sa.GetPortValue() {
		return false
	}
	return f.Status == "" || strings.EqualFold(f.Status, lbe.GetHealthStatus().String())
}

// outlierCheck is OK or EJECTED (until when) for an endpoint of a cluster
// with outlier detection, "" otherwise.
func outlierCheck(lbe *endpoint.LbEndpoint, on bool) string {
	md := lbe.GetMetadata().GetFilterMetadata()[outlierMetadata]
	if md == nil {
		if on {
			return "OK"
		}
		return ""
	}
	f := md.GetFields()
	if !f["ejected"].GetBoolValue() {
		return "OK"
	}
	if until := f["ejected_until"].GetStringValue(); until != "" {
		return "EJECTED until " + until
	}
	return "EJECTED"
}
