package analyze

import (
	"fmt"
	"slices"
	"strings"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/xds/contract"
)

// strictWithoutSidecar warns about workloads that STRICT mutual TLS
// covers but that are not labelled security.istio.io/tlsMode: istio:
// clients use mutual TLS only toward workloads with that label (automatic
// mutual TLS), so they would send these plaintext, which STRICT refuses.
// It looks at the ports the registry serves each WorkloadEntry on.
func (a *analysis) strictWithoutSidecar() {
	for _, we := range a.m.Config.WorkloadEntries {
		labels := we.Spec.GetLabels()
		if labels[contract.TLSModeLabel] == contract.TLSModeIstio {
			continue
		}
		set := a.m.PeerAuthn.For(we.Namespace, labels)
		merged := set.Compose()
		var ports []string
		var from *config.PeerAuthentication
		seen := map[uint32]bool{}
		for _, svc := range a.m.Registry.Services() {
			for _, ep := range a.m.Registry.Endpoints(svc.Hostname, 0) {
				if ep.WorkloadName != we.Name || ep.Namespace != we.Namespace || seen[ep.Port] {
					continue
				}
				seen[ep.Port] = true
				if merged.ModeFor(ep.Port) == config.MTLSStrict {
					ports = append(ports, fmt.Sprint(ep.Port))
					if from == nil {
						from = strictSource(set, ep.Port)
					}
				}
			}
		}
		if len(ports) == 0 || from == nil {
			continue
		}
		slices.Sort(ports)
		a.report(config.SeverityWarning, config.CodeStrictWithoutSidecar, we.Meta, we.Pos, "spec.labels",
			"%s makes this workload's port(s) %s STRICT, but it is not labelled %s: %s, so clients send it plaintext (they use mutual TLS only toward workloads with that label) and it refuses them; add the label if it runs a sidecar, or relax the PeerAuthentication",
			where(from.Meta), strings.Join(ports, ", "), contract.TLSModeLabel, contract.TLSModeIstio)
	}
}

// strictSource is the policy whose setting makes port STRICT: the
// workload's port-level setting, else the narrowest policy that sets a mode.
func strictSource(set config.PeerAuthnSet, port uint32) *config.PeerAuthentication {
	if w := set.Workload; w != nil {
		if m, ok := w.Spec.GetPortLevelMtls()[port]; ok && m.GetMode() != 0 {
			return w
		}
	}
	for _, pa := range []*config.PeerAuthentication{set.Workload, set.Namespace, set.Mesh} {
		if pa != nil && pa.Spec.GetMtls().GetMode() != 0 {
			return pa
		}
	}
	return nil
}

// where names a resource and where it is written.
func where(m config.Meta) string {
	if m.Line > 0 {
		return fmt.Sprintf("%s (%s:%d)", m, m.File, m.Line)
	}
	return m.String()
}
