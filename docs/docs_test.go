// Package docs_test checks that the YAML in Weft's documentation is what it
// claims to be: every ```yaml block loads without errors, except the ones
// marked as examples of mistakes.
package docs_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
)

// invalidMarker, on the last non-blank line before a ```yaml fence, marks a
// block that shows a mistake: it must produce at least one error.
const invalidMarker = "<!-- invalid -->"

// meshConfigMarker, in the same place, marks a block that is an Istio mesh
// config (weft serve --mesh-config), not resources: it must parse with
// config.ParseMeshConfig.
const meshConfigMarker = "<!-- mesh-config -->"

// minBlocks guards against the test passing because it found nothing (a
// renamed file, a changed fence style).
const minBlocks = 12

// minPerFile is how many blocks each of these documents must contribute.
var minPerFile = map[string]int{
	"configuration.md":     10,
	"external-services.md": 4,
	"rate-limiting.md":     5,
}

var (
	openFence  = regexp.MustCompile("^([ \t]*)```yaml[ \t]*$")
	closeFence = regexp.MustCompile("^[ \t]*```[ \t]*$")
)

// block is one ```yaml block of a Markdown file.
type block struct {
	file    string // as reported: docs/configuration.md, README.md
	line    int    // 1-based line of the opening fence
	invalid bool   // preceded by invalidMarker
	mesh    bool   // preceded by meshConfigMarker
	body    []byte
}

func (b block) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// extractBlocks returns the ```yaml blocks of a Markdown document. A fence
// indented (e.g. inside a list item) has that indentation removed from its
// lines. An unterminated block is an error.
func extractBlocks(file string, data []byte) ([]block, error) {
	var (
		out      []block
		cur      *block
		indent   string
		lastText string // last non-blank line outside blocks
		n        int
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if cur != nil {
			if closeFence.MatchString(line) {
				out = append(out, *cur)
				cur = nil
				lastText = "```"
				continue
			}
			cur.body = append(cur.body, strings.TrimPrefix(line, indent)...)
			cur.body = append(cur.body, '\n')
			continue
		}
		if m := openFence.FindStringSubmatch(line); m != nil {
			indent = m[1]
			cur = &block{file: file, line: n, invalid: lastText == invalidMarker, mesh: lastText == meshConfigMarker}
			continue
		}
		if t := strings.TrimSpace(line); t != "" {
			lastText = t
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("%s: ```yaml block opened on line %d is never closed", cur.file, cur.line)
	}
	return out, nil
}

// docFiles lists the documents to check, as (path to read, name to report):
// docs/*.md and, if present, the repository's README.md.
func docFiles(t *testing.T) [][2]string {
	t.Helper()
	mds, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, md := range mds {
		out = append(out, [2]string{md, "docs/" + md})
	}
	readme := filepath.Join("..", "README.md")
	if _, err := os.Stat(readme); err == nil {
		out = append(out, [2]string{readme, "README.md"})
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("README.md: %v", err)
	}
	return out
}

func TestYAMLBlocksLoad(t *testing.T) {
	total := 0
	perFile := map[string]int{}
	for _, f := range docFiles(t) {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := extractBlocks(f[1], data)
		if err != nil {
			t.Error(err)
			continue
		}
		perFile[filepath.Base(f[0])] += len(blocks)
		for _, b := range blocks {
			total++
			checkBlock(t, b)
		}
	}
	if total < minBlocks {
		t.Errorf("checked %d ```yaml blocks in the docs, want at least %d: did the docs or their fences change?", total, minBlocks)
	}
	for file, min := range minPerFile {
		if perFile[file] < min {
			t.Errorf("docs/%s has %d ```yaml blocks, want at least %d", file, perFile[file], min)
		}
	}
	t.Logf("checked %d ```yaml blocks: %v", total, perFile)
}

// checkBlock loads one block as one file into a fresh store.
func checkBlock(t *testing.T, b block) {
	t.Helper()
	if len(bytes.TrimSpace(b.body)) == 0 {
		t.Errorf("%s: empty ```yaml block", b)
		return
	}
	if b.mesh {
		if _, _, err := config.ParseMeshConfig(b.String(), b.body); err != nil {
			t.Errorf("%s: mesh config does not parse: %v", b, err)
		}
		return
	}
	// Name the file after the block so every diagnostic points at it.
	snap := config.NewStore(config.Options{}).Load(map[string][]byte{b.String(): b.body})
	var errs []string
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			errs = append(errs, d.Error())
		}
	}
	resources := len(snap.VirtualServices) + len(snap.DestinationRules) + len(snap.ServiceEntries) + len(snap.WorkloadEntries) +
		len(snap.PeerAuthentications) + len(snap.AuthorizationPolicies) + len(snap.RequestAuthentications) +
		len(snap.WorkloadGroups) + len(snap.Sidecars) + len(snap.Gateways) + len(snap.Telemetries) + len(snap.RateLimits) + len(snap.OIDCLogins) +
		len(snap.GatewayClasses) + len(snap.KubeGateways) + len(snap.HTTPRoutes) + len(snap.GRPCRoutes) + len(snap.ReferenceGrants)
	// A Gateway API example with its Gateway must attach every route it
	// shows, and follow every reference: else it shows a route that does
	// nothing.
	if !b.invalid && len(snap.KubeGateways) > 0 {
		for _, d := range snap.Diagnostics {
			if d.Code == config.CodeRouteNotAttached || d.Code == config.CodeRefNotPermitted {
				t.Errorf("%s: Gateway API example: %s", b, d.Error())
			}
		}
	}
	switch {
	case b.invalid && len(errs) == 0:
		t.Errorf("%s: block is marked %s but loads without errors (%d resources)", b, invalidMarker, resources)
	case !b.invalid && len(errs) > 0:
		t.Errorf("%s: example does not load (mark it %s if that is the point):\n  %s", b, invalidMarker, strings.Join(errs, "\n  "))
	case !b.invalid && resources == 0:
		t.Errorf("%s: example loads no resources", b)
	}
}

// TestExtractBlocks pins down the block extraction the test relies on.
func TestExtractBlocks(t *testing.T) {
	md := strings.Join([]string{
		"# Title",                // 1
		"",                       // 2
		"```yaml",                // 3
		"a: 1",                   // 4
		"```",                    // 5
		"<!-- invalid -->",       // 6
		"",                       // 7
		"```yaml",                // 8
		"b: 2",                   // 9
		"```",                    // 10
		"```go",                  // 11
		"x := 1",                 // 12
		"```",                    // 13
		"1. A list item:",        // 14
		"   ```yaml",             // 15
		"   c:",                  // 16
		"     d: 3",              // 17
		"   ```",                 // 18
		"<!-- invalid --> later", // 19
		"```yaml",                // 20
		"e: 4",                   // 21
		"```",                    // 22
	}, "\n")
	got, err := extractBlocks("x.md", []byte(md))
	if err != nil {
		t.Fatal(err)
	}
	want := []block{
		{file: "x.md", line: 3, body: []byte("a: 1\n")},
		{file: "x.md", line: 8, invalid: true, body: []byte("b: 2\n")},
		{file: "x.md", line: 15, body: []byte("c:\n  d: 3\n")},
		{file: "x.md", line: 20, body: []byte("e: 4\n")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.line != w.line || g.invalid != w.invalid || !bytes.Equal(g.body, w.body) {
			t.Errorf("block %d = {line %d, invalid %v, %q}, want {line %d, invalid %v, %q}",
				i, g.line, g.invalid, g.body, w.line, w.invalid, w.body)
		}
	}
	if _, err := extractBlocks("y.md", []byte("```yaml\na: 1\n")); err == nil ||
		err.Error() != "y.md: ```yaml block opened on line 1 is never closed" {
		t.Errorf("unterminated block: error %v", err)
	}
}
