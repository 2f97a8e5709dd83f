package proxyview

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// clusterName is an Istio-style cluster name, direction|port|subset|host.
type clusterName struct {
	direction, port, subset, host string
	ok                            bool
}

func parseClusterName(name string) clusterName {
	f := strings.Split(name, "|")
	if len(f) != 4 {
		return clusterName{}
	}
	if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
		return clusterName{}
	}
	return clusterName{direction: f[0], port: f[1], subset: f[2], host: f[3], ok: true}
}

// serviceHosts are the hosts in the cluster's filter_metadata.istio.services.
func serviceHosts(c *cluster.Cluster) []string {
	var out []string
	md := c.GetMetadata().GetFilterMetadata()[contract.FilterMetadataIstio]
	for _, v := range md.GetFields()[contract.MetaClusterServices].GetListValue().GetValues() {
		if h := v.GetStructValue().GetFields()["host"].GetStringValue(); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// WriteClusters writes one row per cluster: its name's parts, type, load
// balancing policy and circuit-breaker and outlier-detection settings.
func WriteClusters(w io.Writer, d *Dump, f Filter) error {
	t := newTable(w, "SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "LB POLICY", "CIRCUIT BREAKERS", "OUTLIER DETECTION")
	for _, it := range d.Clusters {
		c := it.Msg
		if !f.matchCluster(c) {
			continue
		}
		n := parseClusterName(c.GetName())
		t.row(clusterFQDN(c, n), n.port, n.subset, n.direction, clusterType(c), lbPolicy(c), circuitBreakers(c), outlier(c))
	}
	return t.flush()
}

// clusterFQDN is the service host of the cluster's name or, for inbound
// clusters, of its metadata; the whole name when it is not Istio-style.
func clusterFQDN(c *cluster.Cluster, n clusterName) string {
	switch {
	case !n.ok:
		return c.GetName()
	case n.host == "":
		return strings.Join(serviceHosts(c), ",")
	default:
		return n.host
	}
}

func (f Filter) matchCluster(c *cluster.Cluster) bool {
	n := parseClusterName(c.GetName())
	if f.FQDN != "" && !slices.Contains(strings.Split(clusterFQDN(c, n), ","), f.FQDN) {
		return false
	}
	if f.Port != 0 && n.port != strconv.FormatUint(uint64(f.Port), 10) {
		return false
	}
	if f.Subset != "" && f.Subset != n.subset {
		return false
	}
	return f.Direction == "" || strings.EqualFold(f.Direction, n.direction)
}

func clusterType(c *cluster.Cluster) string {
	if ct := c.GetClusterType(); ct != nil {
		return ct.GetName()
	}
	return c.GetType().String()
}

func lbPolicy(c *cluster.Cluster) string {
	if p := c.GetLoadBalancingPolicy().GetPolicies(); len(p) > 0 {
		return p[0].GetTypedExtensionConfig().GetName()
	}
	return c.GetLbPolicy().String()
}

// circuitBreakers lists the default-priority thresholds that limit
// anything; "unlimited" when none does (Istio's defaults), "" when the
// cluster sets none (Envoy's defaults apply).
func circuitBreakers(c *cluster.Cluster) string {
	var th *cluster.CircuitBreakers_Thresholds
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() == 0 { // DEFAULT
			th = t
			break
		}
	}
	if th == nil {
		return ""
	}
	var parts []string
	for _, l := range []struct {
		name string
		v    *wrapperspb.UInt32Value
	}{
		{"maxConnections", th.GetMaxConnections()},
		{"maxPending", th.GetMaxPendingRequests()},
		{"maxRequests", th.GetMaxRequests()},
		{"maxRetries", th.GetMaxRetries()},
	} {
		if l.v != nil && l.v.GetValue() != math.MaxUint32 {
			parts = append(parts, fmt.Sprintf("%s=%d", l.name, l.v.GetValue()))
		}
	}
	if len(parts) == 0 {
		return "unlimited"
	}
	return strings.Join(parts, " ")
}

// outlier lists the outlier-detection settings the cluster sets.
func outlier(c *cluster.Cluster) string {
	od := c.GetOutlierDetection()
	if od == nil {
		return ""
	}
	var parts []string
	add := func(name string, v *wrapperspb.UInt32Value, suffix string) {
		if v != nil {
			parts = append(parts, fmt.Sprintf("%s=%d%s", name, v.GetValue(), suffix))
		}
	}
	add("consecutive5xx", od.GetConsecutive_5Xx(), "")
	add("consecutiveGateway", od.GetConsecutiveGatewayFailure(), "")
	add("consecutiveLocalOrigin", od.GetConsecutiveLocalOriginFailure(), "")
	if v := od.GetInterval(); v != nil {
		parts = append(parts, "interval="+durationString(v))
	}
	if v := od.GetBaseEjectionTime(); v != nil {
		parts = append(parts, "baseEjection="+durationString(v))
	}
	add("maxEjection", od.GetMaxEjectionPercent(), "%")
	if len(parts) == 0 {
		return "Envoy defaults"
	}
	return strings.Join(parts, " ")
}
