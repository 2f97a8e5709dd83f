package rbac

import (
	"encoding/json"
	"testing"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// parseConfig decodes an RBAC filter config written in YAML (the form
// Envoy's docs and Istio's golden files use) into its proto.
func parseConfig(t testing.TB, src string) *rbachttpv3.RBAC {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml: %v\n%s", err, src)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	cfg := &rbachttpv3.RBAC{}
	if err := protojson.Unmarshal(js, cfg); err != nil {
		t.Fatalf("protojson: %v\n%s", err, js)
	}
	return cfg
}

// compileConfig parses and compiles src, failing the test on any error.
func compileConfig(t testing.TB, src string) *Filter {
	t.Helper()
	f, err := Compile(parseConfig(t, src))
	if err != nil {
		t.Fatalf("Compile: %v\n%s", err, src)
	}
	return f
}
