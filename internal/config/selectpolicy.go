package config

import (
	"slices"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"weft.dev/weft/internal/registry"
)

// DefaultRootNamespace is Istio's default root namespace: policies there
// without a selector apply to the whole mesh.
const DefaultRootNamespace = "istio-system"

// PeerAuthnSet is what governs mutual TLS for one workload, as Istio's
// ComposePeerAuthentication picks it: at most one policy per level, the
// oldest (FirstSeen) where several apply at one level.
type PeerAuthnSet struct {
	// Mesh is the oldest policy without a selector in the root namespace.
	Mesh *PeerAuthentication
	// Namespace is the oldest policy without a selector in the workload's
	// namespace (nil when that is the root namespace: Mesh has it).
	Namespace *PeerAuthentication
	// Workload is the oldest policy of the workload's namespace whose
	// selector matches the workload's labels. A policy with a selector in
	// the root namespace never applies to sidecars, as in Istio.
	Workload *PeerAuthentication
	// Shadowed lists the policies that apply by scope but lose to an older
	// one of the same level, oldest first.
	Shadowed []*PeerAuthentication
}

// HasSelector reports whether a policy selector selects particular
// workloads (it has matchLabels); a policy without one covers its whole
// namespace, or the mesh in the root namespace.
func HasSelector(sel *typev1beta1.WorkloadSelector) bool { return len(sel.GetMatchLabels()) > 0 }

// Selects reports whether a policy selector matches a workload's labels,
// as Istio's isSelected: no selector (or no labels) matches every workload.
func Selects(sel *typev1beta1.WorkloadSelector, labels map[string]string) bool {
	return registry.HasLabels(labels, sel.GetMatchLabels())
}

// SelectPeerAuthentications returns the PeerAuthentications that govern a
// workload of namespace ns with these labels; rootNS "" means
// DefaultRootNamespace. The order of pas does not matter; policies with a
// nil Spec are skipped.
func SelectPeerAuthentications(rootNS, ns string, labels map[string]string, pas []*PeerAuthentication) PeerAuthnSet {
	if rootNS == "" {
		rootNS = DefaultRootNamespace
	}
	ordered := slices.Clone(pas)
	slices.SortFunc(ordered, FirstSeen)
	var set PeerAuthnSet
	take := func(slot **PeerAuthentication, pa *PeerAuthentication) {
		if *slot == nil {
			*slot = pa
		} else {
			set.Shadowed = append(set.Shadowed, pa)
		}
	}
	for _, pa := range ordered {
		if pa == nil || pa.Spec == nil || (pa.Namespace != ns && pa.Namespace != rootNS) {
			continue
		}
		switch {
		case !HasSelector(pa.Spec.GetSelector()) && pa.Namespace == rootNS:
			take(&set.Mesh, pa)
		case !HasSelector(pa.Spec.GetSelector()):
			take(&set.Namespace, pa)
		case pa.Namespace == rootNS:
			// Istio ignores workload policies in the root namespace.
		case Selects(pa.Spec.GetSelector(), labels):
			take(&set.Workload, pa)
		}
	}
	return set
}

// MTLSMode is an effective mutual TLS mode (never UNSET).
type MTLSMode string

// Modes, Istio's names.
const (
	MTLSDisable    MTLSMode = "DISABLE"
	MTLSPermissive MTLSMode = "PERMISSIVE"
	MTLSStrict     MTLSMode = "STRICT"
)

// MergedPeerAuthn is the effective mutual TLS of one workload: Mode, and
// per workload port where portLevelMtls overrides it.
type MergedPeerAuthn struct {
	Mode    MTLSMode
	PerPort map[uint32]MTLSMode
}

// ModeFor returns the mode of a workload port.
func (m MergedPeerAuthn) ModeFor(port uint32) MTLSMode {
	if p, ok := m.PerPort[port]; ok {
		return p
	}
	return m.Mode
}

// Compose is Istio's ComposePeerAuthentication: PERMISSIVE unless a policy
// says otherwise; the mesh policy, then the namespace's, then the
// workload's override it, each level that leaves mtls UNSET (or out)
// inheriting the one above; a port of portLevelMtls that is UNSET
// inherits the workload's mode.
func (s PeerAuthnSet) Compose() MergedPeerAuthn {
	out := MergedPeerAuthn{Mode: MTLSPermissive}
	for _, pa := range []*PeerAuthentication{s.Mesh, s.Namespace, s.Workload} {
		if pa == nil {
			continue
		}
		if m, ok := mtlsMode(pa.Spec.GetMtls()); ok {
			out.Mode = m
		}
	}
	if s.Workload != nil && len(s.Workload.Spec.GetPortLevelMtls()) > 0 {
		out.PerPort = make(map[uint32]MTLSMode, len(s.Workload.Spec.GetPortLevelMtls()))
		for port, m := range s.Workload.Spec.GetPortLevelMtls() {
			if mode, ok := mtlsMode(m); ok {
				out.PerPort[port] = mode
			} else {
				out.PerPort[port] = out.Mode
			}
		}
	}
	return out
}

// mtlsMode converts a policy's mode; ok is false for UNSET (or no mtls).
func mtlsMode(m *security.PeerAuthentication_MutualTLS) (MTLSMode, bool) {
	switch m.GetMode() {
	case security.PeerAuthentication_MutualTLS_DISABLE:
		return MTLSDisable, true
	case security.PeerAuthentication_MutualTLS_PERMISSIVE:
		return MTLSPermissive, true
	case security.PeerAuthentication_MutualTLS_STRICT:
		return MTLSStrict, true
	}
	return "", false
}

// SelectSidecar returns the Sidecar that applies to a workload of
// namespace ns with these labels, as Istio picks it: the oldest Sidecar of
// ns whose workloadSelector matches the labels, else the oldest of ns
// without a selector, else the oldest of the root namespace (rootNS ""
// means DefaultRootNamespace) without a selector; nil when none applies.
// Sidecars with a nil Spec are skipped.
func SelectSidecar(rootNS, ns string, labels map[string]string, scs []*Sidecar) *Sidecar {
	if rootNS == "" {
		rootNS = DefaultRootNamespace
	}
	var workload, namespace, mesh *Sidecar
	older := func(cur, sc *Sidecar) bool { return cur == nil || FirstSeen(sc, cur) < 0 }
	for _, sc := range scs {
		if sc.Spec == nil {
			continue
		}
		sel := sc.Spec.GetWorkloadSelector().GetLabels()
		switch {
		case sc.Namespace == ns && len(sel) > 0:
			if registry.HasLabels(labels, sel) && older(workload, sc) {
				workload = sc
			}
		case sc.Namespace == ns && older(namespace, sc):
			namespace = sc
		case sc.Namespace == rootNS && len(sel) == 0 && older(mesh, sc):
			mesh = sc
		}
	}
	switch {
	case workload != nil:
		return workload
	case namespace != nil:
		return namespace
	}
	return mesh
}

// PolicyTargets are a policy's targetRef and targetRefs.
func PolicyTargets(ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) []*typev1beta1.PolicyTargetReference {
	if ref != nil {
		return append([]*typev1beta1.PolicyTargetReference{ref}, refs...)
	}
	return refs
}

// IsGatewayTarget reports whether a policy target is a Gateway API
// Gateway (gateway.networking.k8s.io, kind Gateway): the policy applies
// to that Gateway's proxies.
func IsGatewayTarget(r *typev1beta1.PolicyTargetReference) bool {
	return r.GetGroup() == "gateway.networking.k8s.io" && r.GetKind() == "Gateway"
}

// TargetsGateway reports whether a policy of namespace policyNS attached
// with targets applies to a workload of namespace ns with these labels,
// as Istio decides for a gateway: one of targets is a Gateway of the
// policy's own namespace whose deployment the workload is (its label
// gateway.networking.k8s.io/gateway-name names it). Targets of other
// kinds (Service, ServiceEntry and GatewayClass: waypoints, classes)
// select nothing here.
func TargetsGateway(targets []*typev1beta1.PolicyTargetReference, policyNS, ns string, labels map[string]string) bool {
	if ns != policyNS || labels[GatewayNameLabel] == "" {
		return false
	}
	for _, r := range targets {
		if IsGatewayTarget(r) && r.GetName() == labels[GatewayNameLabel] {
			return true
		}
	}
	return false
}
