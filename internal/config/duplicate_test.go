package config

import (
	"fmt"
	"strings"
	"testing"
)

// weDoc is a WorkloadEntry default/<name> document with an address.
func weDoc(name, address string) string {
	return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s}\nspec: {address: %s, labels: {app: backend}}\n", name, address)
}

// servicesYAML is services.yaml of the duplicate tests: backend-v1 is its doc 2.
var servicesYAML = weDoc("backend-v0", "10.0.0.10") + "---\n" + weDoc("backend-v1", "10.0.0.11")

// TestDuplicateInForceWins: when two documents define the same resource,
// the one whose version is in force keeps it and the new one is the error,
// whatever the paths; with nothing in force, the first in path order wins.
func TestDuplicateInForceWins(t *testing.T) {
	type step struct {
		files   map[string][]byte
		diags   []string
		from    string // file of WorkloadEntry default/backend-v1 in force; "" for none
		doc     int
		address string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "first load: path order decides",
			steps: []step{{
				files: files("services.yaml", servicesYAML, "dup.yaml", weDoc("backend-v1", "10.0.0.99")),
				diags: []string{
					`error: services.yaml: doc 2: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in dup.yaml:1 (doc 1); this document is ignored`,
				},
				from: "dup.yaml", doc: 1, address: "10.0.0.99",
			}},
		},
		{
			name: "a new duplicate that sorts first is the error",
			steps: []step{
				{files: files("services.yaml", servicesYAML), from: "services.yaml", doc: 2, address: "10.0.0.11"},
				{
					files: files("services.yaml", servicesYAML, "dup.yaml", weDoc("backend-v1", "10.0.0.99")),
					diags: []string{
						`error: dup.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:6 (doc 2), whose version is in force; this document is ignored`,
					},
					from: "services.yaml", doc: 2, address: "10.0.0.11",
				},
				// It stays the error on later loads, and editing the version
				// in force still applies.
				{
					files: files("services.yaml", weDoc("backend-v1", "10.0.0.12"), "dup.yaml", weDoc("backend-v1", "10.0.0.99")),
					diags: []string{
						`error: dup.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:1 (doc 1), whose version is in force; this document is ignored`,
					},
					from: "services.yaml", doc: 1, address: "10.0.0.12",
				},
				// Removing it from services.yaml hands it to dup.yaml.
				{
					files: files("services.yaml", weDoc("backend-v0", "10.0.0.10"), "dup.yaml", weDoc("backend-v1", "10.0.0.99")),
					from:  "dup.yaml", doc: 1, address: "10.0.0.99",
				},
			},
		},
		{
			name: "a new duplicate that sorts last is the error",
			steps: []step{
				{files: files("services.yaml", servicesYAML), from: "services.yaml", doc: 2, address: "10.0.0.11"},
				{
					files: files("services.yaml", servicesYAML, "zz/dup.yaml", "---\n"+weDoc("backend-v1", "10.0.0.99")),
					diags: []string{
						`error: zz/dup.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:6 (doc 2); this document is ignored`,
					},
					from: "services.yaml", doc: 2, address: "10.0.0.11",
				},
			},
		},
		{
			name: "the in-force file with an error in that document still owns it",
			steps: []step{
				{files: files("services.yaml", servicesYAML), from: "services.yaml", doc: 2, address: "10.0.0.11"},
				{
					files: files("services.yaml", weDoc("backend-v0", "10.0.0.10")+"---\n"+strings.Replace(weDoc("backend-v1", "10.0.0.12"), "labels:", "ports: {http: 0}, labels:", 1),
						"dup.yaml", weDoc("backend-v1", "10.0.0.99")),
					diags: []string{
						`error: dup.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:6 (doc 2), whose version is in force; this document is ignored`,
						`error: services.yaml: doc 2: WorkloadEntry default/backend-v1: spec.ports.http: port 0 out of range 1-65535`,
					},
					from: "services.yaml", doc: 2, address: "10.0.0.11",
				},
			},
		},
		{
			name: "the in-force file is not valid YAML",
			steps: []step{
				{files: files("services.yaml", servicesYAML), from: "services.yaml", doc: 2, address: "10.0.0.11"},
				{
					files: files("services.yaml", servicesYAML+"---\nkind: [unclosed\n", "dup.yaml", weDoc("backend-v1", "10.0.0.99")),
					diags: []string{
						`error: dup.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:6 (doc 2), whose version is in force; this document is ignored`,
						`error: services.yaml: doc 3: invalid YAML: did not find expected ',' or ']'; the file is ignored and its last good resources stay in force`,
					},
					from: "services.yaml", doc: 2, address: "10.0.0.11",
				},
			},
		},
		{
			name: "moving a resource to another file in one load is not a duplicate",
			steps: []step{
				{files: files("services.yaml", servicesYAML), from: "services.yaml", doc: 2, address: "10.0.0.11"},
				{
					files: files("services.yaml", weDoc("backend-v0", "10.0.0.10"), "a/moved.yaml", weDoc("backend-v1", "10.0.0.11")),
					from:  "a/moved.yaml", doc: 1, address: "10.0.0.11",
				},
			},
		},
		{
			name: "two new duplicates: path order among them",
			steps: []step{
				{files: files("services.yaml", weDoc("backend-v0", "10.0.0.10"))},
				{
					files: files("services.yaml", weDoc("backend-v0", "10.0.0.10"), "b.yaml", weDoc("backend-v1", "10.0.0.2"), "a.yaml", weDoc("backend-v1", "10.0.0.1")),
					diags: []string{
						`error: b.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in a.yaml:1 (doc 1); this document is ignored`,
					},
					from: "a.yaml", doc: 1, address: "10.0.0.1",
				},
			},
		},
		{
			name: "a duplicate within the in-force file: document order",
			steps: []step{
				{files: files("services.yaml", servicesYAML), from: "services.yaml", doc: 2, address: "10.0.0.11"},
				{
					files: files("services.yaml", servicesYAML+"---\n"+weDoc("backend-v1", "10.0.0.99"), "dup.yaml", weDoc("backend-v1", "10.0.0.98")),
					diags: []string{
						`error: dup.yaml: doc 1: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:6 (doc 2), whose version is in force; this document is ignored`,
						`error: services.yaml: doc 3: WorkloadEntry default/backend-v1: metadata.name: duplicate WorkloadEntry default/backend-v1: already defined in services.yaml:6 (doc 2), whose version is in force; this document is ignored`,
					},
					from: "services.yaml", doc: 2, address: "10.0.0.11",
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(testOptions())
			for i, st := range tt.steps {
				snap := s.Load(st.files)
				checkStrings(t, fmt.Sprintf("load %d: diagnostics", i+1), diagStrings(snap), st.diags)
				var got string
				for _, we := range snap.WorkloadEntries {
					if we.Name == "backend-v1" {
						got = fmt.Sprintf("%s doc %d: %s", we.File, we.Doc, we.Spec.GetAddress())
					}
				}
				var want string
				if st.from != "" {
					want = fmt.Sprintf("%s doc %d: %s", st.from, st.doc, st.address)
				}
				if got != want {
					t.Errorf("load %d: backend-v1 in force = %q, want %q", i+1, got, want)
				}
			}
		})
	}
}
