package kubesource_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/config/kubesource"
	"weft.dev/weft/internal/testenv"
)

var (
	vsGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	drGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
)

// cluster is a real API server with Istio's and Weft's CRDs, the RBAC of
// testdata/rbac.yaml, and a client config for the "weft" service account
// bound to it: the source runs with exactly the rights documented.
type cluster struct {
	env  *testenv.KubeEnv
	kube kubernetes.Interface
	dyn  dynamic.Interface
	weft *rest.Config // as system:serviceaccount:weft-system:weft
}

func newCluster(t *testing.T, more ...testenv.KubeOption) *cluster {
	t.Helper()
	env := testenv.KubeAPIServer(t, append([]testenv.KubeOption{testenv.WithIstioCRDs(), testenv.WithWeftCRDs()}, more...)...)
	c := &cluster{env: env, kube: env.Client(t), dyn: env.Dynamic(t)}
	ctx := t.Context()
	for _, ns := range []string{"weft-system", "shop"} {
		if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rbac, err := os.ReadFile("testdata/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, rbac); err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.CoreV1().ServiceAccounts("weft-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "weft"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := c.kube.CoreV1().ServiceAccounts("weft-system").CreateToken(ctx, "weft", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.weft = &rest.Config{Host: env.URL, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.CAPEM}}
	return c
}

// replica is one control plane's config side: a Source and the loop the
// control plane runs around it (load the files once synced, on every
// change, then Report).
type replica struct {
	src   *kubesource.Source
	store *config.Store
	stop  func()
}

func (c *cluster) startReplica(t *testing.T, identity string) *replica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(tLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", identity)
	src, err := kubesource.New(kubesource.Options{
		Config: c.weft, Identity: identity, Logger: log,
		// Short, so that the failover test takes seconds; the API server is
		// on loopback.
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	store := config.NewStore(config.Options{Logger: log, KnownHost: func(string) bool { return true }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := src.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-src.Changed():
			}
			if src.Synced() {
				src.Report(store.Load(src.Files()))
			}
		}
	})
	r := &replica{src: src, store: store}
	r.stop = sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(r.stop)
	return r
}

// tLog writes a replica's warnings to the test's log (shown on failure).
type tLog struct{ t *testing.T }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// eventually polls cond every 50 ms until it holds, failing after 30 s
// with the last thing it said.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s; last: %s", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func vs(name, prefix, regex string) *unstructured.Unstructured {
	match := map[string]any{"uri": map[string]any{"prefix": prefix}}
	if regex != "" {
		match = map[string]any{"uri": map[string]any{"regex": regex}}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": name, "namespace": "shop"},
		"spec": map[string]any{
			"hosts": []any{"reviews"},
			"http": []any{map[string]any{
				"match": []any{match},
				"route": []any{map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v1"}}},
			}},
		},
	}}
}

var dr = &unstructured.Unstructured{Object: map[string]any{
	"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
	"metadata": map[string]any{"name": "reviews", "namespace": "shop"},
	"spec": map[string]any{
		"host":    "reviews",
		"subsets": []any{map[string]any{"name": "v1", "labels": map[string]any{"version": "v1"}}},
	},
}}

// inForce returns the first match prefix or regex of the VirtualService
// shop/name in force, or "".
func inForce(r *replica, name string) string {
	for _, v := range r.store.Snapshot().VirtualServices {
		if v.Namespace == "shop" && v.Name == name {
			u := v.Spec.GetHttp()[0].GetMatch()[0].GetUri()
			return u.GetPrefix() + u.GetRegex()
		}
	}
	return ""
}

func (c *cluster) reconciled(t *testing.T, name string) (cond map[string]any, st map[string]any) {
	t.Helper()
	u, err := c.dyn.Resource(vsGVR).Namespace("shop").Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return nil, nil
	}
	st, _, _ = unstructured.NestedMap(u.Object, "status")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, x := range conds {
		if m, _ := x.(map[string]any); m["type"] == kubesource.ConditionType {
			return m, st
		}
	}
	return nil, st
}

func (c *cluster) events(t *testing.T, name string) []eventsv1.Event {
	t.Helper()
	list, err := c.kube.EventsV1().Events("shop").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "VirtualService" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// Objects created through the API server become files and go into force;
// a bad edit is rejected with status and a Warning event while the last
// good version stays in force; a fix is accepted; a delete removes it.
func TestKubernetesConfigSource(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	// One object before the source starts (the initial list), one after
	// (the watch).
	if _, err := c.dyn.Resource(drGVR).Namespace("shop").Create(ctx, dr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := c.startReplica(t, "replica-a")
	eventually(t, "synced", func() (bool, string) { return r.src.Synced(), fmt.Sprint(r.src.Status()) })
	if _, ok := r.src.Files()["k8s:DestinationRule/shop/reviews"]; !ok {
		t.Fatalf("files after sync: %v", keys(r.src.Files()))
	}
	if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Create(ctx, vs("reviews", "/v1", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the VirtualService in force", func() (bool, string) {
		return inForce(r, "reviews") == "/v1", fmt.Sprint(r.store.Snapshot().Diagnostics)
	})
	eventually(t, "status Accepted", func() (bool, string) {
		cond, st := c.reconciled(t, "reviews")
		return cond["status"] == "True" && cond["reason"] == kubesource.ReasonAccepted && fmt.Sprint(st["observedGeneration"]) == "1", fmt.Sprint(st)
	})

	// A bad edit: a regex RE2 does not accept. The CRD's schema lets it in;
	// Weft's validation rejects it.
	cur, err := c.dyn.Resource(vsGVR).Namespace("shop").Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := vs("reviews", "", "/v1/(unclosed")
	bad.SetResourceVersion(cur.GetResourceVersion())
	edited := time.Now()
	if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "status Rejected", func() (bool, string) {
		cond, st := c.reconciled(t, "reviews")
		msgs, _ := st["validationMessages"].([]any)
		return cond["status"] == "False" && cond["reason"] == kubesource.ReasonRejected &&
			fmt.Sprint(st["observedGeneration"]) == "2" && fmt.Sprint(cond["observedGeneration"]) == "2" && len(msgs) > 0, fmt.Sprint(st)
	})
	t.Logf("from the bad edit to its status read back: %v (polled every 50ms)", time.Since(edited))
	cond, st := c.reconciled(t, "reviews")
	msg, _ := cond["message"].(string)
	t.Logf("status of the rejected object: %v", st)
	if !strings.Contains(msg, "spec.http[0].match[0].uri.regex") || !strings.Contains(msg, "the last good version stays in force") {
		t.Errorf("condition message = %q", msg)
	}
	if vm := st["validationMessages"].([]any)[0].(map[string]any); vm["level"] != "ERROR" || vm["type"].(map[string]any)["code"] != string(config.CodeInvalidValue) {
		t.Errorf("validationMessages = %v", st["validationMessages"])
	}
	if got := inForce(r, "reviews"); got != "/v1" {
		t.Errorf("in force after the bad edit: %q, want the last good /v1", got)
	}
	eventually(t, "a Warning event", func() (bool, string) {
		evs := c.events(t, "reviews")
		return len(evs) == 1 && evs[0].Type == corev1.EventTypeWarning && evs[0].Reason == kubesource.ReasonRejected, fmt.Sprint(evs)
	})
	ev := c.events(t, "reviews")[0]
	t.Logf("event: %s %s %s/%s: %s", ev.Type, ev.Reason, ev.Regarding.Kind, ev.Regarding.Name, ev.Note)
	if ev.ReportingController != kubesource.ReportingController || ev.ReportingInstance != "replica-a" || !strings.Contains(ev.Note, "regex") {
		t.Errorf("event = %+v", ev)
	}

	// Loading again (as the control plane does on any registry change)
	// writes nothing new: no second event, the status stays as it is.
	rv := resourceVersion(t, c, "reviews")
	for range 3 {
		r.src.Report(r.store.Reload())
	}
	// A change elsewhere makes the writer run through every object again.
	other := vs("ratings", "/r", "")
	other.Object["spec"].(map[string]any)["hosts"] = []any{"ratings"}
	other.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)["route"] = []any{map[string]any{"destination": map[string]any{"host": "ratings"}}}
	if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ratings accepted", func() (bool, string) {
		cond, st := c.reconciled(t, "ratings")
		return cond["reason"] == kubesource.ReasonAccepted, fmt.Sprint(st)
	})
	if n := len(c.events(t, "reviews")); n != 1 {
		t.Errorf("%d events for one rejection, want 1", n)
	}
	if got := resourceVersion(t, c, "reviews"); got != rv {
		t.Errorf("the rejected object was written again (resourceVersion %s -> %s) with nothing new to say", rv, got)
	}

	// The fix is accepted.
	cur, _ = c.dyn.Resource(vsGVR).Namespace("shop").Get(ctx, "reviews", metav1.GetOptions{})
	good := vs("reviews", "/v2", "")
	good.SetResourceVersion(cur.GetResourceVersion())
	if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Update(ctx, good, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the fix in force and Accepted", func() (bool, string) {
		cond, st := c.reconciled(t, "reviews")
		_, hasMsgs := st["validationMessages"]
		return inForce(r, "reviews") == "/v2" && cond["reason"] == kubesource.ReasonAccepted &&
			fmt.Sprint(st["observedGeneration"]) == "3" && !hasMsgs, fmt.Sprint(st)
	})

	// Deleting removes it.
	if err := c.dyn.Resource(vsGVR).Namespace("shop").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted", func() (bool, string) {
		_, file := r.src.Files()["k8s:VirtualService/shop/reviews"]
		return inForce(r, "reviews") == "" && !file, fmt.Sprint(keys(r.src.Files()))
	})
	st2 := r.src.Status()
	if !st2.Synced || !st2.Connected || st2.Objects != 2 {
		t.Errorf("status = %+v, want synced, connected, 2 objects", st2)
	}
}

func resourceVersion(t *testing.T, c *cluster, name string) string {
	t.Helper()
	u, err := c.dyn.Resource(vsGVR).Namespace("shop").Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u.GetResourceVersion()
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Only the Lease holder writes; when it stops, another replica takes over
// within the lease's lifetime.
func TestKubernetesStatusLeaderOnly(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	if _, err := c.dyn.Resource(drGVR).Namespace("shop").Create(ctx, dr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := c.startReplica(t, "replica-a")
	eventually(t, "replica-a leads", func() (bool, string) { return a.src.Leader(), "" })
	b := c.startReplica(t, "replica-b")
	eventually(t, "replica-b synced", func() (bool, string) { return b.src.Synced(), "" })

	if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Create(ctx, vs("reviews", "", "(bad"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rejected by the leader", func() (bool, string) {
		cond, st := c.reconciled(t, "reviews")
		return cond["reason"] == kubesource.ReasonRejected && len(c.events(t, "reviews")) == 1, fmt.Sprint(st)
	})
	// replica-b judged it too (it loads the same objects), but wrote
	// nothing.
	eventually(t, "replica-b loaded it", func() (bool, string) {
		for _, d := range b.store.Snapshot().Diagnostics {
			if d.File == "k8s:VirtualService/shop/reviews" {
				return true, ""
			}
		}
		return false, ""
	})
	if b.src.Leader() {
		t.Fatal("two leaders")
	}
	for _, e := range c.events(t, "reviews") {
		if e.ReportingInstance != "replica-a" {
			t.Errorf("event from %s, a replica that does not lead", e.ReportingInstance)
		}
	}

	// replica-a stops (releasing the Lease); replica-b takes over and
	// writes the next outcome.
	a.stop()
	eventually(t, "replica-b leads", func() (bool, string) { return b.src.Leader(), "" })
	cur, _ := c.dyn.Resource(vsGVR).Namespace("shop").Get(ctx, "reviews", metav1.GetOptions{})
	bad2 := vs("reviews", "", "(still bad")
	bad2.SetResourceVersion(cur.GetResourceVersion())
	if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Update(ctx, bad2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica-b's event for generation 2", func() (bool, string) {
		for _, e := range c.events(t, "reviews") {
			if e.ReportingInstance == "replica-b" && strings.Contains(e.Note, "generation 2") {
				return true, ""
			}
		}
		return false, fmt.Sprint(c.events(t, "reviews"))
	})
	cond, _ := c.reconciled(t, "reviews")
	if fmt.Sprint(cond["observedGeneration"]) != "2" || cond["reason"] != kubesource.ReasonRejected {
		t.Errorf("condition = %v", cond)
	}
}

// looseCRD is VirtualService's CRD as older Istio releases shipped it: the
// spec is not checked by the API server at all.
const looseCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: virtualservices.networking.istio.io
spec:
  group: networking.istio.io
  names: {kind: VirtualService, listKind: VirtualServiceList, plural: virtualservices, singular: virtualservice}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// An object the istio.io/api Go types cannot decode (a weight that is a
// string) still reaches Weft's decoder, gets a status saying why, and does
// not hide the good objects listed with it; the kinds whose CRDs are
// missing are reported.
func TestKubernetesUndecodableObject(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx := t.Context()
	if err := env.Apply(ctx, []byte(looseCRD)); err != nil {
		t.Fatal(err)
	}
	c := &cluster{env: env, kube: env.Client(t), dyn: env.Dynamic(t), weft: env.RESTConfig()}
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	good := vs("ratings", "/r", "")
	good.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)["route"] = []any{map[string]any{"destination": map[string]any{"host": "ratings"}}}
	good.Object["spec"].(map[string]any)["hosts"] = []any{"ratings"}
	bad := vs("reviews", "/v1", "")
	bad.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)["route"] = []any{map[string]any{"destination": map[string]any{"host": "reviews"}, "weight": "ten"}}
	for _, u := range []*unstructured.Unstructured{good, bad} {
		if _, err := c.dyn.Resource(vsGVR).Namespace("shop").Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r := c.startReplica(t, "replica-a")
	eventually(t, "the good object in force", func() (bool, string) {
		return inForce(r, "ratings") == "/r", fmt.Sprint(r.store.Snapshot().Diagnostics)
	})
	eventually(t, "the undecodable object rejected on its status", func() (bool, string) {
		cond, st := c.reconciled(t, "reviews")
		msg, _ := cond["message"].(string)
		return cond["reason"] == kubesource.ReasonRejected && strings.Contains(msg, "spec.http[0].route[0].weight"), fmt.Sprint(st)
	})
	cond, _ := c.reconciled(t, "reviews")
	t.Logf("condition: %v", cond)
	st := r.src.Status()
	if !strings.Contains(st.LastError, "DestinationRule") || !st.Synced {
		t.Errorf("status = %+v, want synced and the missing kinds named", st)
	}
	// A cluster without the Gateway API is an ordinary one: its kinds
	// are not counted as missing.
	if strings.Contains(st.LastError, "HTTPRoute") {
		t.Errorf("status = %+v names the Gateway API's kinds", st)
	}
}

var telGVR = schema.GroupVersionResource{Group: "telemetry.istio.io", Version: "v1", Resource: "telemetries"}

// telemetry is a Telemetry of namespace shop logging through the built-in
// envoy provider, only what filter selects ("" for everything).
func telemetry(apiVersion, name, filter string) *unstructured.Unstructured {
	entry := map[string]any{"providers": []any{map[string]any{"name": "envoy"}}}
	if filter != "" {
		entry["filter"] = map[string]any{"expression": filter}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": "Telemetry",
		"metadata": map[string]any{"name": name, "namespace": "shop"},
		"spec": map[string]any{
			"selector":      map[string]any{"matchLabels": map[string]any{"app": name}},
			"accessLogging": []any{entry},
		},
	}}
}

// telemetryInForce returns the access-log filter of Telemetry shop/name in
// force ("*" when it has none), or "" when none is.
func telemetryInForce(r *replica, name string) string {
	for _, tel := range r.store.Snapshot().Telemetries {
		if tel.Namespace == "shop" && tel.Name == name {
			if f := tel.Spec.GetAccessLogging()[0].GetFilter().GetExpression(); f != "" {
				return f
			}
			return "*"
		}
	}
	return ""
}

// reconciledOf is reconciled for an object of any watched resource.
func (c *cluster) reconciledOf(t *testing.T, gvr schema.GroupVersionResource, name string) (cond map[string]any, st map[string]any) {
	t.Helper()
	u, err := c.dyn.Resource(gvr).Namespace("shop").Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return nil, nil
	}
	st, _, _ = unstructured.NestedMap(u.Object, "status")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, x := range conds {
		if m, _ := x.(map[string]any); m["type"] == kubesource.ConditionType {
			return m, st
		}
	}
	return nil, st
}

// Telemetry objects are watched like the other kinds, in either version
// the CRD serves: created, they are in force with status Accepted; a bad
// edit (a filter Weft cannot run) is rejected on the object's status,
// naming the field, and the last good version stays in force; deleted,
// they are gone.
func TestKubernetesTelemetry(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	// One object before the source starts, written as v1alpha1 (the API
	// server serves it as v1 too: the versions share one schema).
	if _, err := c.dyn.Resource(schema.GroupVersionResource{Group: "telemetry.istio.io", Version: "v1alpha1", Resource: "telemetries"}).
		Namespace("shop").Create(ctx, telemetry("telemetry.istio.io/v1alpha1", "ratings", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := c.startReplica(t, "replica-a")
	eventually(t, "synced", func() (bool, string) { return r.src.Synced(), fmt.Sprint(r.src.Status()) })
	if st := r.src.Status(); st.LastError != "" {
		t.Errorf("status = %+v: with Istio's CRDs installed every kind is served", st)
	}
	eventually(t, "the v1alpha1 Telemetry in force", func() (bool, string) {
		return telemetryInForce(r, "ratings") == "*", fmt.Sprint(r.store.Snapshot().Diagnostics)
	})

	good := "response.code >= 500"
	if _, err := c.dyn.Resource(telGVR).Namespace("shop").Create(ctx, telemetry("telemetry.istio.io/v1", "reviews", good), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Telemetry in force and Accepted", func() (bool, string) {
		cond, st := c.reconciledOf(t, telGVR, "reviews")
		return telemetryInForce(r, "reviews") == good && cond["reason"] == kubesource.ReasonAccepted &&
			fmt.Sprint(st["observedGeneration"]) == "1", fmt.Sprint(st, r.store.Snapshot().Diagnostics)
	})

	// A filter outside the CEL subset Weft runs: the CRD's schema lets it
	// in, Weft's validation rejects it.
	cur, err := c.dyn.Resource(telGVR).Namespace("shop").Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := telemetry("telemetry.istio.io/v1", "reviews", "response.flags != 0")
	bad.SetResourceVersion(cur.GetResourceVersion())
	if _, err := c.dyn.Resource(telGVR).Namespace("shop").Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "status Rejected", func() (bool, string) {
		cond, st := c.reconciledOf(t, telGVR, "reviews")
		return cond["reason"] == kubesource.ReasonRejected && fmt.Sprint(cond["observedGeneration"]) == "2", fmt.Sprint(st)
	})
	cond, _ := c.reconciledOf(t, telGVR, "reviews")
	msg, _ := cond["message"].(string)
	t.Logf("condition of the rejected Telemetry: %s", msg)
	for _, want := range []string{"spec.accessLogging[0].filter.expression", `"response.flags != 0"`, "Weft supports", "the last good version stays in force"} {
		if !strings.Contains(msg, want) {
			t.Errorf("condition message lacks %q: %q", want, msg)
		}
	}
	if got := telemetryInForce(r, "reviews"); got != good {
		t.Errorf("in force after the bad edit: %q, want the last good %q", got, good)
	}
	found := false
	for _, d := range r.store.Snapshot().Diagnostics {
		if d.File == "k8s:Telemetry/shop/reviews" && d.Severity == config.SeverityError && d.Path == "spec.accessLogging[0].filter.expression" {
			found = true
		}
	}
	if !found {
		t.Errorf("no error diagnostic for k8s:Telemetry/shop/reviews: %v", r.store.Snapshot().Diagnostics)
	}

	// Deleting removes it (the other one stays).
	if err := c.dyn.Resource(telGVR).Namespace("shop").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted", func() (bool, string) {
		_, file := r.src.Files()["k8s:Telemetry/shop/reviews"]
		return telemetryInForce(r, "reviews") == "" && !file, fmt.Sprint(keys(r.src.Files()))
	})
	if got := telemetryInForce(r, "ratings"); got != "*" {
		t.Errorf("Telemetry shop/ratings in force: %q, want it untouched", got)
	}
}
