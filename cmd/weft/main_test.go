package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run executes the weft CLI in-process with args from the repository root.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Chdir("../..")
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestValidateExamples keeps the README's validate example true.
func TestValidateExamples(t *testing.T) {
	out, err := run(t, "validate", "examples/canary")
	if err != nil || !strings.Contains(out, "0 error(s), 0 warning(s)") {
		t.Fatalf("validate examples/canary: err %v\n%s", err, out)
	}
}

func TestValidateReportsBrokenExample(t *testing.T) {
	out, err := run(t, "validate", "examples/broken")
	want := `error: examples/broken/routes.yaml:26:44: doc 2: VirtualService default/backend: spec.http[1].route[0].destination.subset: subset "v9" is not defined by any DestinationRule for backend.default.svc.cluster.local`
	if err == nil || !strings.Contains(out, want+"\n") {
		t.Fatalf("validate examples/broken: err %v, want line\n%s\ngot\n%s", err, want, out)
	}
}

// TestValidateApplicationManifests: a file as Istio's samples write them
// (a ServiceAccount, Service and Deployment beside the mesh config) and
// config exported with kubectl get -o yaml validate without errors; the
// Kubernetes objects are named as skipped.
func TestValidateApplicationManifests(t *testing.T) {
	dir := t.TempDir()
	app := `apiVersion: v1
kind: ServiceAccount
metadata: {name: httpbin}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec: {ports: [{name: http, port: 8000}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin}
spec: {replicas: 1}
`
	exported := `apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: httpbin, namespace: default}
  spec: {host: httpbin, subsets: [{name: v1, labels: {version: v1}}]}
`
	for name, body := range map[string]string{"httpbin.yaml": app, "exported.yaml": exported} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run(t, "validate", dir)
	if err != nil || !strings.Contains(out, "1 DestinationRule") || !strings.Contains(out, "0 error(s), 3 warning(s)") ||
		!strings.Contains(out, "a Kubernetes Deployment (apps/v1) is not mesh configuration") {
		t.Fatalf("validate: err %v\n%s", err, out)
	}
}

func TestBadLogLevel(t *testing.T) {
	_, err := run(t, "serve", "--log-level", "loud", "--config", "examples/canary")
	if err == nil || !strings.Contains(err.Error(), `--log-level "loud"`) {
		t.Fatalf("serve --log-level loud: want a clear error, got %v", err)
	}
}

func TestBadOutboundTrafficPolicy(t *testing.T) {
	_, err := run(t, "serve", "--outbound-traffic-policy", "registry_only", "--config", "examples/canary")
	if err == nil || err.Error() != `--outbound-traffic-policy: outbound traffic policy "registry_only": want ALLOW_ANY or REGISTRY_ONLY` {
		t.Fatalf("serve --outbound-traffic-policy registry_only: want a clear error, got %v", err)
	}
}

// TestAnalyzeExamples: analyze finds nothing wrong with the canary example
// and the error in the broken one, with its code and position.
func TestAnalyzeExamples(t *testing.T) {
	t.Run("canary", func(t *testing.T) {
		out, err := run(t, "analyze", "examples/canary")
		if err != nil || !strings.Contains(out, "No problems found.") {
			t.Fatalf("analyze examples/canary: err %v\n%s", err, out)
		}
	})
	out, err := run(t, "analyze", "examples/broken")
	want := `Error [WF0301] examples/broken/routes.yaml:26:44 VirtualService default/backend spec.http[1].route[0].destination.subset: subset "v9" is not defined by any DestinationRule for backend.default.svc.cluster.local`
	if err == nil || !strings.Contains(out, want+"\n") {
		t.Fatalf("analyze examples/broken: err %v, want line\n%s\ngot\n%s", err, want, out)
	}
}

// TestExplainExample: explain against files names the rule and its place.
func TestExplainExample(t *testing.T) {
	out, err := run(t, "explain", "--config", "examples/canary", "--host", "backend", "-H", "x-canary: true")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`route:         VirtualService default/backend (examples/canary/backend.yaml:17), spec.http[0] "canary-header" at examples/canary/backend.yaml:25:5`,
		"forwarded: 100% to subset v2 of backend.default.svc.cluster.local (1 healthy endpoint(s))",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
}
