package e2e

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"weft.dev/weft/internal/localmesh"
)

// bookinfoDir holds Istio's Bookinfo traffic-management samples, copied
// unchanged from istio/istio (samples/bookinfo/networking): the files
// Istio's own task pages tell users to apply, one after the other.
const bookinfoDir = "testdata/bookinfo"

// applyBookinfo does what `kubectl apply -f <file>` does to a namespace:
// each object of the file replaces the object of the same kind and name
// (and only that one). Every object lives in its own file of the config
// directory, named after its kind and name, holding the sample's text as
// it is.
func applyBookinfo(t *testing.T, m *Mesh, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bookinfoDir, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---") {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if obj.Kind == "" {
			continue // only a comment, or the empty document after a trailing ---
		}
		m.WriteConfig(strings.ToLower(obj.Kind)+"-"+obj.Metadata.Name+".yaml", strings.TrimPrefix(doc, "\n"))
	}
}

// tallyCodes sends n requests to host with hdr and counts the answers by
// status code and, for 200s, by version ("200 v1").
func tallyCodes(t *testing.T, c *http.Client, w *localmesh.Workload, host string, hdr map[string]string, n int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		code, r, err := Get(ctx, c, w, host, "/", hdr)
		if err != nil {
			t.Fatalf("request %d to %s: %v", i, host, err)
		}
		k := fmt.Sprint(code)
		if code == 200 {
			k += " " + r.Version
		}
		out[k]++
	}
	return out
}

// waitAnswer waits until a streak of 20 requests to host with hdr all
// answer want (as tallyCodes keys them): the last apply is in force.
func waitAnswer(t *testing.T, c *http.Client, w *localmesh.Workload, host string, hdr map[string]string, want string) {
	t.Helper()
	Eventually(t, 30*time.Second, fmt.Sprintf("%s %v answering %q", host, hdr, want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		for i := 0; i < 20; i++ {
			code, r, err := Get(ctx, c, w, host, "/", hdr)
			if err != nil {
				return err
			}
			got := fmt.Sprint(code)
			if code == 200 {
				got += " " + r.Version
			}
			if got != want {
				return fmt.Errorf("answered %q", got)
			}
		}
		return nil
	})
}

// TestBookinfoTrafficManagementSamples walks Istio's Bookinfo
// traffic-management tasks with Istio's own sample files, unchanged and in
// the order the tasks apply them: request routing by version and by the
// end-user header, weighted shifting (80/20, 50/50, then all to v3),
// fault injection (an abort for one user, a 555 for everyone, a 7 s delay
// for one user), the ingress of bookinfo-gateway.yaml, and mutual TLS turned on by DestinationRule while
// traffic flows with no request failing.
func TestBookinfoTrafficManagementSamples(t *testing.T) {
	m := NewMesh(t)
	m.ServiceOnPort("productpage", "HTTP", 9080, "v1") // as in Bookinfo: the gateway's route names port 9080
	m.Service("details", "HTTP", "v1")
	m.Service("reviews", "HTTP", "v1", "v2", "v3")
	m.Service("ratings", "HTTP", "v1")
	c := newClient()
	front := m.Client("frontend")
	jason := map[string]string{"end-user": "jason"}

	// Request routing: every service to v1.
	applyBookinfo(t, m, "destination-rule-all.yaml")
	applyBookinfo(t, m, "virtual-service-all-v1.yaml")
	for _, host := range []string{"productpage:9080", "details", "reviews", "ratings"} {
		waitAnswer(t, c, front, host, nil, "200 v1")
	}
	if got := tallyCodes(t, c, front, "reviews", nil, 200); got["200 v1"] != 200 {
		t.Fatalf("virtual-service-all-v1: want all 200 on reviews v1, got %v", got)
	}

	// The ingress: bookinfo-gateway.yaml on a gateway labelled
	// istio=ingressgateway, port 8080, any host; only the five paths of
	// its VirtualService reach productpage.
	gw := m.startGateway("istio-ingressgateway", "istio-system", map[string]string{"istio": "ingressgateway"}, "")
	applyBookinfo(t, m, "bookinfo-gateway.yaml")
	edge := gatewayClient(net.JoinHostPort(gw.Opts.IP, "8080"), nil)
	Eventually(t, 30*time.Second, "bookinfo-gateway serving /productpage", func() error {
		code, _, r, err := gwGet(edge, "http://bookinfo.example.com/productpage")
		if err != nil || code != 200 || r.Version != "v1" {
			return fmt.Errorf("%d %q %v", code, r.Version, err)
		}
		return nil
	})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/productpage", 200}, {"/static/bootstrap.css", 200}, {"/login", 200}, {"/logout", 200},
		{"/api/v1/products", 200}, {"/api/v1/products/0/reviews", 200},
		{"/productpage/x", 404}, {"/loginx", 404}, {"/", 404}, {"/api/v2/products", 404},
	} {
		code, _, _, err := gwGet(edge, "http://bookinfo.example.com"+tc.path)
		if err != nil || code != tc.want {
			t.Fatalf("GET %s through bookinfo-gateway: %d %v, want %d", tc.path, code, err, tc.want)
		}
	}

	// Routing by user identity: jason sees v2, everyone else v1. The match
	// is exact and case-sensitive, as Envoy's.
	applyBookinfo(t, m, "virtual-service-reviews-test-v2.yaml")
	waitAnswer(t, c, front, "reviews", jason, "200 v2")
	for _, tc := range []struct {
		hdr  map[string]string
		want string
	}{
		{jason, "200 v2"},
		{nil, "200 v1"},
		{map[string]string{"end-user": "Jason"}, "200 v1"},
		{map[string]string{"end-user": "jason2"}, "200 v1"},
	} {
		if got := tallyCodes(t, c, front, "reviews", tc.hdr, 100); got[tc.want] != 100 {
			t.Fatalf("virtual-service-reviews-test-v2 with %v: want all 100 %q, got %v", tc.hdr, tc.want, got)
		}
	}

	// Traffic shifting, as the task does it: 80/20 to v2, 50/50 to v3,
	// then all to v3. Each request picks its version at random with the
	// route's weights, so the count of `want` among n is binomial; five
	// standard deviations either way (±6.3 points at 80/20, ±7.9 at
	// 50/50 over 1,000) fail a correct proxy with probability below 1e-6
	// and still catch weights that are swapped or ignored. (±4 and ±5,
	// about three standard deviations, failed a correct run 554/446.)
	for _, step := range []struct {
		file  string
		want  string
		other string
		share float64 // percent of the answers that must be `want`
	}{
		{"virtual-service-reviews-80-20.yaml", "200 v1", "200 v2", 80},
		{"virtual-service-reviews-50-v3.yaml", "200 v1", "200 v3", 50},
	} {
		applyBookinfo(t, m, step.file)
		// In force once the version the previous step never sent to answers.
		Eventually(t, 30*time.Second, step.file+" in force", func() error {
			if got := tallyCodes(t, c, front, "reviews", nil, 50); got[step.other] == 0 {
				return fmt.Errorf("no %q among %v", step.other, got)
			}
			return nil
		})
		const n = 1000
		got := tallyCodes(t, c, front, "reviews", nil, n)
		share := 100 * float64(got[step.want]) / n
		p := step.share / 100
		tolerate := 100 * 5 * math.Sqrt(p*(1-p)/n)
		if got[step.want]+got[step.other] != n || math.Abs(share-step.share) > tolerate {
			t.Fatalf("%s over %d requests: got %v (%q %.1f%%), want %.0f%% ± %.1f",
				step.file, n, got, step.want, share, step.share, tolerate)
		}
	}
	applyBookinfo(t, m, "virtual-service-reviews-v3.yaml")
	waitAnswer(t, c, front, "reviews", nil, "200 v3")
	applyBookinfo(t, m, "virtual-service-reviews-jason-v2-v3.yaml")
	waitAnswer(t, c, front, "reviews", jason, "200 v2")
	if got := tallyCodes(t, c, front, "reviews", nil, 100); got["200 v3"] != 100 {
		t.Fatalf("virtual-service-reviews-jason-v2-v3 without end-user: want all 100 on v3, got %v", got)
	}

	// Fault injection: an HTTP abort for jason only, on ratings.
	applyBookinfo(t, m, "virtual-service-ratings-test-abort.yaml")
	waitAnswer(t, c, front, "ratings", jason, "500")
	if got := tallyCodes(t, c, front, "ratings", jason, 100); got["500"] != 100 {
		t.Fatalf("virtual-service-ratings-test-abort for jason: want 100 × 500, got %v", got)
	}
	if got := tallyCodes(t, c, front, "ratings", nil, 100); got["200 v1"] != 100 {
		t.Fatalf("virtual-service-ratings-test-abort for others: want 100 × 200 from v1, got %v", got)
	}
	// A 555 for every caller of details (and its DestinationRule again).
	applyBookinfo(t, m, "fault-injection-details-v1.yaml")
	waitAnswer(t, c, front, "details", nil, "555")

	// A 7 s delay for jason on ratings (the task's "timeout" lesson): the
	// answer still comes from v1, no sooner than the delay.
	applyBookinfo(t, m, "virtual-service-ratings-test-delay.yaml")
	slow := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	Eventually(t, 45*time.Second, "the 7 s delay for jason in force", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		code, r, err := Get(ctx, slow, front, "ratings", "/", jason)
		took := time.Since(start)
		switch {
		case err != nil:
			return err
		case code == 500:
			return fmt.Errorf("still the abort of virtual-service-ratings-test-abort")
		case code != 200 || r.Version != "v1":
			t.Fatalf("ratings for jason with a 7 s delay: code %d version %q", code, r.Version)
		case took < 7*time.Second:
			t.Fatalf("ratings for jason answered after %v: the 7 s fixedDelay was not applied", took)
		}
		return nil
	})
	if got := tallyCodes(t, c, front, "ratings", nil, 50); got["200 v1"] != 50 {
		t.Fatalf("virtual-service-ratings-test-delay for others: want 50 × 200 from v1, got %v", got)
	}

	// Mutual TLS by DestinationRule (destination-rule-all-mtls.yaml) while
	// traffic to reviews flows: no request fails across the change.
	tr := StartTraffic(c, front, "reviews", 4)
	tr.WaitSent(t, 200)
	applyBookinfo(t, m, "destination-rule-all-mtls.yaml")
	time.Sleep(500 * time.Millisecond) // the debounced push lands mid-traffic
	tr.WaitSent(t, 200)
	tr.Stop(t, "while destination-rule-all-mtls.yaml was applied")
	waitAnswer(t, c, front, "reviews", jason, "200 v2")
	waitAnswer(t, c, front, "productpage:9080", nil, "200 v1")
}
