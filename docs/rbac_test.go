package docs_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// rbacSources are the RBAC files the integration tests run with; the
// RBAC section of registries.md must grant everything they grant.
var rbacSources = []string{
	"../internal/config/kubesource/testdata/rbac.yaml",
	"../internal/registry/kube/testdata/rbac.yaml",
	"../internal/ca/kuberoot/testdata/rbac.yaml",
	"../internal/inject/webhook/testdata/rbac.yaml",
	"../internal/credentials/kubesecrets/testdata/rbac.yaml",
}

// rbacDoc is the part of an RBAC object the comparison reads.
type rbacDoc struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Rules []struct {
		APIGroups []string `yaml:"apiGroups"`
		Resources []string `yaml:"resources"`
		Verbs     []string `yaml:"verbs"`
	} `yaml:"rules"`
}

// grants flattens the Roles and ClusterRoles of a multi-document YAML
// into "scope group/resource verb" strings.
func grants(t *testing.T, name string, data []byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d rbacDoc
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		scope := ""
		switch d.Kind {
		case "ClusterRole":
			scope = "cluster"
		case "Role":
			scope = "namespace " + d.Metadata.Namespace
		default:
			continue
		}
		for _, r := range d.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out[scope+" "+g+"/"+res+" "+v] = true
					}
				}
			}
		}
	}
	return out
}

// TestRegistriesRBAC checks that the RBAC documented in registries.md
// grants every right the tested RBAC files grant, and nothing more.
func TestRegistriesRBAC(t *testing.T) {
	data, err := os.ReadFile("registries.md")
	if err != nil {
		t.Fatal(err)
	}
	// The ```yml block under "## RBAC".
	m := regexp.MustCompile("(?s)\n## RBAC\n.*?\n```yml\n(.*?)\n```\n").FindSubmatch(data)
	if m == nil {
		t.Fatal("registries.md: no ```yml block in the RBAC section")
	}
	documented := grants(t, "registries.md", m[1])
	tested := map[string]bool{}
	for _, f := range rbacSources {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for g := range grants(t, f, b) {
			tested[g] = true
		}
	}
	var missing, extra []string
	for g := range tested {
		if !documented[g] {
			missing = append(missing, g)
		}
	}
	for g := range documented {
		if !tested[g] {
			extra = append(extra, g)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 {
		t.Errorf("registries.md's RBAC lacks rights the tested RBAC files grant:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("registries.md's RBAC grants rights no tested RBAC file grants:\n  %s", strings.Join(extra, "\n  "))
	}
	if len(documented) == 0 {
		t.Error("registries.md's RBAC grants nothing")
	}
}
