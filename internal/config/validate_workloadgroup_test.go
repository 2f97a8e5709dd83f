package config

import (
	"strings"
	"testing"
)

// TestWorkloadGroup: Istio's VM onboarding example loads cleanly; a group
// without a template, with bad labels or a negative probe number is
// rejected with the field named.
func TestWorkloadGroup(t *testing.T) {
	good := `
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata:
    labels: {app: reviews, version: v3}
  template:
    serviceAccount: reviews-vm
    ports: {http: 9080}
    network: vm-network
  probe:
    periodSeconds: 5
    initialDelaySeconds: 1
    httpGet: {port: 9080, path: /ready}
`
	snap := NewStore(testOptions()).Load(map[string][]byte{"wg.yaml": []byte(good)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s", d.Error())
	}
	if len(snap.WorkloadGroups) != 1 || snap.WorkloadGroups[0].Spec.GetTemplate().GetServiceAccount() != "reviews-vm" {
		t.Fatalf("WorkloadGroups = %v", snap.WorkloadGroups)
	}

	for _, c := range []struct{ name, spec, want string }{
		{"no template", `{metadata: {labels: {app: a}}}`, "spec.template: template is required"},
		{"bad label", `{metadata: {labels: {"bad key!": a}}, template: {}}`, "spec.metadata.labels"},
		{"negative probe", `{template: {}, probe: {periodSeconds: -1, tcpSocket: {port: 80}}}`, "spec.probe.periodSeconds: periodSeconds must be non-negative"},
		{"bad scheme", `{template: {}, probe: {httpGet: {port: 80, scheme: FTP}}}`, "spec.probe.httpGet.scheme"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: g, namespace: ns}\nspec: " + c.spec + "\n"
			snap := NewStore(testOptions()).Load(map[string][]byte{"wg.yaml": []byte(doc)})
			var all []string
			found := false
			for _, d := range snap.Diagnostics {
				all = append(all, d.Error())
				if d.Severity == SeverityError && strings.Contains(d.Error(), c.want) {
					found = true
				}
			}
			if !found || len(snap.WorkloadGroups) != 0 {
				t.Errorf("want an error with %q and the group rejected; got %d groups, diagnostics:\n%s", c.want, len(snap.WorkloadGroups), strings.Join(all, "\n"))
			}
		})
	}
}
