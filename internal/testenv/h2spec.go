package testenv

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// h2spec, the HTTP/2 conformance suite, run against a server of a test.

// H2SpecResult is one h2spec case: its id ("http2/5.1.1/1": section and
// number, as h2spec prints them), title and whether it failed (skipped
// cases are not reported).
type H2SpecResult struct {
	ID, Title string
	Failed    bool
	Message   string
}

// H2Spec runs h2spec (hack/tools.sh's; the test is skipped when it is
// missing, failed with WEFT_REQUIRE_TOOLS=1) against 127.0.0.1:port and returns its cases
// from its JUnit report. Bounded: h2spec's own per-case timeout (2 s),
// and a context deadline on the whole run.
func H2Spec(t *testing.T, port uint16, tls bool) []H2SpecResult {
	t.Helper()
	bin := Tool(t, "h2spec")
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	args := []string{"--host", "127.0.0.1", "--port", fmt.Sprint(port), "--timeout", "2", "--junit-report", report}
	if tls {
		args = append(args, "--tls", "--insecure")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	// h2spec exits 1 when a case fails: the report says which.
	if ctx.Err() != nil {
		t.Fatalf("h2spec did not finish: %v\n%s", ctx.Err(), out)
	}
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("h2spec wrote no report (%v): %v\n%s", err, rerr, out)
	}
	res, perr := parseH2SpecReport(b)
	if perr != nil {
		t.Fatalf("h2spec report: %v", perr)
	}
	if len(res) == 0 {
		t.Fatalf("h2spec ran no case (%v)\n%s", err, out)
	}
	return res
}

// parseH2SpecReport reads h2spec's JUnit report.
func parseH2SpecReport(b []byte) ([]H2SpecResult, error) {
	var r struct {
		Suites []struct {
			Name  string `xml:"name,attr"`
			Cases []struct {
				Package   string `xml:"package,attr"`
				ClassName string `xml:"classname,attr"`
				Failure   *struct {
					Message string `xml:",chardata"`
				} `xml:"failure"`
				Error *struct {
					Message string `xml:",chardata"`
				} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	var out []H2SpecResult
	for _, s := range r.Suites {
		for i, c := range s.Cases {
			if c.Skipped != nil {
				continue
			}
			res := H2SpecResult{ID: fmt.Sprintf("%s/%d", c.Package, i+1), Title: c.ClassName}
			if c.Failure != nil {
				res.Failed, res.Message = true, strings.TrimSpace(c.Failure.Message)
			}
			if c.Error != nil {
				res.Failed, res.Message = true, strings.TrimSpace(c.Error.Message)
			}
			out = append(out, res)
		}
	}
	return out, nil
}

// CheckH2Spec logs the score and fails on failures that are not in
// knownFailures (by ID, with why); it logs known failures that pass.
func CheckH2Spec(t *testing.T, results []H2SpecResult, knownFailures map[string]string) {
	t.Helper()
	passed := 0
	var unexpected, fixed []string
	for _, r := range results {
		_, known := knownFailures[r.ID]
		switch {
		case !r.Failed:
			passed++
			if known {
				fixed = append(fixed, r.ID)
			}
		case !known:
			unexpected = append(unexpected, fmt.Sprintf("%s %s: %s", r.ID, r.Title, r.Message))
		}
	}
	t.Logf("h2spec: %d/%d cases passed", passed, len(results))
	slices.Sort(fixed)
	for _, id := range fixed {
		t.Logf("h2spec: known failure %s now passes; take it off the list of known failures", id)
	}
	for _, u := range unexpected {
		t.Errorf("h2spec: %s", u)
	}
}
