package main

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoregistry"

	"weft.dev/weft/internal/xds/contract"
)

// proxyDeps returns the packages linked into the weft-proxy binary (go
// list -deps of this command, without its tests).
func proxyDeps(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs go list")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skipf("no go tool: %v", err)
		}
	}
	out, err := exec.Command(goBin, "list", "-deps", "weft.dev/weft/cmd/weft-proxy").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, must := range []string{"weft.dev/weft/internal/proxy/dataplane", "weft.dev/weft/internal/proxy/xdsclient", "weft.dev/weft/cmd/weft-proxy"} {
		if !slices.Contains(deps, must) {
			t.Fatalf("dependency list (%d packages) lacks %s: the check would pass vacuously", len(deps), must)
		}
	}
	return deps
}

// TestLeanImportGraph keeps the proxy binary free of Kubernetes, Istio
// config and Consul packages: a sidecar's memory is a product feature.
// The one istio.io package it may link is the CA's wire API,
// istio.io/api/security/v1alpha1 (IstioCertificateService).
func TestLeanImportGraph(t *testing.T) {
	deps := proxyDeps(t)
	forbidden := func(p string) bool {
		return strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "istio.io/client-go") ||
			strings.HasPrefix(p, "istio.io/api") && p != "istio.io/api/security/v1alpha1" || strings.Contains(p, "hashicorp/consul") ||
			slices.Contains([]string{"config", "registry", "mesh", "xds/generate", "xds/server", "controlplane", "ca"},
				strings.TrimPrefix(p, "weft.dev/weft/internal/"))
	}
	for _, p := range deps {
		if forbidden(p) || strings.HasPrefix(p, "weft.dev/weft/internal/registry/") || strings.HasPrefix(p, "weft.dev/weft/internal/config/") ||
			p == "weft.dev/weft/internal/proxy/proxytest" { // test fixtures only
			t.Errorf("weft-proxy depends on %s", p)
		}
	}
}

// TestWireTypesLinked checks that weft-proxy can resolve every type the
// control plane puts inside a google.protobuf.Any: the types the golden
// files of internal/xds/generate show on the wire, and those listed in
// internal/xds/contract. A binary resolves an Any only through the
// generated packages it links, so an unlinked type broke /config_dump of
// the real binary while in-process tests, whose imports linked it, passed.
//
// Two checks, so the test stays honest should this test binary ever import
// more than the command does: the type resolves here, and the Go package
// that defines it is among the command's own dependencies (go list -deps,
// which leaves tests out).
func TestWireTypesLinked(t *testing.T) {
	deps := proxyDeps(t)
	goldens, err := filepath.Glob("../../internal/xds/generate/testdata/*/*.json")
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files of internal/xds/generate found (%v)", err)
	}
	urls := map[string]string{} // type URL -> where it was seen
	for _, url := range contract.TypedConfigURLs() {
		urls[url] = "contract.TypedConfigURLs"
	}
	for _, path := range goldens {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		jsonTypeURLs(doc, func(url string) {
			if _, ok := urls[url]; !ok {
				urls[url] = path
			}
		})
	}
	if len(urls) < 5 {
		t.Fatalf("only %d type URLs found in %d golden files: the check would pass vacuously", len(urls), len(goldens))
	}
	for _, url := range slices.Sorted(maps.Keys(urls)) {
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
		if err != nil {
			t.Errorf("%s (from %s) does not resolve in weft-proxy: %v; list it in internal/xds/contract/typedconfig.go", url, urls[url], err)
			continue
		}
		pkg := reflect.TypeOf(mt.Zero().Interface()).Elem().PkgPath()
		if !slices.Contains(deps, pkg) {
			t.Errorf("%s (from %s): its package %s is not linked into weft-proxy; list it in internal/xds/contract/typedconfig.go", url, urls[url], pkg)
		}
	}
}

// jsonTypeURLs calls f with every "@type" value in a decoded JSON document.
func jsonTypeURLs(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "@type" {
				f(s)
				continue
			}
			jsonTypeURLs(x, f)
		}
	case []any:
		for _, x := range v {
			jsonTypeURLs(x, f)
		}
	}
}
