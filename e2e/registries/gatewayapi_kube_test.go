package registries

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/testenv"
)

var (
	httpRouteGVR    = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	kubeGatewayGVR  = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
	gatewayClassGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}
)

// gatewayAPIKubeYAML is a GatewayClass of Weft's, a Gateway with one
// HTTP listener on port, and an HTTPRoute sending shop.example.com/api
// to stable and the rest of shop.example.com to web.
func gatewayAPIKubeYAML(port int) string {
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - {name: http, port: %d, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: public}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: stable, port: 8080}]
  - backendRefs: [{name: web, port: 8080}]
`, port)
}

// TestGatewayAPIKube: the Gateway API read from a real API server. A
// GatewayClass, Gateway and HTTPRoute created through it make a weft
// gateway proxy (labelled with the Gateway's name) route by host and
// path to Services' pods; an edit of the route moves the traffic; an
// edit Weft rejects (a regular expression RE2 refuses, which the CRD's
// schema cannot check) shows Accepted=False on the route's status while
// the last good route keeps serving. The status of the class, the
// Gateway (listeners, attached routes) and the route is read back from
// the API server.
func TestGatewayAPIKube(t *testing.T) {
	bin := binaries(t)
	env := testenv.KubeAPIServer(t, testenv.WithIstioCRDs(), testenv.WithGatewayAPICRDs())
	k := &kube{t: t, env: env, c: env.Client(t), ctx: t.Context()}
	dyn := env.Dynamic(t)
	n := testenv.NewNetwork(t)
	k.namespace("shop")
	k.namespace("weft-system")

	// Three Services, one pod each: weft echo on the pod's address, no
	// sidecar (the gateway sends plain HTTP to pods without one).
	for _, svc := range []string{"web", "stable", "canary"} {
		ns := n.Netns(t, svc)
		k.service("shop", svc, 8080, map[string]string{"app": svc})
		k.pod("shop", svc+"-a", "default", ns.IP, map[string]string{"app": svc})
		k.endpointSlice("shop", svc, 8080, []sliceEndpoint{{pod: svc + "-a", ip: ns.IP, ready: true, serving: true}})
		startCmd(t, svc+" echo", ns.Command(context.Background(), filepath.Join(bin, "weft"), "echo",
			"--name", svc+"-a", "--version", svc, "--address", ns.IP+":8080"))
	}
	const port = 8000
	k.apply(gatewayAPIKubeYAML(port))

	cp := serve(t, bin, n, "--kubeconfig", env.Kubeconfig)
	gwNS := n.Netns(t, "gw")
	startWorkload(t, bin, cp, gwNS, workloadSpec{
		Name: "public-gw", Namespace: "shop", ServiceAccount: "public-gw",
		Labels:    config.GatewayNameLabel + "=public",
		TokenFile: k.serviceAccountToken("shop", "public-gw"),
		Extra:     []string{"--gateway", "--gateway-bind", gwNS.IP},
	})

	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(host, path string) (int, echoReply, error) {
		code, body, err := httpGet(hc, fmt.Sprintf("http://%s:%d%s", gwNS.IP, port, path), map[string]string{"Host": host})
		if err != nil || code != 200 {
			return code, echoReply{}, err
		}
		r, err := reply(body)
		return code, r, err
	}
	want := func(host, path, version string) {
		t.Helper()
		eventually(t, 30*time.Second, host+path+" answered by "+version, func() error {
			code, r, err := get(host, path)
			if err != nil || code != 200 || r.Version != version {
				return fmt.Errorf("%d from %q (%v)", code, r.Version, err)
			}
			return nil
		})
	}
	want("shop.example.com", "/api/items", "stable")
	want("shop.example.com", "/", "web")
	if code, _, _ := get("other.example.com", "/api/items"); code != 404 {
		t.Errorf("a host the route does not name: %d, want 404", code)
	}

	// Status, as the Gateway API says it, read back from the API server.
	eventually(t, 20*time.Second, "GatewayClass accepted", func() error {
		return wantConditions(dyn, gatewayClassGVR, "", "weft", "status.conditions", "Accepted=True")
	})
	eventually(t, 20*time.Second, "Gateway accepted and programmed, one route attached", func() error {
		if err := wantConditions(dyn, kubeGatewayGVR, "shop", "public", "status.conditions", "Accepted=True", "Programmed=True"); err != nil {
			return err
		}
		gw, err := dyn.Resource(kubeGatewayGVR).Namespace("shop").Get(context.Background(), "public", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ls, _, _ := unstructured.NestedSlice(gw.Object, "status", "listeners")
		if len(ls) != 1 || fmt.Sprint(ls[0].(map[string]any)["attachedRoutes"]) != "1" {
			return fmt.Errorf("listeners status %v", ls)
		}
		return nil
	})
	eventually(t, 20*time.Second, "HTTPRoute accepted by the Gateway", func() error {
		return wantParent(dyn, "Accepted=True", "ResolvedRefs=True")
	})

	// An edit moves /api to canary.
	updateRoute(t, dyn, func(spec map[string]any) {
		rule := spec["rules"].([]any)[0].(map[string]any)
		rule["backendRefs"] = []any{map[string]any{"name": "canary", "port": int64(8080)}}
	})
	want("shop.example.com", "/api/items", "canary")
	want("shop.example.com", "/", "web")

	// An edit Weft rejects: rejected on the route's status, by parent;
	// the last good route keeps serving.
	updateRoute(t, dyn, func(spec map[string]any) {
		rule := spec["rules"].([]any)[0].(map[string]any)
		rule["matches"] = []any{map[string]any{"path": map[string]any{"type": "RegularExpression", "value": "/api/(unclosed"}}}
		rule["backendRefs"] = []any{map[string]any{"name": "stable", "port": int64(8080)}}
	})
	eventually(t, 20*time.Second, "the bad HTTPRoute not accepted", func() error {
		return wantParent(dyn, "Accepted=False/UnsupportedValue:regular expression")
	})
	for range 20 {
		if code, r, err := get("shop.example.com", "/api/items"); err != nil || code != 200 || r.Version != "canary" {
			t.Fatalf("after a rejected edit: %d %q %v, want canary (the last good route)", code, r.Version, err)
		}
	}
}

// updateRoute edits HTTPRoute shop/shop's spec, retrying on a conflict
// with Weft's status writes.
func updateRoute(t *testing.T, dyn dynamic.Interface, edit func(spec map[string]any)) {
	t.Helper()
	ri := dyn.Resource(httpRouteGVR).Namespace("shop")
	eventually(t, 10*time.Second, "HTTPRoute updated", func() error {
		obj, err := ri.Get(context.Background(), "shop", metav1.GetOptions{})
		if err != nil {
			return err
		}
		edit(obj.Object["spec"].(map[string]any))
		_, err = ri.Update(context.Background(), obj, metav1.UpdateOptions{})
		return err
	})
}

// wantConditions checks that the conditions at path (dot-separated) of
// an object are observed at its generation and include each of want:
// "Type=Status", optionally followed by "/Reason" and ":a message part".
func wantConditions(dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name, path string, want ...string) error {
	var ri dynamic.ResourceInterface = dyn.Resource(gvr)
	if ns != "" {
		ri = dyn.Resource(gvr).Namespace(ns)
	}
	obj, err := ri.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(obj.Object, strings.Split(path, ".")...)
	return checkConditions(conds, obj.GetGeneration(), want...)
}

// wantParent checks HTTPRoute shop/shop's parents entry of Weft's for
// Gateway public.
func wantParent(dyn dynamic.Interface, want ...string) error {
	obj, err := dyn.Resource(httpRouteGVR).Namespace("shop").Get(context.Background(), "shop", metav1.GetOptions{})
	if err != nil {
		return err
	}
	parents, _, _ := unstructured.NestedSlice(obj.Object, "status", "parents")
	for _, p := range parents {
		m := p.(map[string]any)
		ref, _ := m["parentRef"].(map[string]any)
		if m["controllerName"] != config.WeftControllerName || ref["name"] != "public" {
			continue
		}
		conds, _ := m["conditions"].([]any)
		return checkConditions(conds, obj.GetGeneration(), want...)
	}
	return fmt.Errorf("no parents entry of %s for Gateway public: %v", config.WeftControllerName, parents)
}

func checkConditions(conds []any, generation int64, want ...string) error {
	for _, w := range want {
		w, part, _ := strings.Cut(w, ":")
		typ, rest, _ := strings.Cut(w, "=")
		status, reason, _ := strings.Cut(rest, "/")
		found := false
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] != typ {
				continue
			}
			found = true
			msg, _ := m["message"].(string)
			if m["status"] != status || (reason != "" && m["reason"] != reason) || !strings.Contains(msg, part) ||
				fmt.Sprint(m["observedGeneration"]) != fmt.Sprint(generation) {
				return fmt.Errorf("condition %v at generation %d, want %s", m, generation, w+":"+part)
			}
		}
		if !found {
			return fmt.Errorf("no %s condition in %v", typ, conds)
		}
	}
	return nil
}
