package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestInjectCommand runs `weft inject -f` on a testdata input of
// internal/inject and checks the output carries the sidecar, and that a
// bad file and a bad flag are refused with messages naming them.
func TestInjectCommand(t *testing.T) {
	in := "../../internal/inject/testdata/deployment-probes.yaml"
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"inject", "-f", in, "--image", "example/weft-proxy:test"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("weft inject: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"name: weft-proxy", "name: weft-capture", "image: example/weft-proxy:test", "kind: Service"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	stdin, err := os.ReadFile("../../internal/inject/testdata/pod-optout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	cmd = newRootCmd()
	cmd.SetIn(bytes.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"inject", "-f", "-"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if out.String() != string(stdin) || !strings.Contains(errOut.String(), "Pod/batch-tool not injected") {
		t.Errorf("opted-out pod: stdout %q stderr %q", out.String(), errOut.String())
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"inject"}, "-f FILE"},
		{[]string{"inject", "-f", "/nonexistent.yaml"}, "/nonexistent.yaml"},
		{[]string{"inject", "-f", in, "--image-pull-policy", "Sometimes"}, "--image-pull-policy"},
	} {
		cmd = newRootCmd()
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(c.args)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one naming %q", c.args, err, c.want)
		}
	}
}

// TestServeInjectionNeedsKubernetes: the webhook needs an API server.
func TestServeInjectionNeedsKubernetes(t *testing.T) {
	cmd := newRootCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"serve", "--config", t.TempDir(), "--injection-address", "127.0.0.1:0", "--status-address", "-", "--xds-address", "127.0.0.1:0"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--injection-address needs --kubeconfig") {
		t.Errorf("weft serve --injection-address without Kubernetes: %v", err)
	}
}
