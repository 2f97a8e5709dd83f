package kubesource

import (
	"log/slog"
	"strings"
	"testing"
	"time"

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
	for _, bad := range []string{"routes.yaml", "k8s:VirtualService/shop", "k8s:VirtualService//x", "k8s:a/b/c/d"} {
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

// Every kind Weft's decoder loads is watched.
func TestKindsCoverTheDecoder(t *testing.T) {
	want := []config.Kind{
		config.KindVirtualService, config.KindDestinationRule, config.KindServiceEntry, config.KindWorkloadEntry,
		config.KindWorkloadGroup, config.KindPeerAuthentication, config.KindAuthorizationPolicy, config.KindRequestAuthentication,
	}
	have := map[config.Kind]bool{}
	for _, k := range kinds {
		have[k.kind] = true
	}
	for _, k := range want {
		if !have[k] {
			t.Errorf("kind %s is not watched", k)
		}
	}
}
