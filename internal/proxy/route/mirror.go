package route

import (
	"fmt"
	"math/rand/v2"
	"net/http"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// MirrorPolicy is one compiled RequestMirrorPolicy: where a shadow copy
// of a request goes. Immutable.
type MirrorPolicy struct {
	Cluster       string // the mirror cluster; exactly one of Cluster and ClusterHeader is set
	ClusterHeader string // canonical name of the header that names the mirror cluster
	HostRewrite   string // host_rewrite_literal (no "-shadow" suffix then)
	NoSuffix      bool   // disable_shadow_host_suffix_append
	// The request is mirrored when rand[0,denominator) < numerator;
	// denominator 0 means always.
	numerator, denominator uint32
}

// compileMirrorPolicies translates RouteAction.request_mirror_policies.
// runtime_fraction.runtime_key is ignored (there is no runtime: Envoy then
// uses default_value); trace_sampled is ignored (no tracing).
func compileMirrorPolicies(ps []*route.RouteAction_RequestMirrorPolicy) ([]MirrorPolicy, error) {
	var out []MirrorPolicy
	for i, p := range ps {
		mp := MirrorPolicy{Cluster: p.GetCluster(), HostRewrite: p.GetHostRewriteLiteral(), NoSuffix: p.GetDisableShadowHostSuffixAppend()}
		switch {
		case p.GetCluster() != "" && p.GetClusterHeader() != "":
			return nil, fmt.Errorf("request_mirror_policies[%d]: only one of cluster and cluster_header may be set", i)
		case p.GetClusterHeader() != "":
			mp.ClusterHeader = http.CanonicalHeaderKey(p.GetClusterHeader())
		case p.GetCluster() == "":
			return nil, fmt.Errorf("request_mirror_policies[%d]: one of cluster and cluster_header is required", i)
		}
		if len(p.GetRequestHeadersMutations()) > 0 {
			return nil, fmt.Errorf("request_mirror_policies[%d].request_headers_mutations: unsupported", i)
		}
		if f := p.GetRuntimeFraction().GetDefaultValue(); f != nil {
			switch f.GetDenominator() {
			case typev3.FractionalPercent_HUNDRED:
				mp.denominator = 100
			case typev3.FractionalPercent_TEN_THOUSAND:
				mp.denominator = 10_000
			case typev3.FractionalPercent_MILLION:
				mp.denominator = 1_000_000
			default:
				return nil, fmt.Errorf("request_mirror_policies[%d].runtime_fraction.default_value.denominator: unknown %v", i, f.GetDenominator())
			}
			mp.numerator = f.GetNumerator()
			if mp.numerator >= mp.denominator {
				mp.numerator, mp.denominator = 0, 0 // always
			}
		}
		out = append(out, mp)
	}
	return out, nil
}

// Sampled reports whether this request is mirrored (a fresh draw for
// each call). Safe for concurrent use.
func (mp *MirrorPolicy) Sampled() bool {
	return mp.denominator == 0 || rand.Uint32N(mp.denominator) < mp.numerator
}
