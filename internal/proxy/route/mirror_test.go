package route

import (
	"strings"
	"testing"

	mutationrules "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCompileMirrorPolicies(t *testing.T) {
	frac := func(n uint32, d typev3.FractionalPercent_DenominatorType) *core.RuntimeFractionalPercent {
		return &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n, Denominator: d}, RuntimeKey: "ignored"}
	}
	cases := []struct {
		name    string
		in      *route.RouteAction_RequestMirrorPolicy
		want    MirrorPolicy
		wantErr string
	}{
		{name: "cluster only: always", in: &route.RouteAction_RequestMirrorPolicy{Cluster: "c"}, want: MirrorPolicy{Cluster: "c"}},
		{name: "hundred", in: &route.RouteAction_RequestMirrorPolicy{Cluster: "c", RuntimeFraction: frac(25, typev3.FractionalPercent_HUNDRED)},
			want: MirrorPolicy{Cluster: "c", numerator: 25, denominator: 100}},
		{name: "ten thousand", in: &route.RouteAction_RequestMirrorPolicy{Cluster: "c", RuntimeFraction: frac(25, typev3.FractionalPercent_TEN_THOUSAND)},
			want: MirrorPolicy{Cluster: "c", numerator: 25, denominator: 10000}},
		{name: "Istio's 100% in millionths is always", in: &route.RouteAction_RequestMirrorPolicy{Cluster: "c", RuntimeFraction: frac(1000000, typev3.FractionalPercent_MILLION), TraceSampled: wrapperspb.Bool(false)},
			want: MirrorPolicy{Cluster: "c"}},
		{name: "cluster header and host options", in: &route.RouteAction_RequestMirrorPolicy{ClusterHeader: "x-mirror-to", DisableShadowHostSuffixAppend: true, HostRewriteLiteral: "h"},
			want: MirrorPolicy{ClusterHeader: "X-Mirror-To", NoSuffix: true, HostRewrite: "h"}},
		{name: "both", in: &route.RouteAction_RequestMirrorPolicy{Cluster: "c", ClusterHeader: "x"}, wantErr: "only one of cluster and cluster_header"},
		{name: "neither", in: &route.RouteAction_RequestMirrorPolicy{}, wantErr: "one of cluster and cluster_header is required"},
		{name: "header mutations", in: &route.RouteAction_RequestMirrorPolicy{Cluster: "c", RequestHeadersMutations: []*mutationrules.HeaderMutation{{}}}, wantErr: "request_headers_mutations: unsupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := compileMirrorPolicies([]*route.RouteAction_RequestMirrorPolicy{tc.in})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "request_mirror_policies[0]") {
					t.Fatalf("err = %v, want request_mirror_policies[0]…%s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMirrorSampling(t *testing.T) {
	for _, tc := range []struct {
		mp       MirrorPolicy
		min, max int
	}{
		{MirrorPolicy{}, 10000, 10000},
		{MirrorPolicy{numerator: 0, denominator: 100}, 0, 0},
		{MirrorPolicy{numerator: 25, denominator: 100}, 2200, 2800},
		{MirrorPolicy{numerator: 500000, denominator: 1000000}, 4600, 5400},
	} {
		n := 0
		for range 10000 {
			if tc.mp.Sampled() {
				n++
			}
		}
		if n < tc.min || n > tc.max {
			t.Errorf("%d/%d: sampled %d of 10000, want %d..%d", tc.mp.numerator, tc.mp.denominator, n, tc.min, tc.max)
		}
	}
}
