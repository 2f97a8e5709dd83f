package config

import (
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// TestSidecar: Istio's documented Sidecars load cleanly; malformed egress
// hosts and listeners are rejected with the field named; what Weft ignores
// is a warning, never silence.
func TestSidecar(t *testing.T) {
	good := `
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: prod-us1}
spec:
  workloadSelector:
    labels: {app: ratings}
  egress:
  - port: {number: 9080, protocol: HTTP, name: egresshttp}
    hosts: ["prod-us1/*"]
  - hosts: ["istio-system/*", "*/*.example.com", "legacy/db.legacy.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`
	snap := NewStore(testOptions()).Load(map[string][]byte{"sc.yaml": []byte(good)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s", d.Error())
	}
	if len(snap.Sidecars) != 2 {
		t.Fatalf("Sidecars = %v", snap.Sidecars)
	}

	for _, c := range []struct {
		name, spec, want string
		warning          bool
	}{
		{"empty", `{}`, "spec: empty Sidecar", false},
		{"no slash", `{egress: [{hosts: ["reviews.default.svc.cluster.local"]}]}`, "spec.egress[0].hosts[0]: host \"reviews.default.svc.cluster.local\" must be of the form namespace/dnsName", false},
		{"short name", `{egress: [{hosts: ["default/reviews"]}]}`, "short names (non FQDN) are not allowed", false},
		{"partial wildcard", `{egress: [{hosts: ["default/rev*.example.com"]}]}`, "partial wildcard", false},
		{"no hosts", `{egress: [{port: {number: 80}}]}`, "spec.egress[0].hosts: an egress listener must contain at least one host", false},
		{"catch-all not last", `{egress: [{hosts: ["./*"]}, {port: {number: 80}, hosts: ["./*"]}]}`, "spec.egress[0].port: the egress listener without port must be the last listener", false},
		{"two catch-alls", `{egress: [{hosts: ["./*"]}, {hosts: ["*/*"]}]}`, "spec.egress[1].port: egress can have only one listener without port", false},
		{"same port twice", `{egress: [{port: {number: 80}, hosts: ["./*"]}, {port: {number: 80}, hosts: ["*/*"]}]}`, "spec.egress[1].port.number: port 80 is used by another egress listener", false},
		{"ingress ignored", `{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080"}]}`, "spec.ingress[0]: ingress listeners are not supported by Weft", true},
		{"bind ignored", `{egress: [{port: {number: 80}, bind: 127.0.0.1, hosts: ["./*"]}]}`, "spec.egress[0].bind: bind is ignored", true},
		{"duplicate host", `{egress: [{hosts: ["./*", "./reviews.default.svc.cluster.local"]}]}`, "duplicated egress host", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: ns}\nspec: " + c.spec + "\n"
			snap := NewStore(testOptions()).Load(map[string][]byte{"sc.yaml": []byte(doc)})
			var all []string
			found := false
			for _, d := range snap.Diagnostics {
				all = append(all, d.Error())
				if (d.Severity == SeverityError) != c.warning && strings.Contains(d.Error(), c.want) {
					found = true
				}
			}
			kept := len(snap.Sidecars) == 1
			if !found || kept != c.warning {
				t.Errorf("want %s %q (Sidecar kept: %v); got %d Sidecars, diagnostics:\n%s", map[bool]string{true: "a warning", false: "an error"}[c.warning], c.want, c.warning, len(snap.Sidecars), strings.Join(all, "\n"))
			}
		})
	}
}

// TestSelectSidecar: a workload's own Sidecar (selector) wins over its
// namespace's, which wins over the root namespace's; the oldest wins among
// equals; a root-namespace Sidecar with a selector is not mesh-wide.
func TestSelectSidecar(t *testing.T) {
	mk := func(ns, name string, seq uint64, sel map[string]string) *Sidecar {
		spec := &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*"}}}}
		if sel != nil {
			spec.WorkloadSelector = &networking.WorkloadSelector{Labels: sel}
		}
		return &Sidecar{Meta: Meta{Kind: KindSidecar, Namespace: ns, Name: name, Seq: seq}, Spec: spec}
	}
	root := mk("istio-system", "default", 1, nil)
	rootSel := mk("istio-system", "selected", 2, map[string]string{"app": "ratings"})
	nsOld := mk("shop", "old", 3, nil)
	nsNew := mk("shop", "new", 4, nil)
	wlNew := mk("shop", "ratings-new", 6, map[string]string{"app": "ratings"})
	wlOld := mk("shop", "ratings-old", 5, map[string]string{"app": "ratings"})
	all := []*Sidecar{root, rootSel, nsNew, nsOld, wlNew, wlOld}
	for _, c := range []struct {
		ns     string
		labels map[string]string
		scs    []*Sidecar
		want   *Sidecar
	}{
		{"shop", map[string]string{"app": "ratings"}, all, wlOld},
		{"shop", map[string]string{"app": "reviews"}, all, nsOld},
		{"other", map[string]string{"app": "ratings"}, all, root},
		{"other", nil, []*Sidecar{rootSel}, nil},
		{"shop", nil, nil, nil},
	} {
		if got := SelectSidecar("", c.ns, c.labels, c.scs); got != c.want {
			t.Errorf("SelectSidecar(%s, %v) = %v, want %v", c.ns, c.labels, got, c.want)
		}
	}
}
