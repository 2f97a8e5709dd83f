package registries

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weft.dev/weft/internal/testenv"
)

// TestKubernetesTrafficDistribution: a Service with spec.trafficDistribution
// PreferClose, on a real API server, two backend pods in zones z1 and z2
// of region r1 (Istio's istio-locality label) and a client sidecar in
// r1/z1, with no DestinationRule and no outlier detection:
//
//   - every call is answered in the client's zone;
//   - when the z1 pod is no longer ready (its EndpointSlice says so), the
//     calls move to z2; when it is ready again, they come back.
func TestKubernetesTrafficDistribution(t *testing.T) {
	bin := binaries(t)
	k := newKube(t)
	n := testenv.NewNetwork(t)
	k.namespace("shop")
	k.namespace("weft-system")
	z1, z2, fe := n.Netns(t, "z1"), n.Netns(t, "z2"), n.Netns(t, "fe")

	preferClose := corev1.ServiceTrafficDistributionPreferClose
	if _, err := k.c.CoreV1().Services("shop").Create(k.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "shop"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "backend"}, TrafficDistribution: &preferClose,
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k.pod("shop", "backend-z1", "backend", z1.IP, map[string]string{"app": "backend", "version": "z1", "istio-locality": "r1.z1"})
	k.pod("shop", "backend-z2", "backend", z2.IP, map[string]string{"app": "backend", "version": "z2", "istio-locality": "r1.z2"})
	slice := func(z1Ready bool) {
		k.endpointSlice("shop", "backend", 8080, []sliceEndpoint{
			{pod: "backend-z1", ip: z1.IP, ready: z1Ready, serving: z1Ready},
			{pod: "backend-z2", ip: z2.IP, ready: true, serving: true},
		})
	}
	slice(true)
	k.pod("shop", "frontend-a", "frontend", fe.IP, map[string]string{"app": "frontend", "istio-locality": "r1.z1"})

	cp := serve(t, bin, n, "--kubeconfig", k.env.Kubeconfig)
	token := k.serviceAccountToken("shop", "backend")
	for _, w := range []struct {
		ns   *testenv.Netns
		zone string
	}{{z1, "z1"}, {z2, "z2"}} {
		startWorkload(t, bin, cp, w.ns, workloadSpec{Name: "backend-" + w.zone, Namespace: "shop", ServiceAccount: "backend",
			Labels: "app=backend,version=" + w.zone, Version: w.zone, Port: 8080, TokenFile: token,
			Extra: []string{"--locality", "r1/" + w.zone}})
	}
	client := startWorkload(t, bin, cp, fe, workloadSpec{Name: "frontend-a", Namespace: "shop", ServiceAccount: "frontend",
		Labels: "app=frontend", TokenFile: k.serviceAccountToken("shop", "frontend"), Extra: []string{"--locality", "r1/z1"}})

	hc := &http.Client{Timeout: 5 * time.Second}
	// zones counts who answers 20 calls.
	zones := func() (map[string]int, error) {
		got := map[string]int{}
		for range 20 {
			code, body, err := httpGet(hc, "http://"+client.Out+"/", map[string]string{"Host": "backend.shop.svc.cluster.local:8080"})
			if err != nil || code != 200 {
				return got, fmt.Errorf("%d %v %s", code, err, body)
			}
			r, err := reply(body)
			if err != nil {
				return got, err
			}
			got[r.Version]++
		}
		return got, nil
	}
	all := func(what, zone string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			got, err := zones()
			if err != nil {
				return err
			}
			if got[zone] != 20 {
				return fmt.Errorf("answered by %v, want all by %s", got, zone)
			}
			return nil
		})
		// And it stays so.
		if got, err := zones(); err != nil || got[zone] != 20 {
			t.Errorf("%s, again: %v %v", what, got, err)
		}
	}
	all("the client's zone answers", "z1")
	slice(false)
	all("z1 not ready: z2 answers", "z2")
	slice(true)
	all("z1 ready again: the client's zone answers", "z1")
}
