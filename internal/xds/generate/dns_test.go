package generate

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// dnsServiceEntries are ServiceEntries whose endpoints the proxies
// resolve: a host resolved itself (resolution DNS, no endpoints), one
// DNS_ROUND_ROBIN, and one with DNS-named endpoints in subsets, with TLS
// origination from a DestinationRule.
const dnsServiceEntries = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api, namespace: default}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.external.test]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 9090}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: default}
spec:
  hosts: [billing.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints:
  - {address: eu.billing.test, labels: {region: eu}, locality: eu/west-1}
  - {address: us.billing.test, labels: {region: us}, locality: us/east-1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: billing, namespace: default}
spec:
  host: billing.external.test
  trafficPolicy:
    tls: {mode: SIMPLE, sni: billing.external.test}
  subsets:
  - {name: eu, labels: {region: eu}}
  - {name: none, labels: {region: mars}}
`

func dnsCases() []goldenCase {
	return []goldenCase{{
		name:  "serviceentry_dns",
		mesh:  func() *mesh.Snapshot { return securityMesh(dnsServiceEntries, mesh.Options{}) },
		proxy: productpage,
	}}
}

// TestDNSClusterLookupFamily: a proxy whose addresses are all IPv6 gets
// IPv6 lookups, any other (dual stack, IPv4, none) IPv4, as Istio's
// SelectDNSLookupFamily without dual stack; the proxies differing in it
// do not share a cluster.
func TestDNSClusterLookupFamily(t *testing.T) {
	for _, tc := range []struct {
		ips  []string
		want cluster.Cluster_DnsLookupFamily
	}{
		{nil, cluster.Cluster_V4_ONLY},
		{[]string{"10.0.0.1"}, cluster.Cluster_V4_ONLY},
		{[]string{"fd00::1", "10.0.0.1"}, cluster.Cluster_V4_ONLY},
		{[]string{"fd00::1", "::1"}, cluster.Cluster_V6_ONLY},
	} {
		if got := dnsLookupFamily(tc.ips); got != tc.want {
			t.Errorf("dnsLookupFamily(%q) = %s, want %s", tc.ips, got, tc.want)
		}
	}
	s := securityMesh(dnsServiceEntries, mesh.Options{})
	v6 := productpage
	v6.IPs = []string{"fd00::10"}
	name := contract.ClusterName(contract.Outbound, 80, "", "api.external.test")
	for _, tc := range []struct {
		id   contract.Identity
		want cluster.Cluster_DnsLookupFamily
	}{{productpage, cluster.Cluster_V4_ONLY}, {v6, cluster.Cluster_V6_ONLY}, {productpage, cluster.Cluster_V4_ONLY}} {
		var got *cluster.Cluster
		for _, r := range ForProxy(s, tc.id).Clusters {
			if c := r.(*cluster.Cluster); c.GetName() == name {
				got = c
			}
		}
		if got.GetType() != cluster.Cluster_STRICT_DNS || got.GetDnsLookupFamily() != tc.want {
			t.Errorf("proxy %v: cluster %s type %s family %s, want STRICT_DNS %s", tc.id.IPs, name, got.GetType(), got.GetDnsLookupFamily(), tc.want)
		}
	}
}
