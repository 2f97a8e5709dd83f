package main

import (
	"bytes"
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
