package analyze

import (
	"fmt"
	"strings"
	"testing"
)

// TestRateLimitServices: a RateLimit's global.service must be a known
// host with that port, speaking gRPC; the rate limit service declared
// with protocol GRPC passes.
func TestRateLimitServices(t *testing.T) {
	rl := func(name, svc string) string {
		return fmt.Sprintf(`apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: %s}
spec:
  global:
    service: %s
    domain: d
    descriptors: [{actions: [{clientIP: true}]}]
`, name, svc)
	}
	got := run(t, map[string]string{"services.yaml": services + `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratelimit}
spec:
  hosts: [ratelimit.infra.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8081, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.9}]
`, "ratelimit.yaml": strings.Join([]string{
		rl("good", "ratelimit.infra.svc.cluster.local:8081"),
		rl("unknown", "nowhere.infra.svc.cluster.local:8081"),
		rl("port", "ratelimit.infra.svc.cluster.local:9000"),
		rl("http", "backend.default.svc.cluster.local:8080"),
	}, "---\n")}, Options{})
	want := []string{
		"error WF0507 ratelimit.yaml:15 spec.global.service: no registry knows the host nowhere.infra.svc.cluster.local: proxies have no cluster to call the rate limit service on",
		"error WF0507 ratelimit.yaml:24 spec.global.service: ratelimit.infra.svc.cluster.local has no port 9000: proxies have no cluster to call the rate limit service on",
		"warning WF0507 ratelimit.yaml:33 spec.global.service: port 8080 of backend.default.svc.cluster.local is HTTP, not GRPC or HTTP2: the proxies' gRPC calls to the rate limit service fail",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
