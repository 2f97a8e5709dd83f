package config

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The translation says, in the Gateway API's own reasons, what became of
// each listener of Weft's Gateways and each route's parentRefs to them;
// Gateways of other controllers' classes (and Istio's) are left out.
func TestGatewayAPIStatus(t *testing.T) {
	routes := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: edge}
spec:
  parentRefs:
  - {name: public, sectionName: https}
  - {name: missing}
  - {name: public, sectionName: nope}
  - {name: public, sectionName: http}
  - {name: theirs}
  hostnames: [a.other.com]
  rules: [{backendRefs: [{name: a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: other}
spec:
  parentRefs: [{name: same-only, namespace: edge}]
  rules:
  - backendRefs:
    - {name: b, namespace: backends, port: 80}
    - {group: example.com, kind: Bucket, name: c}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: c, namespace: edge}
spec:
  parentRefs: [{name: same-only}]
  rules:
  - backendRefs:
    - {group: example.com, kind: Bucket, name: c}
    - {name: b, namespace: backends, port: 80}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-only, namespace: edge}
spec:
  gatewayClassName: weft
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - {name: udp, port: 9000, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: edge}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: istios, namespace: edge}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gwapiBase, "routes.yaml", routes))
	st := snap.GatewayAPI
	if st == nil {
		t.Fatal("no GatewayAPI status")
	}
	if !st.WeftClass("weft") || st.WeftClass("other") || st.WeftClass("istio") || st.WeftClass("nope") {
		t.Errorf("classes = %v", st.Classes)
	}
	var gws []string
	for key, g := range st.Gateways {
		for _, l := range g.Listeners {
			gws = append(gws, fmt.Sprintf("%s %s attached=%d kinds=%d %s/%s", key, l.Name, l.AttachedRoutes, len(l.Kinds), l.Condition, l.Reason))
		}
	}
	checkStrings(t, "listeners", slices.Sorted(slices.Values(gws)), []string{
		"edge/public http attached=1 kinds=2 /",
		"edge/public https attached=0 kinds=2 /",
		"edge/same-only http attached=1 kinds=2 /",
		"edge/same-only udp attached=0 kinds=0 Accepted/UnsupportedProtocol",
	})
	var parents []string
	for key, r := range st.Routes {
		for _, p := range r.Parents {
			parents = append(parents, fmt.Sprintf("%s[%d] %s", key, p.Index, p.Reason))
		}
		if r.RefsReason != "" {
			parents = append(parents, fmt.Sprintf("%s refs %s: %s", key, r.RefsReason, r.RefsMessage))
		}
	}
	checkStrings(t, "route parents", slices.Sorted(slices.Values(parents)), []string{
		"HTTPRoute/edge/a[0] NoMatchingListenerHostname",
		"HTTPRoute/edge/a[2] NoMatchingParent",
		"HTTPRoute/edge/a[3] ",
		"HTTPRoute/edge/c refs InvalidKind: spec.rules[0].backendRefs[0]: Weft routes to Services, ServiceEntries and hostnames only (group \"\", kind Service; group networking.istio.io, kind ServiceEntry or Hostname); requests for this backend are answered 500",
		"HTTPRoute/edge/c[0] ",
		"HTTPRoute/other/b[0] NotAllowedByListeners",
	})

	// A status writer that finds a listener's Secret missing marks it
	// unresolved in a copy; the translation's outcome is not changed.
	var asked []string
	marked := st.WithCertificates(func(ns, name string) error {
		asked = append(asked, ns+"/"+name)
		return errors.New("Secret " + ns + "/" + name + " does not exist")
	})
	checkStrings(t, "certificates checked", asked, []string{"edge/example-cert"})
	l := marked.Gateways["edge/public"].Listeners[1]
	if l.Name != "https" || l.Condition != gwv1.ListenerConditionResolvedRefs || l.Reason != gwv1.ListenerReasonInvalidCertificateRef ||
		l.Message != "Secret edge/example-cert does not exist" {
		t.Errorf("listener with a missing Secret: %+v", l)
	}
	if st.Gateways["edge/public"].Listeners[1].Reason != "" || marked.Gateways["edge/same-only"] != st.Gateways["edge/same-only"] {
		t.Error("WithCertificates changed the outcome or copied a Gateway without certificates")
	}
	if st.WithCertificates(func(string, string) error { return nil }).Gateways["edge/public"].Listeners[1].Reason != "" {
		t.Error("a listener whose Secret exists was marked")
	}
}
