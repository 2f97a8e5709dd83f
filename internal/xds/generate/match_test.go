package generate

import (
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// TestRouteMatchIstioForms checks two Istio translations: withoutHeaders
// regex "*" means "header present" (Istio's validation allows it there
// and translates it to present_match), and scheme matches :scheme.
func TestRouteMatchIstioForms(t *testing.T) {
	rm := routeMatch(&networking.HTTPMatchRequest{
		WithoutHeaders: map[string]*networking.StringMatch{"X-Canary": regex("*")},
		Scheme:         exact("https"),
	})
	var canary, scheme *route.HeaderMatcher
	for _, h := range rm.GetHeaders() {
		switch h.GetName() {
		case "x-canary":
			canary = h
		case ":scheme":
			scheme = h
		}
	}
	if canary == nil || !canary.GetPresentMatch() || !canary.GetInvertMatch() {
		t.Errorf("withoutHeaders x-canary regex *: got %v, want an inverted present_match", canary)
	}
	if scheme == nil || scheme.GetStringMatch().GetExact() != "https" {
		t.Errorf("scheme: got %v, want :scheme exact https", scheme)
	}
}
