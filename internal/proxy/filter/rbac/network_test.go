package rbac

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"
	"time"

	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/filter"
)

// allowCachePort is Istio's TCP form of an ALLOW rule: principal
// cluster.local/ns/default/sa/client, port 6379.
const allowCachePort = `
rules:
  action: ALLOW
  policies:
    ns[default]-policy[cache]-rule[0]:
      permissions: [{andRules: {rules: [{orRules: {rules: [{destinationPort: 6379}]}}]}}]
      principals:
      - andIds:
          ids:
          - orIds: {ids: [{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/default/sa/client"}}}]}
`

// A network RBAC filter decides a connection from what it has: its
// destination port and its TLS peer; a plaintext connection has no
// principal, and a refusal is counted.
func TestConnFilterDecisions(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats, err := NewStats(reg)
	if err != nil {
		t.Fatal(err)
	}
	http := parseConfig(t, allowCachePort)
	cf, err := Factory{Stats: stats}.NewNetwork(anyOf(t, &rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: http.GetRules()}))
	if err != nil {
		t.Fatal(err)
	}
	conn := func(port uint16, principal string) *filter.Connection {
		c := &filter.Connection{
			LocalAddr:  netip.AddrPortFrom(netip.MustParseAddr("10.0.0.5"), port),
			RemoteAddr: netip.MustParseAddrPort("10.0.0.9:40000"),
		}
		if principal != "" {
			c.TLS = &tls.ConnectionState{}
			c.Peer = &filter.PeerCertificate{Principal: principal, URISANs: []string{principal}}
		}
		return c
	}
	for _, tc := range []struct {
		name string
		c    *filter.Connection
		want bool
	}{
		{"client to 6379", conn(6379, "spiffe://cluster.local/ns/default/sa/client"), true},
		{"client to another port", conn(6380, "spiffe://cluster.local/ns/default/sa/client"), false},
		{"another identity", conn(6379, "spiffe://cluster.local/ns/default/sa/other"), false},
		{"plaintext", conn(6379, ""), false},
	} {
		if got := cf.Allows(tc.c); got != tc.want {
			t.Errorf("%s: allowed %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := counterValue(t, stats.denied.WithLabelValues("ALLOW", "none")); got != 3 {
		t.Errorf("weft_proxy_rbac_denied_total{action=ALLOW,policy=none} = %v, want 3", got)
	}
}

// Fields a network filter cannot honour are refused, naming them.
func TestNewNetworkRefuses(t *testing.T) {
	_, err := Factory{}.NewNetwork(anyOf(t, &rbacnetv3.RBAC{StatPrefix: "tcp.", DelayDeny: durationpb.New(time.Second)}))
	if err == nil || !strings.Contains(err.Error(), "delay_deny") {
		t.Errorf("delay_deny: %v, want an error naming it", err)
	}
	if _, err := (Factory{}).NewNetwork(nil); err == nil {
		t.Error("no typed_config: accepted")
	}
}
