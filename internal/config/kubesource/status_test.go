package kubesource

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
)

const vsPath = "k8s:VirtualService/shop/reviews"

func diag(sev config.Severity, code config.Code, path, msg string) config.Diagnostic {
	return config.Diagnostic{Severity: sev, Code: code, File: vsPath, Doc: 1, Line: 12, Column: 9,
		Resource: "VirtualService shop/reviews", Path: path, Message: msg}
}

func TestJudge(t *testing.T) {
	weight := diag(config.SeverityError, config.CodeInvalidValue, "spec.http[0].route[1].weight", "weight -10 must not be negative")
	held := diag(config.SeverityError, config.CodeTrafficHeld, "spec.http[0]", "the change would send traffic to no endpoints; held")
	conflict := diag(config.SeverityError, config.CodeVirtualServiceConflict, "spec.hosts[0]", "host reviews is also routed by VirtualService shop/old")
	warn := diag(config.SeverityWarning, config.CodeUnknownHost, "spec.hosts[0]", "no registry knows reviews.shop.svc.cluster.local")
	for _, tc := range []struct {
		name     string
		diags    []config.Diagnostic
		inForce  bool
		reason   string
		accepted bool
		message  string
	}{
		{"clean", nil, true, ReasonAccepted, true, "in force"},
		{"warning", []config.Diagnostic{warn}, true, ReasonAccepted, true,
			"in force, with 1 note: WF0302 spec.hosts[0]: no registry knows reviews.shop.svc.cluster.local"},
		{"rejected, last good in force", []config.Diagnostic{weight}, true, ReasonRejected, false,
			"not in force as written: WF0120 spec.http[0].route[1].weight: weight -10 must not be negative; the last good version stays in force"},
		{"rejected, never good", []config.Diagnostic{weight}, false, ReasonRejected, false,
			"not in force as written: WF0120 spec.http[0].route[1].weight: weight -10 must not be negative; no version of it is in force"},
		{"held outranks rejected", []config.Diagnostic{weight, held}, true, ReasonHeld, false, ""},
		{"conflict outranks rejected", []config.Diagnostic{weight, conflict}, true, ReasonConflict, false, ""},
		{"held outranks conflict", []config.Diagnostic{held, conflict}, true, ReasonHeld, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.diags, tc.inForce)
			if v.reason != tc.reason || v.accepted() != tc.accepted {
				t.Errorf("reason %s accepted %v, want %s %v", v.reason, v.accepted(), tc.reason, tc.accepted)
			}
			if tc.message != "" && v.message != tc.message {
				t.Errorf("message\n got %q\nwant %q", v.message, tc.message)
			}
			if strings.Contains(v.message, ":12") || strings.Contains(v.message, "k8s:") {
				t.Errorf("message has the virtual file's position: %q", v.message)
			}
		})
	}
}

func TestDesiredStatusIstioShape(t *testing.T) {
	weight := diag(config.SeverityError, config.CodeInvalidValue, "spec.http[0].route[1].weight", "weight -10 must not be negative")
	warn := diag(config.SeverityWarning, config.CodeUnknownHost, "spec.hosts[0]", "no registry knows it")
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	// istiod's distribution condition of another controller is kept.
	existing := map[string]any{"conditions": []any{map[string]any{"type": "Other", "status": "True"}}}
	st := desiredStatus(existing, judge([]config.Diagnostic{weight, warn}, true), 4, now, "https://weft.example/docs/operations")
	got, _ := json.Marshal(st)
	want := `{"conditions":[{"status":"True","type":"Other"},{"lastTransitionTime":"2026-12-01T10:00:00Z","message":"not in force as written: WF0120 spec.http[0].route[1].weight: weight -10 must not be negative; the last good version stays in force (and 1 note: WF0302 spec.hosts[0]: no registry knows it)","observedGeneration":4,"reason":"Rejected","status":"False","type":"Reconciled"}],"observedGeneration":4,"validationMessages":[{"documentationUrl":"https://weft.example/docs/operations#wf0120","level":"ERROR","type":{"code":"WF0120"}},{"documentationUrl":"https://weft.example/docs/operations#wf0302","level":"WARNING","type":{"code":"WF0302"}}]}`
	if string(got) != want {
		t.Errorf("status\n got %s\nwant %s", got, want)
	}
	if existing["observedGeneration"] != nil {
		t.Error("desiredStatus modified the existing status")
	}
}

// The same verdict again is the same status (no write), even after a JSON
// round trip through the API server; lastTransitionTime moves only when
// the condition's status does.
func TestDesiredStatusStable(t *testing.T) {
	weight := diag(config.SeverityError, config.CodeInvalidValue, "spec.http[0].route[1].weight", "weight -10 must not be negative")
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	first := roundTrip(t, desiredStatus(nil, judge([]config.Diagnostic{weight}, true), 4, t0, ""))
	again := desiredStatus(first, judge([]config.Diagnostic{weight}, true), 4, t0.Add(time.Hour), "")
	if !sameStatus(first, again) {
		t.Errorf("same verdict, different status:\n%v\n%v", first, again)
	}
	// Another rejection of the same generation: message changes, the
	// transition time does not (still False).
	other := diag(config.SeverityError, config.CodeInvalidValue, "spec.hosts", "hosts is required")
	changed := desiredStatus(first, judge([]config.Diagnostic{other}, true), 4, t0.Add(time.Hour), "")
	if sameStatus(first, changed) {
		t.Error("a different rejection left the status as it was")
	}
	if ltt := condition(changed)["lastTransitionTime"]; ltt != "2026-12-01T10:00:00Z" {
		t.Errorf("lastTransitionTime = %v, want the first transition's", ltt)
	}
	// Fixed: True, a new transition time, no validation messages.
	fixed := desiredStatus(first, judge(nil, true), 5, t0.Add(2*time.Hour), "")
	c := condition(fixed)
	if c["status"] != "True" || c["reason"] != ReasonAccepted || c["lastTransitionTime"] != "2026-12-01T12:00:00Z" {
		t.Errorf("condition = %v", c)
	}
	if _, ok := fixed["validationMessages"]; ok {
		t.Errorf("validationMessages left after the fix: %v", fixed)
	}
}

func condition(st map[string]any) map[string]any {
	for _, c := range st["conditions"].([]any) {
		if m := c.(map[string]any); m["type"] == ConditionType {
			return m
		}
	}
	return nil
}

func roundTrip(t *testing.T, st map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRejectionsOncePerGeneration(t *testing.T) {
	weight := diag(config.SeverityError, config.CodeInvalidValue, "spec.http[0].route[1].weight", "weight -10 must not be negative")
	warn := diag(config.SeverityWarning, config.CodeUnknownHost, "spec.hosts[0]", "no registry knows it")
	v := judge([]config.Diagnostic{weight, warn}, true)
	a, b := rejections(vsPath, 4, v), rejections(vsPath, 4, v)
	if len(a) != 1 || sortedKeys(a)[0] != sortedKeys(b)[0] {
		t.Errorf("rejections = %v, %v: want one, the same both times", a, b)
	}
	if c := rejections(vsPath, 5, v); sortedKeys(c)[0] == sortedKeys(a)[0] {
		t.Error("a new generation with the same problem is not announced again")
	}
}

func TestTruncate(t *testing.T) {
	s := strings.Repeat("é", 10) // 20 bytes
	got := truncate(s, 9)
	if len(got) > 9 || !strings.HasSuffix(got, " …") || !strings.HasPrefix(got, "é") {
		t.Errorf("truncate = %q", got)
	}
	if truncate("short", 9) != "short" {
		t.Error("truncate cut a short string")
	}
}
