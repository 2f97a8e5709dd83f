package kubesource

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"weft.dev/weft/internal/config"
)

// ConditionType is the condition Weft keeps in each object's
// status.conditions, as istiod keeps its "Reconciled" condition: True when
// the object's current generation is in force, False when it is not (the
// reason says why).
const ConditionType = "Reconciled"

// Reasons of the condition, also the reasons of the Warning events.
const (
	ReasonAccepted = "Accepted" // in force (possibly with warnings)
	ReasonRejected = "Rejected" // invalid: the last good version stays in force
	ReasonHeld     = "Held"     // the traffic guard holds the change back
	ReasonConflict = "Conflict" // it, or part of it, loses a conflict with an older object
)

// maxConditionMessage bounds the condition's message; maxEventNote is the
// API server's limit on an events.k8s.io Event's note.
const (
	maxConditionMessage = 4096
	maxEventNote        = 1024
)

// verdict is the outcome of one load for one object.
type verdict struct {
	reason  string
	message string
	// diags are the object's diagnostics, in the snapshot's order.
	diags []config.Diagnostic
}

func (v verdict) accepted() bool { return v.reason == ReasonAccepted }

// conflictCodes are the codes of conflicts between resources.
var conflictCodes = map[config.Code]bool{
	config.CodeVirtualServiceConflict:  true,
	config.CodeDestinationRuleConflict: true,
	config.CodeServiceEntryConflict:    true,
	config.CodePeerAuthnConflict:       true,
	config.CodeDuplicateResource:       true,
}

// reasonOf is the reason an error diagnostic gives.
func reasonOf(d config.Diagnostic) string {
	switch {
	case d.Code == config.CodeTrafficHeld:
		return ReasonHeld
	case conflictCodes[d.Code]:
		return ReasonConflict
	}
	return ReasonRejected
}

// describe renders a diagnostic for a user who sees it on the object
// itself: code, field path and message, without the virtual file and its
// meaningless line numbers.
func describe(d config.Diagnostic) string {
	s := string(d.Code) + " "
	if d.Path != "" {
		s += d.Path + ": "
	}
	return s + d.Message
}

// judge decides an object's verdict from its diagnostics in a snapshot;
// inForce says whether some version of it is in the snapshot.
func judge(diags []config.Diagnostic, inForce bool) verdict {
	v := verdict{reason: ReasonAccepted, diags: diags}
	var errs, others []string
	for _, d := range diags {
		if d.Severity != config.SeverityError {
			others = append(others, describe(d))
			continue
		}
		errs = append(errs, describe(d))
		// Held outranks Conflict outranks Rejected: the guard's verdict is
		// the one the user acts on first.
		switch r := reasonOf(d); {
		case r == ReasonHeld, r == ReasonConflict && v.reason != ReasonHeld,
			r == ReasonRejected && v.reason == ReasonAccepted:
			v.reason = r
		}
	}
	switch {
	case v.reason == ReasonAccepted && len(others) == 0:
		v.message = "in force"
	case v.reason == ReasonAccepted:
		v.message = fmt.Sprintf("in force, with %d %s: %s", len(others), plural(len(others), "note"), strings.Join(others, "; "))
	default:
		v.message = "not in force as written: " + strings.Join(errs, "; ")
		if v.reason == ReasonRejected {
			if inForce {
				v.message += "; the last good version stays in force"
			} else {
				v.message += "; no version of it is in force"
			}
		}
		if len(others) > 0 {
			v.message += fmt.Sprintf(" (and %d %s: %s)", len(others), plural(len(others), "note"), strings.Join(others, "; "))
		}
	}
	v.message = truncate(v.message, maxConditionMessage)
	return v
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = " …"
	cut := n - len(more)
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// level is the validationMessages level of a severity, as Istio's
// analysis messages name them.
func level(s config.Severity) string {
	switch s {
	case config.SeverityError:
		return "ERROR"
	case config.SeverityWarning:
		return "WARNING"
	case config.SeverityInfo:
		return "INFO"
	}
	return "UNKNOWN"
}

// validationMessages renders diagnostics as Istio's
// status.validationMessages (istio.analysis.v1alpha1.AnalysisMessageBase:
// type.code, level, documentationUrl). Like istiod, Weft puts no free
// text there (the CRD schema would prune it): the text is in the
// condition's message. docsURL, when set, is the base of
// documentationUrl ("<docsURL>#<code>").
func validationMessages(diags []config.Diagnostic, docsURL string) []any {
	var out []any
	seen := map[string]bool{}
	for _, d := range diags {
		m := map[string]any{
			"level": level(d.Severity),
			"type":  map[string]any{"code": string(d.Code)},
		}
		if docsURL != "" {
			m["documentationUrl"] = docsURL + "#" + strings.ToLower(string(d.Code))
		}
		key := fmt.Sprint(m)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, m)
	}
	return out
}

// desiredStatus is the status an object should have after a load: the
// existing status with Weft's parts replaced — observedGeneration,
// validationMessages and the Reconciled condition. Other conditions are
// kept. lastTransitionTime changes only when the condition's status does,
// so a status that says the same is equal to the existing one and is not
// written again.
func desiredStatus(existing map[string]any, v verdict, generation int64, now time.Time, docsURL string) map[string]any {
	st := map[string]any{}
	if existing != nil {
		st = deepCopy(existing).(map[string]any)
	}
	st["observedGeneration"] = generation
	if msgs := validationMessages(v.diags, docsURL); len(msgs) > 0 {
		st["validationMessages"] = msgs
	} else {
		delete(st, "validationMessages")
	}
	status := "False"
	if v.accepted() {
		status = "True"
	}
	cond := map[string]any{
		"type":               ConditionType,
		"status":             status,
		"reason":             v.reason,
		"message":            v.message,
		"observedGeneration": generation,
		"lastTransitionTime": now.UTC().Format(time.RFC3339),
	}
	var conds []any
	replaced := false
	if old, ok := st["conditions"].([]any); ok {
		for _, c := range old {
			cm, ok := c.(map[string]any)
			if !ok || cm["type"] != ConditionType {
				conds = append(conds, c)
				continue
			}
			if replaced {
				continue // a second Reconciled condition: drop it
			}
			if cm["status"] == status && cm["lastTransitionTime"] != nil {
				cond["lastTransitionTime"] = cm["lastTransitionTime"]
			}
			conds = append(conds, cond)
			replaced = true
		}
	}
	if !replaced {
		conds = append(conds, cond)
	}
	st["conditions"] = conds
	return st
}

// sameStatus reports whether two statuses are equal, counting the
// integers JSON decoding and Go code produce (int64, float64) as equal.
func sameStatus(a, b map[string]any) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case int:
		return float64(x)
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	}
	return v
}

// deepCopy copies JSON-like values (maps, slices, scalars).
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// diagnosticsByFile groups a snapshot's diagnostics by the virtual files
// of this source they name.
func diagnosticsByFile(snap *config.Snapshot) map[string][]config.Diagnostic {
	out := map[string][]config.Diagnostic{}
	for _, d := range snap.Diagnostics {
		if strings.HasPrefix(d.File, PathPrefix) {
			out[d.File] = append(out[d.File], d)
		}
	}
	return out
}

// inForce lists the keys ("Kind/namespace/name") of a snapshot's
// resources, of every kind the source watches (TestInForceEveryKind).
func inForce(snap *config.Snapshot) map[string]bool {
	out := map[string]bool{}
	add := func(m config.Meta) { out[m.Key()] = true }
	for _, r := range snap.VirtualServices {
		add(r.Meta)
	}
	for _, r := range snap.DestinationRules {
		add(r.Meta)
	}
	for _, r := range snap.ServiceEntries {
		add(r.Meta)
	}
	for _, r := range snap.WorkloadEntries {
		add(r.Meta)
	}
	for _, r := range snap.WorkloadGroups {
		add(r.Meta)
	}
	for _, r := range snap.Sidecars {
		add(r.Meta)
	}
	for _, r := range snap.Gateways {
		add(r.Meta)
	}
	for _, r := range snap.PeerAuthentications {
		add(r.Meta)
	}
	for _, r := range snap.AuthorizationPolicies {
		add(r.Meta)
	}
	for _, r := range snap.RequestAuthentications {
		add(r.Meta)
	}
	for _, r := range snap.Telemetries {
		add(r.Meta)
	}
	for _, r := range snap.RateLimits {
		add(r.Meta)
	}
	for _, r := range snap.OIDCLogins {
		add(r.Meta)
	}
	for _, r := range snap.GatewayClasses {
		add(r.Meta)
	}
	for _, r := range snap.KubeGateways {
		add(r.Meta)
	}
	for _, r := range snap.HTTPRoutes {
		add(r.Meta)
	}
	for _, r := range snap.GRPCRoutes {
		add(r.Meta)
	}
	for _, r := range snap.TCPRoutes {
		add(r.Meta)
	}
	for _, r := range snap.TLSRoutes {
		add(r.Meta)
	}
	for _, r := range snap.ReferenceGrants {
		add(r.Meta)
	}
	for _, r := range snap.Namespaces {
		add(r.Meta)
	}
	return out
}

// rejections are the error diagnostics of a verdict that each deserve one
// Warning event, keyed so that the same rejection is announced once.
func rejections(path string, generation int64, v verdict) map[string]config.Diagnostic {
	out := map[string]config.Diagnostic{}
	for _, d := range v.diags {
		if d.Severity == config.SeverityError {
			out[fmt.Sprintf("%s@%d %s %s %s", path, generation, d.Code, d.Path, d.Message)] = d
		}
	}
	return out
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
