package config

import (
	"fmt"
	"math"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// Envoy's upper bound for the ring hash table; beyond it the proxy would
// reject the cluster.
const maxRingSize = 8 << 20

// Topology labels failoverPriority may not name alongside failover.
var topologyLabels = map[string]bool{
	"topology.kubernetes.io/region": true,
	"topology.kubernetes.io/zone":   true,
	"topology.istio.io/subzone":     true,
}

// validateLoadBalancer is Istio's validateLoadBalancer (od is the outlier
// detection of the same policy level, which failover needs), plus what
// Envoy's schema and weft-proxy refuse of a consistent hash.
func validateLoadBalancer(is *issues, path string, lb *networking.LoadBalancerSettings, od *networking.OutlierDetection) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		validateConsistentHash(is, path+".consistentHash", ch)
	}
	if lb.GetBackendUtilization() != nil {
		is.errf(path+".backendUtilization", "backendUtilization (load balancing on utilization the endpoints report, ORCA) is not supported by Weft yet; use simple: LEAST_REQUEST, which follows each endpoint's outstanding requests")
	}
	if lb.GetLocalityLbSetting() != nil && lb.GetZoneAwareLbSetting() != nil {
		is.errf(path, "localityLbSetting and zoneAwareLbSetting are mutually exclusive")
	}
	validateLocalityLB(is, path+".localityLbSetting", lb.GetLocalityLbSetting(), od)
	validateZoneAwareLB(is, path+".zoneAwareLbSetting", lb.GetZoneAwareLbSetting(), od)
	if w := lb.GetWarmup(); w != nil {
		if w.GetDuration() == nil {
			is.errf(path+".warmup.duration", "duration is required")
		}
		validateDuration(is, path+".warmup.duration", w.GetDuration())
		if m := w.GetMinimumPercent(); m != nil && (m.GetValue() < 0 || m.GetValue() > 100) {
			is.errf(path+".warmup.minimumPercent", "minimumPercent %v out of range 0-100", m.GetValue())
		}
		if a := w.GetAggression(); a != nil && a.GetValue() <= 0 {
			is.errf(path+".warmup.aggression", "aggression %v must be greater than 0", a.GetValue())
		}
	}
	validateDuration(is, path+".warmupDurationSecs", lb.GetWarmupDurationSecs()) // the CRD's rule
}

func validateConsistentHash(is *issues, p string, ch *networking.LoadBalancerSettings_ConsistentHashLB) {
	switch k := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		c := k.HttpCookie
		if c.GetName() == "" {
			is.errf(p+".httpCookie.name", "cookie name is required")
		}
		names := map[string]bool{}
		for i, a := range c.GetAttributes() {
			ap := fmt.Sprintf("%s.httpCookie.attributes[%d].name", p, i)
			switch {
			case a.GetName() == "":
				is.errf(ap, "cookie attribute name is required")
			case names[a.GetName()]:
				is.errf(ap, "duplicate cookie attribute %q", a.GetName())
			}
			names[a.GetName()] = true
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		// Stricter than Istio: Envoy's schema requires a header name.
		if k.HttpHeaderName == "" {
			is.errf(p+".httpHeaderName", "header name is required")
		} else if !isToken(k.HttpHeaderName) {
			is.errf(p+".httpHeaderName", "header name %q is not a valid HTTP header name (%s)", k.HttpHeaderName, tokenChars)
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		// Stricter than Istio: Envoy's schema and weft-proxy require a name.
		if k.HttpQueryParameterName == "" {
			is.errf(p+".httpQueryParameterName", "query parameter name is required")
		}
	}
	//nolint:staticcheck // the deprecated minimumRingSize is still honoured
	if n := ch.GetMinimumRingSize(); n != 0 {
		is.warnf(p+".minimumRingSize", "minimumRingSize is deprecated; use ringHash.minimumRingSize")
		if ch.GetHashAlgorithm() != nil {
			is.errf(p+".minimumRingSize", "minimumRingSize cannot be combined with ringHash or maglev; use ringHash.minimumRingSize")
		}
		if n > maxRingSize {
			is.errf(p+".minimumRingSize", "minimumRingSize %d is larger than %d", n, maxRingSize)
		}
	}
	if m := ch.GetMaglev(); m != nil {
		switch n := m.GetTableSize(); {
		case n == 0:
			is.errf(p+".maglev.tableSize", "tableSize is required for maglev (a prime below 5000011, e.g. 65537)")
		case n >= 5000011:
			is.errf(p+".maglev.tableSize", "tableSize %d must be less than 5000011", n)
		case !isPrime(n):
			is.errf(p+".maglev.tableSize", "tableSize %d must be a prime number (e.g. 65537)", n)
		}
	}
	// Stricter than Istio: Envoy refuses rings larger than 8M entries.
	if r := ch.GetRingHash(); r != nil && r.GetMinimumRingSize() > maxRingSize {
		is.errf(p+".ringHash.minimumRingSize", "minimumRingSize %d is larger than %d", r.GetMinimumRingSize(), maxRingSize)
	}
}

// isPrime is Envoy's (and Istio's) primality test for the maglev table.
func isPrime(x uint64) bool {
	if x != 0 && x < 4 {
		return true
	}
	if x&1 == 0 {
		return false
	}
	limit := uint64(math.Sqrt(float64(x)))
	for f := uint64(3); f <= limit; f += 2 {
		if x%f == 0 {
			return false
		}
	}
	return true
}

// validateLocalityLB is Istio's ValidateLocalityLbSetting, plus Weft's rule
// that a '*' stands for a whole region, zone or subzone (the only way a
// locality rule matches, in Istio as in Weft).
func validateLocalityLB(is *issues, lp string, l *networking.LocalityLoadBalancerSetting, od *networking.OutlierDetection) {
	if l == nil {
		return
	}
	if len(l.GetDistribute()) > 0 && len(l.GetFailover()) > 0 {
		is.errf(lp, "distribute and failover are mutually exclusive")
		return
	}
	if len(l.GetDistribute()) > 0 && len(l.GetFailoverPriority()) > 0 {
		is.warnf(lp+".failoverPriority", "failoverPriority is ignored when distribute is set")
	}
	if len(l.GetFailover()) > 0 {
		for i, label := range l.GetFailoverPriority() {
			if topologyLabels[label] {
				is.errf(fmt.Sprintf("%s.failoverPriority[%d]", lp, i), "failoverPriority cannot name the topology label %q when failover is set", label)
				return
			}
		}
	}
	var from []string
	for i, d := range l.GetDistribute() {
		p := fmt.Sprintf("%s.distribute[%d]", lp, i)
		from = append(from, d.GetFrom())
		var total uint64
		var to []string
		for _, k := range sortedKeys(d.GetTo()) {
			w := d.GetTo()[k]
			if w == 0 || w > 100 {
				is.errf(p+".to."+k, "weight %d out of range 1-100", w)
			}
			total += uint64(w)
			to = append(to, k)
		}
		if total != 100 {
			is.errf(p+".to", "weights must add up to 100, not %d", total)
		}
		if err := checkLocalities(to); err != nil {
			is.errf(p+".to", "%v", err)
		}
	}
	if err := checkLocalities(from); err != nil {
		is.errf(lp+".distribute", "from: %v", err)
	}
	if (len(l.GetFailover()) > 0 || len(l.GetFailoverPriority()) > 0) && od == nil {
		is.warnf(lp, "failover needs outlierDetection in the same traffic policy; without it endpoints are never ejected and traffic never fails over")
	}
	for i, f := range l.GetFailover() {
		validateFailover(is, fmt.Sprintf("%s.failover[%d]", lp, i), f.GetFrom(), f.GetTo())
	}
}

func validateFailover(is *issues, p, from, to string) {
	if from == to {
		is.errf(p, "from and to must be different regions (both %q)", from)
	}
	if strings.Contains(from+to, "/") {
		is.errf(p, "from and to are regions, without '/' (zones and subzones fail over by proximity)")
	}
	if strings.Contains(from+to, "*") {
		is.errf(p, "from and to are region names, without '*'")
	}
}

// validateZoneAwareLB is Istio's ValidateZoneAwareLbSetting.
func validateZoneAwareLB(is *issues, p string, z *networking.ZoneAwareLoadBalancerSetting, od *networking.OutlierDetection) {
	if z == nil {
		return
	}
	for i, label := range z.GetFailoverPriority() {
		if topologyLabels[label] {
			is.errf(fmt.Sprintf("%s.failoverPriority[%d]", p, i), "failoverPriority cannot name the topology label %q: region, zone and subzone routing are automatic", label)
		}
	}
	if (len(z.GetFailover()) > 0 || len(z.GetFailoverPriority()) > 0) && od == nil {
		is.warnf(p, "failover needs outlierDetection in the same traffic policy; without it endpoints are never ejected and traffic never fails over")
	}
	for i, f := range z.GetFailover() {
		validateFailover(is, fmt.Sprintf("%s.failover[%d]", p, i), f.GetFrom(), f.GetTo())
	}
	if m := z.GetMinClusterSize(); m != nil && m.GetValue() < 1 {
		is.errf(p+".minClusterSize", "minClusterSize must be at least 1")
	}
}

// checkLocalities is Istio's validateLocalities over a list of locality
// rules (region[/zone[/subzone]] with at most one trailing '*'): no empty
// part, and no rule overlapping an earlier one. Weft adds that a '*' is a
// whole part: "us-*" would never match anything.
func checkLocalities(locs []string) error {
	type zones = map[string]map[string]bool
	seen := map[string]zones{}
	for _, l := range locs {
		if n := strings.Count(l, "*"); n > 0 && (n > 1 || !strings.HasSuffix(l, "*")) {
			return fmt.Errorf("locality %q: at most one '*', at the end", l)
		}
		if _, all := seen["*"]; all {
			return fmt.Errorf("locality %q overlaps an earlier one", l)
		}
		parts := strings.SplitN(l, "/", 3)
		for _, p := range parts {
			if p == "" {
				return fmt.Errorf("locality %q: region, zone and subzone must not be empty", l)
			}
		}
		if strings.HasSuffix(l, "*") && parts[len(parts)-1] != "*" {
			return fmt.Errorf("locality %q: a '*' stands for a whole region, zone or subzone (\"us-east/*\"), not part of one", l)
		}
		region := parts[0]
		switch len(parts) {
		case 1:
			if _, ok := seen[region]; ok {
				return fmt.Errorf("locality %q overlaps an earlier one", l)
			}
			seen[region] = zones{"*": {"*": true}}
		case 2:
			z, ok := seen[region]
			switch {
			case !ok:
				seen[region] = zones{parts[1]: {"*": true}}
			case z["*"] != nil || z[parts[1]] != nil:
				return fmt.Errorf("locality %q overlaps an earlier one", l)
			default:
				z[parts[1]] = map[string]bool{"*": true}
			}
		case 3:
			z, ok := seen[region]
			switch {
			case !ok:
				seen[region] = zones{parts[1]: {parts[2]: true}}
			case z["*"] != nil:
				return fmt.Errorf("locality %q overlaps an earlier one", l)
			case z[parts[1]] == nil:
				z[parts[1]] = map[string]bool{parts[2]: true}
			case z[parts[1]]["*"] || z[parts[1]][parts[2]]:
				return fmt.Errorf("locality %q overlaps an earlier one", l)
			default:
				z[parts[1]][parts[2]] = true
			}
		}
	}
	return nil
}
