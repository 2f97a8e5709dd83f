package kubesource

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/config"
)

// objectOf is an object as the informer holds it, from JSON.
func objectOf(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return u
}

// conditionsOf renders conditions as "Type=Status/Reason" strings.
func conditionsOf(v any) string {
	var out []string
	list, _ := v.([]any)
	for _, c := range list {
		m := c.(map[string]any)
		out = append(out, m["type"].(string)+"="+m["status"].(string)+"/"+m["reason"].(string))
	}
	return strings.Join(out, " ")
}

// A route's status has one parents entry per parentRef naming a Gateway
// of Weft's, marked with Weft's controllerName and saying Accepted and
// ResolvedRefs in the Gateway API's reasons; another controller's entry
// is kept as it was, and writing the same outcome again changes nothing.
func TestRouteStatusParents(t *testing.T) {
	route := objectOf(t, `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute",
	  "metadata":{"name":"shop","namespace":"edge","generation":3},
	  "spec":{"parentRefs":[
	    {"group":"gateway.networking.k8s.io","kind":"Gateway","name":"public"},
	    {"group":"gateway.networking.k8s.io","kind":"Gateway","name":"theirs"},
	    {"group":"gateway.networking.k8s.io","kind":"Gateway","name":"public","sectionName":"https"}]},
	  "status":{"parents":[{"parentRef":{"name":"theirs"},"controllerName":"example.com/other",
	    "conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}]}}`)
	gs := &config.GatewayAPIStatus{
		Classes:  map[string]bool{"weft": true},
		Gateways: map[string]*config.GatewayResult{"edge/public": {}},
		Routes: map[string]*config.RouteResult{"HTTPRoute/edge/shop": {
			Parents: []config.ParentResult{
				{Index: 0},
				{Index: 2, Reason: gwv1.RouteReasonNoMatchingListenerHostname, Message: "not attached to Gateway edge/public: hostnames"},
			},
			RefsReason: gwv1.RouteReasonRefNotPermitted, RefsMessage: "spec.rules[0].backendRefs[0]: no ReferenceGrant",
		}},
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	st, ok := desiredGatewayAPIStatus(route, config.KindHTTPRoute, judge(nil, true), 3, now, gs)
	if !ok {
		t.Fatal("no status for a route of Weft's Gateway")
	}
	parents := st["parents"].([]any)
	if len(parents) != 3 {
		t.Fatalf("parents = %v", parents)
	}
	var got []string
	for _, p := range parents {
		m := p.(map[string]any)
		ref := m["parentRef"].(map[string]any)
		got = append(got, m["controllerName"].(string)+" "+ref["name"].(string)+": "+conditionsOf(m["conditions"]))
	}
	want := []string{
		"example.com/other theirs: Accepted=True/Accepted",
		"weft.dev/gateway-controller public: Accepted=True/Accepted ResolvedRefs=False/RefNotPermitted",
		"weft.dev/gateway-controller public: Accepted=False/NoMatchingListenerHostname ResolvedRefs=False/RefNotPermitted",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("parents:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	c := parents[1].(map[string]any)["conditions"].([]any)[0].(map[string]any)
	if c["observedGeneration"] != int64(3) || c["lastTransitionTime"] != "2026-12-02T10:00:00Z" {
		t.Errorf("condition = %v", c)
	}

	// Written, then judged the same an hour later: nothing to write.
	route.Object["status"] = roundTrip(t, st)
	again, _ := desiredGatewayAPIStatus(route, config.KindHTTPRoute, judge(nil, true), 3, now.Add(time.Hour), gs)
	if !sameStatus(route.Object["status"].(map[string]any), again) {
		t.Errorf("the same outcome would be written again:\n%v\n%v", route.Object["status"], again)
	}

	// An edit Weft rejects: not accepted, with Weft's message; the last
	// good version keeps serving.
	bad := diag(config.SeverityError, config.CodeInvalidValue, "spec.rules[0].matches[0].path.value", "value \"x\" must be an absolute path")
	st, _ = desiredGatewayAPIStatus(route, config.KindHTTPRoute, judge([]config.Diagnostic{bad}, true), 4, now, gs)
	p := st["parents"].([]any)[1].(map[string]any)
	if got := conditionsOf(p["conditions"]); got != "Accepted=False/UnsupportedValue ResolvedRefs=Unknown/Pending" {
		t.Errorf("rejected: %s", got)
	}
	if msg := p["conditions"].([]any)[0].(map[string]any)["message"].(string); !strings.Contains(msg, "must be an absolute path") || !strings.Contains(msg, "last good version stays in force") {
		t.Errorf("rejected message: %q", msg)
	}

	// Moved to another controller's Gateway only: Weft's entries go, the
	// other's stays.
	route.Object["spec"] = map[string]any{"parentRefs": []any{map[string]any{"name": "theirs"}}}
	st, ok = desiredGatewayAPIStatus(route, config.KindHTTPRoute, judge(nil, true), 5, now, gs)
	if !ok || len(st["parents"].([]any)) != 1 || st["parents"].([]any)[0].(map[string]any)["controllerName"] != "example.com/other" {
		t.Errorf("after moving away: %v %v", ok, st)
	}
	// A route that never named a Gateway of Weft's gets no status from Weft.
	route.Object["status"] = map[string]any{}
	if _, ok := desiredGatewayAPIStatus(route, config.KindHTTPRoute, judge(nil, true), 5, now, gs); ok {
		t.Error("status written for a route of another controller only")
	}
}

// A Gateway of Weft's class: Accepted and Programmed, and each listener's
// conditions and attached routes; another class's Gateway is not Weft's
// to write; a GatewayClass is Accepted when it names Weft's controller.
func TestGatewayAndClassStatus(t *testing.T) {
	gw := objectOf(t, `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway",
	  "metadata":{"name":"public","namespace":"edge","generation":2},
	  "spec":{"gatewayClassName":"weft","listeners":[{"name":"http","port":80,"protocol":"HTTP"},{"name":"tcp","port":9000,"protocol":"TCP"},{"name":"lines","port":80,"protocol":"TCP"}]},
	  "status":{"conditions":[
	    {"type":"Accepted","status":"Unknown","reason":"Pending","message":"Waiting for controller","lastTransitionTime":"1970-01-01T00:00:00Z"},
	    {"type":"Programmed","status":"Unknown","reason":"Pending","message":"Waiting for controller","lastTransitionTime":"1970-01-01T00:00:00Z"}]}}`)
	group := gwv1.Group("gateway.networking.k8s.io")
	gs := &config.GatewayAPIStatus{
		Classes: map[string]bool{"weft": true, "other": false},
		Gateways: map[string]*config.GatewayResult{"edge/public": {Listeners: []config.ListenerResult{
			{Name: "http", AttachedRoutes: 2, Kinds: []gwv1.RouteGroupKind{{Group: &group, Kind: "HTTPRoute"}}},
			{Name: "tcp", Condition: gwv1.ListenerConditionAccepted, Reason: gwv1.ListenerReasonUnsupportedProtocol, Message: "protocol TCP listeners are not supported"},
			{Name: "lines", Condition: gwv1.ListenerConditionConflicted, Reason: gwv1.ListenerReasonProtocolConflict, Message: "port 80 is listener \"http\"'s"},
		}}},
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	st, ok := desiredGatewayAPIStatus(gw, config.KindKubeGateway, judge(nil, true), 2, now, gs)
	if !ok {
		t.Fatal("no status for Weft's Gateway")
	}
	if got := conditionsOf(st["conditions"]); got != "Accepted=True/Accepted Programmed=True/Programmed" {
		t.Errorf("conditions: %s", got)
	}
	ls := st["listeners"].([]any)
	var got []string
	for _, l := range ls {
		m := l.(map[string]any)
		js, _ := json.Marshal(m["supportedKinds"])
		got = append(got, m["name"].(string)+" "+string(js)+" "+conditionsOf(m["conditions"]))
	}
	want := []string{
		`http [{"group":"gateway.networking.k8s.io","kind":"HTTPRoute"}] Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed`,
		`tcp [] Accepted=False/UnsupportedProtocol ResolvedRefs=True/ResolvedRefs Programmed=False/Invalid`,
		`lines [] Accepted=False/ProtocolConflict ResolvedRefs=True/ResolvedRefs Programmed=False/Invalid Conflicted=True/ProtocolConflict`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listeners:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := ls[0].(map[string]any)["attachedRoutes"]; n != int64(2) {
		t.Errorf("attachedRoutes = %v", n)
	}
	gw.Object["status"] = roundTrip(t, st)
	if again, _ := desiredGatewayAPIStatus(gw, config.KindKubeGateway, judge(nil, true), 2, now.Add(time.Hour), gs); !sameStatus(gw.Object["status"].(map[string]any), again) {
		t.Errorf("the same outcome would be written again")
	}

	gw.Object["spec"].(map[string]any)["gatewayClassName"] = "other"
	if _, ok := desiredGatewayAPIStatus(gw, config.KindKubeGateway, judge(nil, true), 3, now, gs); ok {
		t.Error("status written for another controller's Gateway")
	}

	class := objectOf(t, `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GatewayClass","metadata":{"name":"weft","generation":1},
	  "spec":{"controllerName":"weft.dev/gateway-controller"}}`)
	st, ok = desiredGatewayAPIStatus(class, config.KindGatewayClass, judge(nil, true), 1, now, gs)
	if !ok || conditionsOf(st["conditions"]) != "Accepted=True/Accepted" {
		t.Errorf("GatewayClass: %v %v", ok, st)
	}
	class.Object["spec"] = map[string]any{"controllerName": "example.com/other"}
	if _, ok := desiredGatewayAPIStatus(class, config.KindGatewayClass, judge(nil, true), 1, now, gs); ok {
		t.Error("status written for another controller's GatewayClass")
	}
	grant := objectOf(t, `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"ReferenceGrant","metadata":{"name":"g","namespace":"x"}}`)
	if _, ok := desiredGatewayAPIStatus(grant, config.KindReferenceGrant, judge(nil, true), 1, now, gs); ok {
		t.Error("status written for a ReferenceGrant, which has none")
	}
}

// What the translation finds about a route in force (a backend not
// permitted) is said by ResolvedRefs, not by refusing the whole route;
// a route Weft's decoder rejects is refused.
func TestGatewayAPITranslationFindingsDoNotReject(t *testing.T) {
	gwPath := FilePath(config.KindKubeGateway, "edge", "public")
	routePath := FilePath(config.KindHTTPRoute, "edge", "shop")
	files := map[string][]byte{
		gwPath: []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  gatewayClassName: weft
  listeners: [{name: http, port: 80, protocol: HTTP}]
`),
		routePath: []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: edge}
spec:
  parentRefs: [{name: public}]
  rules: [{backendRefs: [{name: web, namespace: elsewhere, port: 80}]}]
`),
	}
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), KnownHost: func(string) bool { return true }})
	snap := store.Load(files)
	r := &report{diags: diagnosticsByFile(snap), inForce: inForce(snap), gatewayAPI: snap.GatewayAPI}
	if judge(r.diags[routePath], true).accepted() {
		t.Fatalf("the route has no error: %v", snap.Diagnostics)
	}
	if v := judge(r.gatewayAPIDiags(routePath), true); !v.accepted() {
		t.Errorf("a backend not permitted refuses the route: %s", v.message)
	}
	if rr := snap.GatewayAPI.Routes["HTTPRoute/edge/shop"]; rr == nil || rr.RefsReason != gwv1.RouteReasonRefNotPermitted {
		t.Errorf("route result = %+v", rr)
	}

	files[routePath] = []byte(strings.Replace(string(files[routePath]), "port: 80}", "port: 80, weight: -1}", 1))
	snap = store.Load(files)
	r = &report{diags: diagnosticsByFile(snap), inForce: inForce(snap), gatewayAPI: snap.GatewayAPI}
	if v := judge(r.gatewayAPIDiags(routePath), true); v.accepted() || !strings.Contains(v.message, "weight") {
		t.Errorf("an invalid route: %s %s", v.reason, v.message)
	}
}

// A route attached to a Service routes Weft's sidecars: its status has
// Weft's entry for that parentRef, Accepted and ResolvedRefs.
func TestRouteStatusServiceParent(t *testing.T) {
	route := objectOf(t, `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute",
	  "metadata":{"name":"reviews","namespace":"default","generation":1},
	  "spec":{"parentRefs":[{"group":"","kind":"Service","name":"reviews","port":9080}]}}`)
	gs := &config.GatewayAPIStatus{
		Classes:  map[string]bool{},
		Gateways: map[string]*config.GatewayResult{},
		Routes:   map[string]*config.RouteResult{"HTTPRoute/default/reviews": {Parents: []config.ParentResult{{Index: 0}}}},
	}
	st, ok := desiredGatewayAPIStatus(route, config.KindHTTPRoute, judge(nil, true), 1, time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC), gs)
	if !ok {
		t.Fatal("no status for a route attached to a Service")
	}
	parents := st["parents"].([]any)
	if len(parents) != 1 {
		t.Fatalf("parents = %v", parents)
	}
	m := parents[0].(map[string]any)
	got := m["controllerName"].(string) + " " + m["parentRef"].(map[string]any)["kind"].(string) + ": " + conditionsOf(m["conditions"])
	if want := "weft.dev/gateway-controller Service: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
