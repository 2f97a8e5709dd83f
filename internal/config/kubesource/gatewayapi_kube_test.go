package kubesource_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/testenv"
)

var (
	classGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}
	gwGVR    = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
	routeGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
)

const gatewayAPIObjects = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  gatewayClassName: weft
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: shop}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: public}, {name: theirs}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
`

// With exactly the documented rights, the source reads the Gateway API's
// objects (a cluster-scoped GatewayClass included) into the store, which
// translates them; the leader writes the Gateway API's status on Weft's
// class, Gateway and route parents (a Gateway's, a Service's), and
// nothing on another controller's.
func TestKubernetesGatewayAPI(t *testing.T) {
	c := newCluster(t, testenv.WithGatewayAPICRDs())
	if err := c.env.Apply(t.Context(), []byte(gatewayAPIObjects)); err != nil {
		t.Fatal(err)
	}
	r := c.startReplica(t, "replica-a")
	eventually(t, "the routes translated", func() (bool, string) {
		snap := r.store.Snapshot()
		found := 0
		for _, vs := range snap.VirtualServices {
			if vs.Name == "public-gwapi-http.shop.example.com" || vs.Name == "mesh.reviews.shop.svc.cluster.local" {
				found++
			}
		}
		return found == 2, fmt.Sprint(snap.Diagnostics)
	})
	if st := r.src.Status(); st.LastError != "" {
		t.Errorf("status = %+v", st)
	}
	get := func(gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
		t.Helper()
		var (
			u   *unstructured.Unstructured
			err error
		)
		if ns == "" {
			u, err = c.dyn.Resource(gvr).Get(t.Context(), name, metav1.GetOptions{})
		} else {
			u, err = c.dyn.Resource(gvr).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	conds := func(v any) string {
		list, _ := v.([]any)
		var out []string
		for _, e := range list {
			m := e.(map[string]any)
			out = append(out, fmt.Sprintf("%s=%s/%s@%v", m["type"], m["status"], m["reason"], m["observedGeneration"]))
		}
		return strings.Join(out, " ")
	}
	eventually(t, "GatewayClass weft accepted", func() (bool, string) {
		got := conds(get(classGVR, "", "weft").Object["status"].(map[string]any)["conditions"])
		return got == "Accepted=True/Accepted@1", got
	})
	eventually(t, "Gateway public accepted and programmed", func() (bool, string) {
		st, _ := get(gwGVR, "shop", "public").Object["status"].(map[string]any)
		got := conds(st["conditions"])
		ls, _ := st["listeners"].([]any)
		if len(ls) == 1 {
			got += fmt.Sprintf(" listener %v: %s", ls[0].(map[string]any)["attachedRoutes"], conds(ls[0].(map[string]any)["conditions"]))
		}
		return got == "Accepted=True/Accepted@1 Programmed=True/Programmed@1 listener 1: Accepted=True/Accepted@1 ResolvedRefs=True/ResolvedRefs@1 Programmed=True/Programmed@1", got
	})
	eventually(t, "HTTPRoute accepted by Gateway public", func() (bool, string) {
		st, _ := get(routeGVR, "shop", "shop").Object["status"].(map[string]any)
		parents, _ := st["parents"].([]any)
		if len(parents) != 1 {
			return false, fmt.Sprint(parents)
		}
		p := parents[0].(map[string]any)
		got := fmt.Sprintf("%s %v: %s", p["controllerName"], p["parentRef"].(map[string]any)["name"], conds(p["conditions"]))
		return got == config.WeftControllerName+" public: Accepted=True/Accepted@1 ResolvedRefs=True/ResolvedRefs@1", got
	})
	// A route attached to a Service: Weft's sidecars route it.
	eventually(t, "HTTPRoute reviews accepted for Service reviews", func() (bool, string) {
		st, _ := get(routeGVR, "shop", "reviews").Object["status"].(map[string]any)
		parents, _ := st["parents"].([]any)
		if len(parents) != 1 {
			return false, fmt.Sprint(parents)
		}
		p := parents[0].(map[string]any)
		got := fmt.Sprintf("%s %v %v: %s", p["controllerName"], p["parentRef"].(map[string]any)["kind"], p["parentRef"].(map[string]any)["name"], conds(p["conditions"]))
		return got == config.WeftControllerName+" Service reviews: Accepted=True/Accepted@1 ResolvedRefs=True/ResolvedRefs@1", got
	})
	// Another controller's class and Gateway: their status is theirs.
	for _, u := range []*unstructured.Unstructured{get(classGVR, "", "other"), get(gwGVR, "shop", "theirs")} {
		st, _ := u.Object["status"].(map[string]any)
		if got := conds(st["conditions"]); strings.Contains(got, "True") {
			t.Errorf("%s %s: status written: %s", u.GetKind(), u.GetName(), got)
		}
	}

	// A listener that admits the routes of namespaces by label reads the
	// Namespaces' labels from the API server, and follows a relabelling.
	if err := c.env.Apply(t.Context(), []byte(sharedGatewayObjects)); err != nil {
		t.Fatal(err)
	}
	attached := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			snap := r.store.Snapshot()
			found := slices.ContainsFunc(snap.VirtualServices, func(vs *config.VirtualService) bool {
				return vs.Name == "shared-gwapi-http.partner.example.com"
			})
			return found == want, fmt.Sprint(snap.Diagnostics)
		}
	}
	eventually(t, "the route of the labelled namespace attached", attached(true))
	ns, err := c.kube.CoreV1().Namespaces().Get(t.Context(), "partner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels["shared-gateway-access"] = "false"
	if _, err := c.kube.CoreV1().Namespaces().Update(t.Context(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route detached once its namespace lost the label", attached(false))
}

const sharedGatewayObjects = `
apiVersion: v1
kind: Namespace
metadata:
  name: partner
  labels: {shared-gateway-access: "true"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {shared-gateway-access: "true"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: partner, namespace: partner}
spec:
  parentRefs: [{name: shared, namespace: shop}]
  hostnames: [partner.example.com]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`
