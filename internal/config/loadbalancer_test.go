package config

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
)

func TestValidateLoadBalancer(t *testing.T) {
	ch := func(c *networking.LoadBalancerSettings_ConsistentHashLB) *networking.LoadBalancerSettings {
		return &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: c}}
	}
	loc := func(l *networking.LocalityLoadBalancerSetting) *networking.LoadBalancerSettings {
		return &networking.LoadBalancerSettings{LocalityLbSetting: l}
	}
	header := &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"}
	tests := []struct {
		name string
		lb   *networking.LoadBalancerSettings
		want string // "" = valid
	}{
		{"header ring", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: header}), ""},
		{"maglev prime", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: header,
			HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networking.LoadBalancerSettings_ConsistentHashLB_MagLev{TableSize: 65537}}}), ""},
		{"maglev not prime", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: header,
			HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networking.LoadBalancerSettings_ConsistentHashLB_MagLev{TableSize: 1000}}}),
			"p.consistentHash.maglev.tableSize: tableSize 1000 must be a prime"},
		{"ring too big", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: header,
			HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_RingHash_{RingHash: &networking.LoadBalancerSettings_ConsistentHashLB_RingHash{MinimumRingSize: 1 << 30}}}),
			"p.consistentHash.ringHash.minimumRingSize"},
		{"cookie without name", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie{
			HttpCookie: &networking.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{Ttl: durationpb.New(0)}}}), "p.consistentHash.httpCookie.name"},
		{"warmup without duration", &networking.LoadBalancerSettings{Warmup: &networking.WarmupConfiguration{}}, "p.warmup.duration"},
		{"distribute sums to 100", loc(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
			{From: "us-east/*", To: map[string]uint32{"us-east/*": 80, "us-west/*": 20}}}}), ""},
		{"distribute sum", loc(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
			{From: "us-east/*", To: map[string]uint32{"us-east/*": 80}}}}), "p.localityLbSetting.distribute[0].to: weights must add up to 100"},
		{"distribute and failover", loc(&networking.LocalityLoadBalancerSetting{
			Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{{From: "a", To: map[string]uint32{"a": 100}}},
			Failover:   []*networking.LocalityLoadBalancerSetting_Failover{{From: "a", To: "b"}}}), "p.localityLbSetting: distribute and failover are mutually exclusive"},
		{"failover same region", loc(&networking.LocalityLoadBalancerSetting{Failover: []*networking.LocalityLoadBalancerSetting_Failover{{From: "a", To: "a"}}}),
			"p.localityLbSetting.failover[0]: from and to must be different"},
		{"bad wildcard", loc(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
			{From: "*/z1", To: map[string]uint32{"a": 100}}}}), "p.localityLbSetting.distribute: from: locality \"*/z1\": at most one '*', at the end"},
		{"partial wildcard", loc(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
			{From: "us-*", To: map[string]uint32{"a": 100}}}}), "p.localityLbSetting.distribute: from: locality \"us-*\": a '*' stands for a whole"},
		{"overlapping from", loc(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
			{From: "us/*", To: map[string]uint32{"a": 100}}, {From: "us/z1", To: map[string]uint32{"a": 100}}}}), "p.localityLbSetting.distribute: from: locality \"us/z1\" overlaps"},
		{"maglev without table size", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: header,
			HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networking.LoadBalancerSettings_ConsistentHashLB_MagLev{}}}),
			"p.consistentHash.maglev.tableSize: tableSize is required"},
		{"query parameter without name", ch(&networking.LoadBalancerSettings_ConsistentHashLB{HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName{}}),
			"p.consistentHash.httpQueryParameterName: query parameter name is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var is issues
			validateLoadBalancer(&is, "p", tc.lb, nil)
			var got string
			for _, d := range is {
				if d.Severity == SeverityError {
					got = d.Path + ": " + d.Message
					break
				}
			}
			if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
