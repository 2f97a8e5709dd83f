package generate

import (
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// addMirrors sets the request mirror policies of an http route's action
// from its `mirror` (with `mirrorPercentage`, or the deprecated
// `mirrorPercent`) and `mirrors`, exactly as Istio's route translation
// does: one RequestMirrorPolicy per mirror destination, in order, with the
// destination's cluster, runtime_fraction.default_value holding the
// percentage (100/HUNDRED when none is given, value×10⁴/MILLION for a
// Percent) and trace_sampled false. An explicit 0% leaves that mirror out.
// action may be nil (routes without a destination); then nothing happens.
func addMirrors(action *route.Route_Route, s *mesh.Snapshot, ns string, h *networking.HTTPRoute, svc *registry.Service, p registry.Port) {
	if action == nil || action.Route == nil {
		return
	}
	if m := h.GetMirror(); m != nil {
		if pct := mirrorPercent(h); pct != nil {
			action.Route.RequestMirrorPolicies = append(action.Route.RequestMirrorPolicies, mirrorPolicy(s, ns, m, svc, p, pct))
		}
	}
	for _, m := range h.GetMirrors() {
		if m.GetDestination() == nil {
			continue
		}
		if pct := mirrorPolicyPercent(m); pct != nil {
			action.Route.RequestMirrorPolicies = append(action.Route.RequestMirrorPolicies, mirrorPolicy(s, ns, m.GetDestination(), svc, p, pct))
		}
	}
}

// mirrorPolicy resolves the mirror destination to its outbound cluster the
// same way route destinations are resolved (destinationPort).
func mirrorPolicy(s *mesh.Snapshot, ns string, d *networking.Destination, svc *registry.Service, p registry.Port, pct *core.RuntimeFractionalPercent) *route.RouteAction_RequestMirrorPolicy {
	host := s.ResolveHost(d.GetHost(), ns)
	port := destinationPort(s, host, d.GetPort().GetNumber(), svc, p)
	return &route.RouteAction_RequestMirrorPolicy{
		Cluster:         contract.ClusterName(contract.Outbound, port, d.GetSubset(), host),
		RuntimeFraction: pct,
		TraceSampled:    wrapperspb.Bool(false),
	}
}

// mirrorPercent is Istio's MirrorPercent: mirrorPercentage, else the
// deprecated mirrorPercent, else 100%. nil means "do not mirror".
func mirrorPercent(h *networking.HTTPRoute) *core.RuntimeFractionalPercent {
	switch {
	case h.GetMirrorPercentage() != nil:
		return percentFraction(h.GetMirrorPercentage())
	case h.GetMirrorPercent() != nil: //nolint:staticcheck // deprecated but still honoured by Istio
		if v := h.GetMirrorPercent().GetValue(); v > 0 { //nolint:staticcheck
			return integerFraction(v)
		}
		return nil
	}
	return integerFraction(100)
}

// mirrorPolicyPercent is Istio's MirrorPercentByPolicy.
func mirrorPolicyPercent(m *networking.HTTPMirrorPolicy) *core.RuntimeFractionalPercent {
	if m.GetPercentage() != nil {
		return percentFraction(m.GetPercentage())
	}
	return integerFraction(100)
}

func percentFraction(p *networking.Percent) *core.RuntimeFractionalPercent {
	if p.GetValue() <= 0 {
		return nil // an explicit 0% turns the mirror off
	}
	return &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		Numerator:   uint32(p.GetValue() * 10000),
		Denominator: typev3.FractionalPercent_MILLION,
	}}
}

func integerFraction(v uint32) *core.RuntimeFractionalPercent {
	return &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		Numerator:   v,
		Denominator: typev3.FractionalPercent_HUNDRED,
	}}
}
