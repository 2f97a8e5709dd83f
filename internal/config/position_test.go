package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestPositions: every diagnostic points at the YAML line and column of
// the field it names (the value as written, or the nearest parent that is
// written when the field is missing), in whichever document of the file.
func TestPositions(t *testing.T) {
	const file = `# a leading comment
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - timeout: "10 seconds"
    route:
    - destination: {host: reviews, subset: v1}
      weight: "ninety"
    - destination:
        host: reviews
        subset: v2
      weight: 10
      wieght: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm}
spec:
  address: 10.0.0.1
  ports:
    http: 70000
`
	snap := NewStore(testOptions()).Load(files("dr.yaml", reviewsDR, "t.yaml", file))
	var got []string
	for _, d := range snap.Diagnostics {
		got = append(got, fmt.Sprintf("%d:%d %s: %s", d.Line, d.Column, d.Path, d.Message))
	}
	checkStrings(t, "diagnostics", got, []string{
		`10:14 spec.http[0].timeout: invalid duration "10 seconds": want a number with a unit, such as 500ms, 10s or 1m30s`,
		`13:15 spec.http[0].route[0].weight: want an integer, got the string "ninety"`,
		`18:7 spec.http[0].route[1].wieght: unknown field "wieght"; did you mean "weight"?`,
		`26:11 spec.ports.http: port 70000 out of range 1-65535`,
	})
}

// TestEveryErrorOfADocument: type errors anywhere in a document are all
// reported, with validation errors of the fields that did decode; a
// document with any error is rejected as a whole.
func TestEveryErrorOfADocument(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, labels: {version: 2}}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 10, maxConnections: 1.5}
      http: {idleTimeout: 1x}
    loadBalancer: {simple: FASTEST}
    outlierDetection: {interval: 5s, baseEjectionTime: "15 minutes", consecutive5xxErrors: "five"}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: [version, v2]
`
	snap := NewStore(testOptions()).Load(files("t.yaml", doc))
	var got []string
	for _, d := range snap.Diagnostics {
		got = append(got, fmt.Sprintf("%s %s %s: %s", d.Severity, d.Code, d.Path, d.Message))
	}
	checkStrings(t, "diagnostics", got, []string{
		`error WF0112 metadata.labels.version: want a string, got the number 2; quote it: "2"`,
		`error WF0112 spec.trafficPolicy.connectionPool.tcp.connectTimeout: want a duration such as 500ms, 10s or 1m30s, got the number 10`,
		`error WF0112 spec.trafficPolicy.connectionPool.tcp.maxConnections: want an integer, got the number 1.5`,
		`error WF0112 spec.trafficPolicy.connectionPool.http.idleTimeout: invalid duration "1x": want a number with a unit, such as 500ms, 10s or 1m30s`,
		`error WF0112 spec.trafficPolicy.loadBalancer.simple: invalid value the string "FASTEST"; want one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST`,
		`error WF0112 spec.trafficPolicy.outlierDetection.baseEjectionTime: invalid duration "15 minutes": want a number with a unit, such as 500ms, 10s or 1m30s`,
		`error WF0112 spec.trafficPolicy.outlierDetection.consecutive5xxErrors: want a non-negative integer, got the string "five"`,
		`error WF0120 spec.subsets[1].name: duplicate subset name "v1" (also spec.subsets[0])`,
		`error WF0112 spec.subsets[2].labels: want a mapping, got a list`,
	})
	if len(snap.DestinationRules) != 0 {
		t.Error("a document with errors is in force")
	}
}

// TestDecoderEdgeCases covers YAML features and mistakes one at a time.
func TestDecoderEdgeCases(t *testing.T) {
	const head = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
	tests := []struct {
		name string
		doc  string
		want []string // "path: message" of each error; none means it loads
	}{
		{"anchors and merge keys", head + "metadata: {name: vm}\nx-base: &base {address: 10.0.0.1}\n", []string{
			`x-base: unknown field "x-base"; a resource has apiVersion, kind, metadata, spec (and status)`}},
		{"merge key in spec", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm}\nspec:\n  <<: {address: 10.0.0.1, weight: 3}\n  weight: 5\n", nil},
		{"field written twice", head + "metadata: {name: vm}\nspec:\n  address: 10.0.0.1\n  address: 10.0.0.2\n", []string{
			`spec.address: field "address" is written twice (also on line 5)`}},
		{"proto field names work too", head + "metadata: {name: vm}\nspec: {address: 10.0.0.1, service_account: sa}\n", nil},
		{"unknown top-level field", head + "metadata: {name: vm}\nspecs: {address: 10.0.0.1}\n", []string{
			`specs: unknown field "specs"; a resource has apiVersion, kind, metadata, spec (and status); did you mean "spec"?`}},
		{"unknown metadata field", head + "metadata: {name: vm, namepsace: prod}\nspec: {address: 10.0.0.1}\n", []string{
			`metadata.namepsace: unknown field "namepsace" in metadata; did you mean "namespace"?`}},
		{"kubectl metadata is allowed", head + "metadata: {name: vm, uid: x, resourceVersion: \"7\", generation: 2, creationTimestamp: \"2024-05-01T10:00:00Z\", annotations: {a: b}}\nspec: {address: 10.0.0.1}\nstatus: {}\n", nil},
		{"bad creationTimestamp", head + "metadata: {name: vm, creationTimestamp: yesterday}\nspec: {address: 10.0.0.1}\n", []string{
			`metadata.creationTimestamp: want an RFC 3339 time such as 2024-05-01T10:00:00Z, got the string "yesterday"`}},
		{"spec is not a mapping", head + "metadata: {name: vm}\nspec: [a]\n", []string{
			`spec: spec must be a mapping, got a list`}},
		{"a list where a scalar goes", head + "metadata: {name: vm}\nspec: {address: [10.0.0.1]}\n", []string{
			`spec.address: want a string, got a list`}},
		{"a scalar where a list goes", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec: {hosts: reviews}\n", []string{
			`spec.hosts: want a list, got the string "reviews"`}},
		{"oneof set twice", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: reviews}}]\n", []string{
			`spec.http[0].match[0].uri.prefix: exact and prefix are mutually exclusive: set only one of exact, prefix, regex`}},
		{"yes is a boolean for a bool field", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {exact: /a}, ignoreUriCase: yes}]\n    route: [{destination: {host: reviews}}]\n", nil},
		{"null leaves a field unset", head + "metadata: {name: vm}\nspec: {address: 10.0.0.1, labels: ~, weight: null}\n", nil},
		{"enum by number", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec: {hosts: [a.example.com], ports: [{number: 80, name: http}], resolution: 2}\n", nil},
		{"integer out of range", head + "metadata: {name: vm}\nspec: {address: 10.0.0.1, weight: 4294967296}\n", []string{
			`spec.weight: 4294967296 is out of range 0 to 4294967295`}},
		{"float for an integer", head + "metadata: {name: vm}\nspec: {address: 10.0.0.1, weight: 1.5}\n", []string{
			`spec.weight: want a non-negative integer, got the number 1.5`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := NewStore(testOptions()).Load(files("t.yaml", tt.doc))
			var got []string
			for _, d := range snap.Diagnostics {
				if d.Severity == SeverityError {
					got = append(got, d.Path+": "+d.Message)
				}
			}
			checkStrings(t, "errors", got, tt.want)
		})
	}
}

// TestAliasBomb: a small document whose aliases expand to billions of
// nodes is refused quickly instead of taking the control plane's memory.
func TestAliasBomb(t *testing.T) {
	list := func(alias string, n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat("*"+alias+", ", n), ", ") + "]"
	}
	var hdrs []string
	for i := range 200 {
		hdrs = append(hdrs, fmt.Sprintf("h%d: {exact: a}", i))
	}
	// 200 routes, each with 200 matches of 200 headers: 8 million nodes.
	doc := "m0: &m {headers: {" + strings.Join(hdrs, ", ") + "}}\n" +
		"r0: &r {match: " + list("m", 200) + ", route: [{destination: {host: a}}]}\n" +
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bomb}\n" +
		"spec: {hosts: [a], http: " + list("r", 200) + "}\n"
	snap := NewStore(testOptions()).Load(files("t.yaml", doc))
	if !strings.Contains(fmt.Sprint(snap.Diagnostics), "expands to more than") {
		t.Fatalf("diagnostics = %v, want the expansion limit", snap.Diagnostics)
	}
}

// TestLimits: a file over MaxFileSize is not decoded and keeps its last
// good resources; a file with thousands of bad documents reports
// MaxDiagnosticsPerFile of them and says how many more there are.
func TestLimits(t *testing.T) {
	s := NewStore(testOptions())
	good := weDoc("vm", "10.0.0.1")
	s.Load(files("w.yaml", good))
	huge := good + "# " + strings.Repeat("x", MaxFileSize) + "\n"
	snap := s.Load(files("w.yaml", huge))
	if len(snap.WorkloadEntries) != 1 {
		t.Errorf("the resources of a file over the limit were dropped")
	}
	if len(snap.Diagnostics) != 1 || snap.Diagnostics[0].Code != CodeFileTooLarge {
		t.Errorf("diagnostics = %v, want one %s", snap.Diagnostics, CodeFileTooLarge)
	}

	var b strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: bad-%d}\nspec: {address: 10.0.0.1, weight: x}\n", i)
	}
	snap = NewStore(testOptions()).Load(files("bad.yaml", b.String()))
	if n := len(snap.Diagnostics); n != MaxDiagnosticsPerFile+1 {
		t.Fatalf("%d diagnostics, want %d and a summary", n, MaxDiagnosticsPerFile)
	}
	last := snap.Diagnostics[len(snap.Diagnostics)-1]
	if last.Code != CodeTooManyProblems || !strings.Contains(last.Message, "more problems in this file are not shown") {
		t.Errorf("last diagnostic = %v, want the summary", last)
	}
}
