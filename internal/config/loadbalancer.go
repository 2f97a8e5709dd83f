package config

import (
	"fmt"
	"math/big"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// Envoy's upper bounds for the consistent-hash tables; beyond them the
// proxy would reject the cluster.
const (
	maxRingSize   = 8 << 20
	maxMaglevSize = 5000011
)

// validateLoadBalancers checks every loadBalancer of a DestinationRule (top
// level, per port, per subset and its ports) as Istio's validation does for
// the parts Weft generates, so a bad value is reported here rather than
// rejected by proxies.
func validateLoadBalancers(is *issues, dr *networking.DestinationRule) {
	check := func(path string, tp *networking.TrafficPolicy) {
		if tp == nil {
			return
		}
		validateLoadBalancer(is, path+".loadBalancer", tp.GetLoadBalancer())
		for i, pl := range tp.GetPortLevelSettings() {
			validateLoadBalancer(is, fmt.Sprintf("%s.portLevelSettings[%d].loadBalancer", path, i), pl.GetLoadBalancer())
		}
	}
	check("spec.trafficPolicy", dr.GetTrafficPolicy())
	for i, s := range dr.GetSubsets() {
		check(fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), s.GetTrafficPolicy())
	}
}

func validateLoadBalancer(is *issues, path string, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		p := path + ".consistentHash"
		if c := ch.GetHttpCookie(); c != nil && c.GetName() == "" {
			is.errf(p+".httpCookie.name", "cookie name is required")
		}
		if ch.GetHttpHeaderName() == "" && ch.GetHashKey() != nil {
			if _, ok := ch.GetHashKey().(*networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName); ok {
				is.errf(p+".httpHeaderName", "header name is required")
			}
		}
		if m := ch.GetMaglev(); m != nil && m.GetTableSize() != 0 {
			if n := m.GetTableSize(); n > maxMaglevSize || !big.NewInt(int64(n)).ProbablyPrime(0) {
				is.errf(p+".maglev.tableSize", "tableSize %d must be a prime number no larger than %d", n, maxMaglevSize)
			}
		}
		if r := ch.GetRingHash(); r != nil && r.GetMinimumRingSize() > maxRingSize {
			is.errf(p+".ringHash.minimumRingSize", "minimumRingSize %d is larger than %d", r.GetMinimumRingSize(), maxRingSize)
		}
		if n := ch.GetMinimumRingSize(); n > maxRingSize { //nolint:staticcheck // deprecated but honoured
			is.errf(p+".minimumRingSize", "minimumRingSize %d is larger than %d", n, maxRingSize)
		}
	}
	if w := lb.GetWarmup(); w != nil {
		if w.GetDuration() == nil || w.GetDuration().AsDuration() <= 0 {
			is.errf(path+".warmup.duration", "a positive duration is required")
		}
		if a := w.GetAggression(); a != nil && a.GetValue() < 1 {
			is.errf(path+".warmup.aggression", "aggression must be at least 1")
		}
		if m := w.GetMinimumPercent(); m != nil && (m.GetValue() < 0 || m.GetValue() > 100) {
			is.errf(path+".warmup.minimumPercent", "minimumPercent must be between 0 and 100")
		}
	}
	l := lb.GetLocalityLbSetting()
	if l == nil {
		return
	}
	lp := path + ".localityLbSetting"
	if len(l.GetDistribute()) > 0 && (len(l.GetFailover()) > 0 || len(l.GetFailoverPriority()) > 0) {
		is.errf(lp, "can not simultaneously specify 'distribute' and 'failover'/'failoverPriority'")
	}
	from := map[string]bool{}
	for i, d := range l.GetDistribute() {
		p := fmt.Sprintf("%s.distribute[%d]", lp, i)
		if err := checkLocality(d.GetFrom()); err != nil {
			is.errf(p+".from", "%v", err)
		}
		if from[d.GetFrom()] {
			is.errf(p+".from", "locality %q appears in more than one rule", d.GetFrom())
		}
		from[d.GetFrom()] = true
		var sum uint32
		for _, k := range sortedKeys(d.GetTo()) {
			if err := checkLocality(k); err != nil {
				is.errf(p+".to", "%v", err)
			}
			sum += d.GetTo()[k]
		}
		if sum != 100 {
			is.errf(p+".to", "weights must sum to 100, not %d", sum)
		}
	}
	for i, f := range l.GetFailover() {
		p := fmt.Sprintf("%s.failover[%d]", lp, i)
		if f.GetFrom() == f.GetTo() {
			is.errf(p, "from and to must be different regions (both %q)", f.GetFrom())
		}
		if strings.Contains(f.GetFrom()+f.GetTo(), "/") || strings.Contains(f.GetFrom()+f.GetTo(), "*") {
			is.errf(p, "from and to are region names, without '/' or '*'")
		}
	}
}

// checkLocality accepts region[/zone[/subzone]] where "*" may stand for a
// whole trailing part.
func checkLocality(s string) error {
	if s == "" {
		return fmt.Errorf("locality is required")
	}
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return fmt.Errorf("locality %q: want region/zone/subzone", s)
	}
	for i, p := range parts {
		if p == "" {
			return fmt.Errorf("locality %q: empty part", s)
		}
		if strings.Contains(p, "*") && (p != "*" || i != len(parts)-1) {
			return fmt.Errorf("locality %q: '*' must be a whole, last part", s)
		}
	}
	return nil
}
