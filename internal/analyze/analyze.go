// Package analyze finds config that is valid but probably not what was
// meant, as `istioctl analyze` does, on a mesh snapshot: routes that can
// never match, traffic sent to destinations with no endpoints, subsets
// every route starves, DestinationRules and VirtualServices for hosts no
// registry knows, workloads STRICT mutual TLS covers that clients would
// send plaintext to, rate limit services no proxy can call, gateway
// credentials no Secret holds (when Secrets are read); routes that can never match come from validation
// (Istio's rules). Each finding is a config.Diagnostic with a stable code,
// a severity, the file, line and field. It is pure: the same snapshot
// always gives the same findings, sorted.
package analyze

import (
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/guard"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

// Options tune an analysis.
type Options struct {
	// FilesOnly is set when the registry holds only what the config files
	// declare (weft analyze DIR): hosts and endpoints may then come from a
	// registry the analysis cannot see (Kubernetes, Consul), so findings
	// about unknown hosts and missing endpoints are warnings, not errors.
	FilesOnly bool
}

// Mesh analyzes a mesh snapshot. The config snapshot's own diagnostics
// (validation, conflicts, held changes) come first, then the analyzers'
// findings; the result is sorted by file and position.
func Mesh(m *mesh.Snapshot, opts Options) []config.Diagnostic {
	a := &analysis{m: m, opts: opts}
	a.out = append(a.out, m.Config.Diagnostics...)
	a.unservedTraffic()
	a.subsets()
	a.unknownHosts()
	a.strictWithoutSidecar()
	a.rateLimitServices()
	a.gatewayCredentials()
	return sortDiagnostics(a.out)
}

type analysis struct {
	m    *mesh.Snapshot
	opts Options
	out  []config.Diagnostic
}

// report adds a finding about resource r (with its positions pos) at path.
func (a *analysis) report(sev config.Severity, code config.Code, meta config.Meta, pos config.Positions, path, format string, args ...any) {
	at := pos.Lookup(path)
	a.out = append(a.out, config.Diagnostic{
		Severity: sev, Code: code, File: meta.File, Doc: meta.Doc, Line: at.Line, Column: at.Column,
		Resource: meta.String(), Path: path, Message: fmt.Sprintf(format, args...),
	})
}

// unservedTraffic reports route destinations that ordinary traffic reaches
// but that have no endpoints: those requests fail with 503.
func (a *analysis) unservedTraffic() {
	sev := config.SeverityError
	if a.opts.FilesOnly {
		sev = config.SeverityWarning
	}
	for _, host := range a.m.Routes.Hosts() {
		if a.m.Registry.Service(host) == nil {
			continue // sidecars have no route for it at all: see unknownHosts
		}
		for _, o := range guard.Outcomes(a.m, host) {
			if o.VS == nil || !o.Ordinary || o.Direct || o.Share == 0 || o.Endpoints > 0 {
				continue
			}
			a.report(sev, config.CodeUnservedTraffic, o.VS.Meta, o.VS.Pos, o.Path(),
				"%s of the requests to %s that reach spec.http[%d] go to %s, which has no endpoints: they fail with 503",
				guard.Percent(o.Share), host, o.Rule, o.Dest)
		}
	}
}

// subsets reports subsets that select no endpoint and subsets every route
// gives weight 0, and DestinationRules whose subsets no route uses.
func (a *analysis) subsets() {
	uses := map[guard.Destination]*subsetUse{}
	for _, vs := range a.m.Config.VirtualServices {
		for _, r := range vs.Spec.GetHttp() {
			for _, d := range r.GetRoute() {
				a.use(uses, vs, d.GetDestination(), d.GetWeight() > 0 || len(r.GetRoute()) == 1)
			}
			if r.GetMirror() != nil {
				a.use(uses, vs, r.GetMirror(), true)
			}
			for _, mp := range r.GetMirrors() {
				a.use(uses, vs, mp.GetDestination(), true)
			}
		}
		for _, r := range vs.Spec.GetTcp() {
			for _, d := range r.GetRoute() {
				a.use(uses, vs, d.GetDestination(), d.GetWeight() > 0 || len(r.GetRoute()) == 1)
			}
		}
		for _, r := range vs.Spec.GetTls() {
			for _, d := range r.GetRoute() {
				a.use(uses, vs, d.GetDestination(), d.GetWeight() > 0 || len(r.GetRoute()) == 1)
			}
		}
	}
	for _, dr := range a.m.Config.DestinationRules {
		host := a.m.ResolveHost(dr.Spec.GetHost(), dr.Namespace)
		if strings.HasPrefix(host, "*") {
			continue
		}
		if a.m.Registry.Service(host) == nil {
			a.report(config.SeverityWarning, config.CodeUnusedDestinationRule, dr.Meta, dr.Pos, "spec.host",
				"no registry knows the host %s: this DestinationRule applies to nothing", host)
			continue
		}
		inForce := slices.ContainsFunc(a.m.Subsets.RulesFor(host).From, func(x *config.DestinationRule) bool { return x.Key() == dr.Key() })
		if !inForce {
			continue // conflicts are reported by the config store
		}
		usedAny := false
		for k, s := range dr.Spec.GetSubsets() {
			u := uses[guard.Destination{Host: host, Subset: s.GetName()}]
			path := fmt.Sprintf("spec.subsets[%d]", k)
			switch {
			case u == nil:
				continue
			case !u.weighted:
				a.report(config.SeverityWarning, config.CodeStarvedSubset, dr.Meta, dr.Pos, path,
					"subset %s of %s gets no traffic: every route to it gives it weight 0", s.GetName(), host)
			}
			usedAny = true
			if n := guard.Endpoints(a.m, guard.Destination{Host: host, Subset: s.GetName()}); n == 0 {
				a.report(config.SeverityWarning, config.CodeSubsetNoEndpoints, dr.Meta, dr.Pos, path+".labels",
					"subset %s of %s selects no endpoint: none of the %d endpoints of %s has the labels %s",
					s.GetName(), host, len(a.m.Registry.Endpoints(host, 0)), host, registry.LabelString(s.GetLabels()))
			}
		}
		if !usedAny && len(dr.Spec.GetSubsets()) > 0 && dr.Spec.GetTrafficPolicy() == nil {
			a.report(config.SeverityInfo, config.CodeUnusedDestinationRule, dr.Meta, dr.Pos, "spec.subsets",
				"no route uses the subsets of this DestinationRule, and it sets no traffic policy: it has no effect")
		}
	}
}

// subsetUse is how routes use a subset.
type subsetUse struct {
	weighted bool // some route gives it a share of traffic
}

// use records a route's use of a destination.
func (a *analysis) use(uses map[guard.Destination]*subsetUse, vs *config.VirtualService, d *networking.Destination, weighted bool) {
	if d.GetSubset() == "" {
		return
	}
	key := guard.Destination{Host: a.m.ResolveHost(d.GetHost(), vs.Namespace), Subset: d.GetSubset()}
	u := uses[key]
	if u == nil {
		u = &subsetUse{}
		uses[key] = u
	}
	u.weighted = u.weighted || weighted
}

// unknownHosts reports VirtualServices for hosts no registry knows.
func (a *analysis) unknownHosts() {
	for _, vs := range a.m.Config.VirtualServices {
		if !config.AppliesToMesh(vs.Spec.GetGateways()) {
			continue
		}
		for i, h := range vs.Spec.GetHosts() {
			host := a.m.ResolveHost(h, vs.Namespace)
			if strings.HasPrefix(host, "*") || a.m.Registry.Service(host) != nil {
				continue
			}
			a.report(config.SeverityWarning, config.CodeHostNotInRegistry, vs.Meta, vs.Pos, fmt.Sprintf("spec.hosts[%d]", i),
				"no registry knows the host %s: sidecars get no route for it", host)
		}
	}
}

// sortDiagnostics sorts by file, line, column, path and message, and
// drops exact repeats.
func sortDiagnostics(ds []config.Diagnostic) []config.Diagnostic {
	slices.SortStableFunc(ds, func(a, b config.Diagnostic) int {
		switch {
		case a.File != b.File:
			return strings.Compare(a.File, b.File)
		case a.Line != b.Line:
			return a.Line - b.Line
		case a.Column != b.Column:
			return a.Column - b.Column
		case a.Path != b.Path:
			return strings.Compare(a.Path, b.Path)
		}
		return strings.Compare(a.Message, b.Message)
	})
	return slices.Compact(ds)
}

// Count returns how many diagnostics have each severity.
func Count(ds []config.Diagnostic) (errors, warnings, infos int) {
	for _, d := range ds {
		switch d.Severity {
		case config.SeverityError:
			errors++
		case config.SeverityWarning:
			warnings++
		default:
			infos++
		}
	}
	return errors, warnings, infos
}
