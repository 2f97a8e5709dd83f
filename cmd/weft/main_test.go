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
