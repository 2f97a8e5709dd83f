package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/ca/kuberoot"
	"weft.dev/weft/internal/inject"
	"weft.dev/weft/internal/testenv"
)

func newServer(t *testing.T, objs ...runtime.Object) (*Server, *fake.Clientset) {
	t.Helper()
	c, err := ca.New(ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(objs...)
	s, err := New(Options{Address: "127.0.0.1:0", Client: client, Config: inject.Config{Image: "example/weft-proxy:test"}}, c)
	if err != nil {
		t.Fatal(err)
	}
	return s, client
}

func review(t *testing.T, kind, ns string, obj any) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
			Namespace: ns, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	})
	return b
}

func post(t *testing.T, s *Server, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return rec.Code, nil
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("answer %q: %v", rec.Body.String(), err)
	}
	if out.Response.UID != "u-1" {
		t.Errorf("response UID %q", out.Response.UID)
	}
	return rec.Code, out.Response
}

// applyPatch applies the webhook's patch (whole-member "add"s) to pod.
func applyPatch(t *testing.T, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	var ops []struct {
		Op, Path string
		Value    json.RawMessage
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pod)
	var doc map[string]any
	json.Unmarshal(raw, &doc)
	for _, o := range ops {
		var v any
		json.Unmarshal(o.Value, &v)
		parts := strings.Split(strings.TrimPrefix(o.Path, "/"), "/")
		if o.Op != "add" || len(parts) > 2 {
			t.Fatalf("unexpected op %s %s", o.Op, o.Path)
		}
		m := doc
		if len(parts) == 2 {
			m = doc[parts[0]].(map[string]any)
		}
		m[parts[len(parts)-1]] = v
	}
	raw, _ = json.Marshal(doc)
	var out corev1.Pod
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestAdmit(t *testing.T) {
	s, _ := newServer(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.LabelIstioInjection: "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	defer s.Close()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}

	code, resp := post(t, s, review(t, "Pod", "shop", pod))
	if code != 200 || !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("inject: %d %+v", code, resp)
	}
	want, _, _ := inject.InjectPod(pod, "shop", map[string]string{inject.LabelIstioInjection: "enabled"}, s.opts.Config)
	if got := applyPatch(t, pod, resp.Patch); !reflect.DeepEqual(got, want) {
		t.Errorf("patched pod differs from InjectPod's:\n%s\n%s", resp.Patch, mustJSON(want))
	}

	if _, resp := post(t, s, review(t, "Pod", "plain", pod)); !resp.Allowed || resp.Patch != nil {
		t.Errorf("pod of an unlabelled namespace: %+v", resp)
	}
	if _, resp := post(t, s, review(t, "Service", "shop", pod)); !resp.Allowed || resp.Patch != nil {
		t.Errorf("not a pod: %+v", resp)
	}
	if _, resp := post(t, s, review(t, "Pod", "gone", pod)); resp.Allowed || !strings.Contains(resp.Result.Message, "namespace gone") {
		t.Errorf("missing namespace: %+v", resp)
	}
	bad := pod.DeepCopy()
	bad.Annotations = map[string]string{inject.AnnotationExcludeInPort: "http"}
	if _, resp := post(t, s, review(t, "Pod", "shop", bad)); resp.Allowed || !strings.Contains(resp.Result.Message, inject.AnnotationExcludeInPort) {
		t.Errorf("bad annotation: %+v", resp)
	}
	if code, _ := post(t, s, []byte("{")); code != http.StatusBadRequest {
		t.Errorf("garbage: %d", code)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestCABundle: Run sets the caBundle of every webhook of the
// configuration, and sets it back when someone changes it.
func TestCABundle(t *testing.T) {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "a.weft.dev"}, {Name: "b.weft.dev"}}}
	s, client := newServer(t, mwc)
	testenv.Run(t, 10*time.Second, s.Run)
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	wait := func(what string) {
		t.Helper()
		for range 200 {
			c, err := api.Get(context.Background(), mwc.Name, metav1.GetOptions{})
			if err == nil && bytes.Equal(c.Webhooks[0].ClientConfig.CABundle, s.ca.RootPEM()) && bytes.Equal(c.Webhooks[1].ClientConfig.CABundle, s.ca.RootPEM()) {
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		t.Fatalf("%s: caBundle not the mesh root after 5s", what)
	}
	wait("at start")
	c, _ := api.Get(context.Background(), mwc.Name, metav1.GetOptions{})
	c.Webhooks[1].ClientConfig.CABundle = []byte("stale")
	if _, err := api.Update(context.Background(), c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("after a change")
}

// TestRootConfigMapName: the volume the injector adds is the ConfigMap
// kuberoot publishes.
func TestRootConfigMapName(t *testing.T) {
	if inject.RootCertConfigMap != kuberoot.ConfigMapName || kuberoot.Key != "root-cert.pem" {
		t.Errorf("inject mounts ConfigMap %s key root-cert.pem; kuberoot publishes %s key %s", inject.RootCertConfigMap, kuberoot.ConfigMapName, kuberoot.Key)
	}
}
