package kubesource

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"weft.dev/weft/internal/config"
)

// vsObject is a VirtualService as the API server returns it, with the
// fields that change without the user changing anything.
func vsObject(name string, weights ...int64) *unstructured.Unstructured {
	var route []any
	for i, w := range weights {
		route = append(route, map[string]any{
			"destination": map[string]any{"host": []string{"reviews", "ratings", "details"}[i]},
			"weight":      w,
		})
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata": map[string]any{
			"name": name, "namespace": "shop",
			"uid": "0b6c3a63-4d0e-4cc2-9b4c-0e3b1c3b2f11", "resourceVersion": "1234", "generation": int64(3),
			"labels":        map[string]any{"app": "reviews"},
			"annotations":   map[string]any{"kubectl.kubernetes.io/last-applied-configuration": `{"big":"json"}`, "team": "books"},
			"managedFields": []any{map[string]any{"manager": "kubectl", "operation": "Update"}},
		},
		"spec":   map[string]any{"hosts": []any{"reviews"}, "http": []any{map[string]any{"route": route}}},
		"status": map[string]any{"observedGeneration": int64(2)},
	}}
	u.SetCreationTimestamp(metav1.NewTime(time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)))
	return u
}

func TestFilePath(t *testing.T) {
	p := FilePath(config.KindVirtualService, "shop", "reviews")
	if p != "k8s:VirtualService/shop/reviews" {
		t.Fatalf("FilePath = %q", p)
	}
	k, ns, name, ok := ParseFilePath(p)
	if !ok || k != config.KindVirtualService || ns != "shop" || name != "reviews" {
		t.Errorf("ParseFilePath(%q) = %q %q %q %v", p, k, ns, name, ok)
	}
	// A cluster-scoped object's path has no namespace.
	p = FilePath(config.KindGatewayClass, "", "weft")
	if k, ns, name, ok := ParseFilePath(p); p != "k8s:GatewayClass/weft" || !ok || k != config.KindGatewayClass || ns != "" || name != "weft" {
		t.Errorf("FilePath = %q, ParseFilePath = %q %q %q %v", p, k, ns, name, ok)
	}
	for _, bad := range []string{"routes.yaml", "k8s:VirtualService/shop", "k8s:VirtualService//x", "k8s:a/b/c/d", "k8s:GatewayClass/default/weft"} {
		if _, _, _, ok := ParseFilePath(bad); ok {
			t.Errorf("ParseFilePath(%q) accepted", bad)
		}
	}
}

// The virtual file goes through Weft's own decoder: the resource loads
// with its namespace, creation time and annotations, and diagnostics name
// the virtual file.
func TestRenderLoadsWithWeftsDecoder(t *testing.T) {
	u := vsObject("reviews", 90, 10)
	content, err := render(u)
	if err != nil {
		t.Fatal(err)
	}
	for _, leftOut := range []string{"status", "resourceVersion", "managedFields", "uid", "last-applied-configuration"} {
		if strings.Contains(string(content), leftOut) {
			t.Errorf("the virtual file holds %s:\n%s", leftOut, content)
		}
	}
	path := FilePath(config.KindVirtualService, "shop", "reviews")
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), KnownHost: func(string) bool { return true }})
	snap := store.Load(map[string][]byte{path: content})
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			t.Errorf("diagnostic: %v", d.Error())
		}
	}
	if len(snap.VirtualServices) != 1 {
		t.Fatalf("%d VirtualServices in force, want 1:\n%s", len(snap.VirtualServices), content)
	}
	vs := snap.VirtualServices[0]
	if vs.Namespace != "shop" || vs.Name != "reviews" || vs.File != path {
		t.Errorf("meta = %+v", vs.Meta)
	}
	if want := time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC); !vs.Created.Equal(want) {
		t.Errorf("created = %v, want %v (it decides conflicts by age)", vs.Created, want)
	}
	if vs.Annotations["team"] != "books" {
		t.Errorf("annotations = %v", vs.Annotations)
	}
	if w := vs.Spec.GetHttp()[0].GetRoute()[1].GetWeight(); w != 10 {
		t.Errorf("weight = %d, want 10", w)
	}

	// A bad edit is judged by the same rules as a file: rejected, named by
	// its virtual file, the last good version stays in force.
	bad, _ := render(vsObject("reviews", 90, -10))
	snap = store.Load(map[string][]byte{path: bad})
	var errs []config.Diagnostic
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			errs = append(errs, d)
		}
	}
	if len(errs) != 1 || errs[0].File != path || errs[0].Path != "spec.http[0].route[1].weight" {
		t.Fatalf("diagnostics = %v", snap.Diagnostics)
	}
	if w := snap.VirtualServices[0].Spec.GetHttp()[0].GetRoute()[1].GetWeight(); w != 10 {
		t.Errorf("weight in force = %d, want the last good 10", w)
	}
}

// Our own status writes (status, resourceVersion, managedFields change)
// leave the virtual file as it was, so they cause no reload.
func TestRenderIgnoresStatusChurn(t *testing.T) {
	a, _ := render(vsObject("reviews", 90, 10))
	u := vsObject("reviews", 90, 10)
	u.SetResourceVersion("99999")
	u.Object["status"] = map[string]any{"observedGeneration": int64(3), "conditions": []any{map[string]any{"type": "Reconciled"}}}
	u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "weft", Operation: "Update", Subresource: "status"}})
	b, _ := render(u)
	if string(a) != string(b) {
		t.Errorf("content changed with status churn:\n%s\n---\n%s", a, b)
	}
	// Rendering is deterministic (map order).
	for range 20 {
		if c, _ := render(vsObject("reviews", 90, 10)); string(c) != string(a) {
			t.Fatalf("render is not deterministic:\n%s\n---\n%s", a, c)
		}
	}
}

// kindSamples are a valid spec of each watched kind.
var kindSamples = map[config.Kind]string{
	config.KindVirtualService:        "hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}",
	config.KindDestinationRule:       "host: reviews",
	config.KindServiceEntry:          "hosts: [api.example.com]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS",
	config.KindWorkloadEntry:         "address: 10.0.0.7",
	config.KindWorkloadGroup:         "template: {serviceAccount: reviews}",
	config.KindSidecar:               "egress: [{hosts: [\"./*\"]}]",
	config.KindGateway:               "selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}]",
	config.KindPeerAuthentication:    "mtls: {mode: STRICT}",
	config.KindAuthorizationPolicy:   "action: ALLOW",
	config.KindRequestAuthentication: "selector: {matchLabels: {app: reviews}}",
	config.KindTelemetry:             "accessLogging: [{providers: [{name: envoy}]}]",
	config.KindRateLimit:             "limit: {requestsPerUnit: 100, unit: SECOND}",
	config.KindOIDCLogin:             "hosts: [shop.example.com]\n  issuer: https://idp.example.com\n  clientId: shop\n  credentialName: shop-oidc",
	config.KindGatewayClass:          "controllerName: weft.dev/gateway-controller",
	config.KindKubeGateway:           "gatewayClassName: weft\n  listeners: [{name: http, port: 80, protocol: HTTP}]",
	config.KindHTTPRoute:             "parentRefs: [{name: public}]\n  rules: [{backendRefs: [{name: reviews, port: 80}]}]",
	config.KindGRPCRoute:             "parentRefs: [{name: public}]\n  rules: [{backendRefs: [{name: reviews, port: 80}]}]",
	config.KindTCPRoute:              "parentRefs: [{name: public}]\n  rules: [{backendRefs: [{name: reviews, port: 80}]}]",
	config.KindTLSRoute:              "parentRefs: [{name: public}]\n  hostnames: [reviews.example.com]\n  rules: [{backendRefs: [{name: reviews, port: 443}]}]",
	config.KindReferenceGrant:        "from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: edge}]\n  to: [{group: \"\", kind: Service}]",
	config.KindNamespace:             "finalizers: [kubernetes]",
}

// kindName is a kind as written in a document's kind field.
func kindName(k config.Kind) string {
	name, _, _ := strings.Cut(string(k), ".") // Gateway.gateway.networking.k8s.io
	return name
}

// Every kind Weft's decoder loads is watched, at every version the
// decoder reads it in, with the rights the RBAC the tests run with grants
// (and so the chart and docs/registries.md, which other tests compare
// with it); and a watched object in force is known to be in force, so a
// bad edit of it says the last good version stays.
func TestKindsCoverTheDecoder(t *testing.T) {
	// The decoder names the kinds it loads when it meets another one.
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), KnownHost: func(string) bool { return true }})
	snap := store.Load(map[string][]byte{"probe.yaml": []byte("apiVersion: x/v1\nkind: NoSuchKind\nmetadata: {name: x}\n")})
	if len(snap.Diagnostics) != 1 {
		t.Fatalf("diagnostics = %v", snap.Diagnostics)
	}
	_, list, ok := strings.Cut(snap.Diagnostics[0].Message, "(Weft loads ")
	if !ok {
		t.Fatalf("the decoder no longer names the kinds it loads: %q", snap.Diagnostics[0].Message)
	}
	list, core := strings.CutSuffix(strings.TrimSuffix(list, ")"), "; and Kubernetes Namespaces (for their labels)")
	istio, gwapi, _ := strings.Cut(list, "; and from the Gateway API: ")
	decoded := append(strings.Split(istio, ", "), strings.Split(gwapi, ", ")...)
	watched := map[string]kind{}
	for _, k := range kinds {
		group := ""
		if k.group == gatewayAPIGroup {
			group = k.group
		}
		watched[group+"/"+kindName(k.kind)] = k
	}
	for i, name := range decoded {
		group := ""
		if i >= len(decoded)-len(strings.Split(gwapi, ", ")) {
			group = gatewayAPIGroup
		}
		if _, ok := watched[group+"/"+name]; !ok {
			t.Errorf("the decoder loads %s %s, the Kubernetes source does not watch it", group, name)
		}
	}
	if !core {
		t.Error("the decoder no longer says it loads Namespaces")
	} else if _, ok := watched["/Namespace"]; !ok {
		t.Error("the decoder loads Namespaces, the Kubernetes source does not watch them")
	}
	if core {
		decoded = append(decoded, "Namespace")
	}
	if len(kinds) != len(decoded) {
		t.Errorf("watched %d kinds, the decoder loads %d: %v", len(kinds), len(decoded), decoded)
	}

	rbac, err := os.ReadFile("testdata/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	grants := grantsOf(t, rbac)
	// One load per version index: the samples of one kind would
	// otherwise conflict with each other (one host, one namespace).
	byVersion := []map[string][]byte{}
	for _, k := range kinds {
		spec, ok := kindSamples[k.kind]
		if !ok {
			t.Errorf("no sample of %s in kindSamples", k.kind)
			continue
		}
		for i, v := range k.versions {
			if i == len(byVersion) {
				byVersion = append(byVersion, map[string][]byte{})
			}
			ns, nsField := "shop", ", namespace: shop"
			if clusterScoped(k.kind) {
				ns, nsField = "", ""
			}
			apiVersion := k.group + "/" + v
			if k.group == "" {
				apiVersion = v // the core group
			}
			doc := fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata: {name: sample-%s%s}\nspec:\n  %s\n", apiVersion, kindName(k.kind), v, nsField, spec)
			byVersion[i][FilePath(k.kind, ns, "sample-"+v)] = []byte(doc)
		}
		wants := []string{k.group + "/" + k.resource + " get", k.group + "/" + k.resource + " list", k.group + "/" + k.resource + " watch"}
		if k.kind != config.KindReferenceGrant && k.kind != config.KindNamespace { // the kinds without a status of Weft's
			wants = append(wants, k.group+"/"+k.resource+"/status update")
		}
		for _, want := range wants {
			if !grants[want] {
				t.Errorf("testdata/rbac.yaml does not grant %s", want)
			}
		}
	}
	for _, files := range byVersion {
		store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), KnownHost: func(string) bool { return true }})
		snap := store.Load(files)
		for _, d := range snap.Diagnostics {
			if d.Severity == config.SeverityError {
				t.Errorf("sample: %v", d.Error())
			}
		}
		in := inForce(snap)
		for path := range files {
			k, ns, name, _ := ParseFilePath(path)
			if !in[string(k)+"/"+decodedNamespace(ns)+"/"+name] {
				t.Errorf("%s is in force, inForce does not list it", path)
			}
		}
	}
}

// grantsOf flattens the ClusterRoles of a multi-document RBAC YAML into
// "group/resource verb" strings.
func grantsOf(t *testing.T, data []byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d struct {
			Kind  string `yaml:"kind"`
			Rules []struct {
				APIGroups []string `yaml:"apiGroups"`
				Resources []string `yaml:"resources"`
				Verbs     []string `yaml:"verbs"`
			} `yaml:"rules"`
		}
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("rbac: %v", err)
		}
		if d.Kind != "ClusterRole" {
			continue
		}
		for _, r := range d.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out[g+"/"+res+" "+v] = true
					}
				}
			}
		}
	}
}
