package analyze

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/credentials"
)

// gatewayCredentials reports each Gateway server whose credentialName
// names a Secret that the namespace of a gateway it selects does not
// hold (or holds without a certificate, or, for MUTUAL, without a CA):
// those gateways refuse the handshake for the server's hosts. Only when
// the control plane reads Secrets (a mesh with Credentials); a gateway
// may still serve the credential from its --credential-dir, so it is a
// warning. The gateways' namespaces are those of the registry's
// workloads the Gateway selects (a translated Gateway API Gateway: its
// own); a Gateway that selects none is left alone.
func (a *analysis) gatewayCredentials() {
	creds := a.m.Credentials
	if creds == nil {
		return
	}
	for _, gw := range a.m.Config.Gateways {
		_, translated := gw.Annotations[config.AnnotationGeneratedFrom]
		var nss []string
		switch {
		case translated:
			nss = []string{gw.Namespace}
		case len(gw.Spec.GetSelector()) > 0: // an empty one picks every gateway: no namespace in particular
			nss = a.selectedNamespaces(gw.Spec.GetSelector())
		}
		for i, srv := range gw.Spec.GetServers() {
			t := srv.GetTls()
			name := t.GetCredentialName()
			if name == "" {
				continue
			}
			mutual := t.GetMode() == networking.ServerTLSSettings_MUTUAL
			path := fmt.Sprintf("spec.servers[%d].tls.credentialName", i)
			if ref, ok := strings.CutPrefix(name, config.GatewayCredentialPrefix); ok {
				ns, n, _ := strings.Cut(ref, "/")
				if c := find(creds, ns, n); c == nil || c.Cert == nil {
					a.report(config.SeverityWarning, config.CodeGatewayCredential, gw.Meta, gw.Pos, path,
						"Secret %s/%s (the listener's certificateRef) has no certificate and key (tls.crt and tls.key): the gateway refuses the handshake for this listener's hosts", ns, n)
				}
				continue
			}
			n := strings.TrimPrefix(name, "kubernetes://")
			var missing []string
			for _, ns := range nss {
				c := find(creds, ns, n)
				switch {
				case c == nil || c.Cert == nil:
					missing = append(missing, fmt.Sprintf("%s has no Secret %s with a certificate and key", ns, n))
				case mutual && c.CA == nil && find(creds, ns, n+"-cacert") == nil:
					missing = append(missing, fmt.Sprintf("%s has no CA for it (ca.crt in Secret %s, or Secret %s-cacert)", ns, n, n))
				}
			}
			if len(missing) > 0 {
				a.report(config.SeverityWarning, config.CodeGatewayCredential, gw.Meta, gw.Pos, path,
					"credentialName %q: namespace %s: the gateways there refuse the handshake for this server's hosts unless their --credential-dir holds it",
					n, strings.Join(missing, "; namespace "))
			}
		}
	}
}

// selectedNamespaces lists, sorted, the namespaces of the registry's
// workloads that selector picks.
func (a *analysis) selectedNamespaces(selector map[string]string) []string {
	set := map[string]bool{}
	for _, w := range a.m.Registry.Workloads() {
		ok := true
		for k, v := range selector {
			if w.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			set[w.Namespace] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

func find(set *credentials.Set, ns, name string) *credentials.Credential {
	for _, c := range set.InNamespace(ns) {
		if c.Name == name {
			return c
		}
	}
	return nil
}
