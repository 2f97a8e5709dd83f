package generate

import (
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// Secrets are the SDS secrets a proxy may ask for by name over ADS: for a
// gateway, every credential of its own namespace (a Gateway's
// credentialName is looked up there, as Istio does), each as
//
//   - "kubernetes://<name>": its certificate and key;
//   - "kubernetes://<name>-cacert": its CA bundle (and "kubernetes://<name>"
//     too for a Secret holding only a CA, Istio's split form);
//   - "kubernetes://<name>/<key>": each other key (generic secrets, an
//     OIDCLogin's client secret).
//
// Sidecars and proxyless clients get none. The list is made once per
// mesh snapshot and namespace and shared by that namespace's gateways;
// the xDS server sends a proxy only the names it asks for, and only on a
// stream whose identity it verified.
//
// A Gateway API listener of the gateway's namespace whose certificateRef
// is a Secret of another namespace (a ReferenceGrant there permitting:
// the translation checked it) names it "kubernetes-gateway://<ns>/<name>";
// that Secret's certificate is sent under that name too, to the gateways
// of that Gateway only.
func Secrets(m *mesh.Snapshot, id contract.Identity) []types.Resource {
	if !id.Router() || m.Credentials.Len() == 0 {
		return nil
	}
	refs := crossNamespaceRefs(m, id)
	return m.Memo(secretsKey{id.Namespace, strings.Join(refs, ",")}, func() any {
		list := secretsOf(m.Credentials.InNamespace(id.Namespace))
		for _, ref := range refs {
			ns, name, _ := strings.Cut(ref, "/")
			for _, c := range m.Credentials.InNamespace(ns) {
				if c.Name == name && c.Cert != nil && c.Key != nil {
					list = append(list, tlsSecret(contract.SecretGatewayCredentialPrefix+ref, c))
				}
			}
		}
		slices.SortFunc(list, func(a, b types.Resource) int {
			return strings.Compare(a.(*tlsv3.Secret).GetName(), b.(*tlsv3.Secret).GetName())
		})
		return list
	}).([]types.Resource)
}

type secretsKey struct{ namespace, refs string }

// crossNamespaceRefs lists, sorted, the "<ns>/<name>" of the certificates
// of other namespaces that the translated Gateway API Gateways serving
// id name.
func crossNamespaceRefs(m *mesh.Snapshot, id contract.Identity) []string {
	var refs []string
	for _, gw := range m.Gateways.ForWorkload(id.Namespace, id.Labels) {
		if _, translated := gw.Annotations[config.AnnotationGeneratedFrom]; !translated || gw.Namespace != id.Namespace {
			continue
		}
		for _, srv := range gw.Spec.GetServers() {
			if ref, ok := strings.CutPrefix(srv.GetTls().GetCredentialName(), config.GatewayCredentialPrefix); ok {
				refs = append(refs, ref)
			}
		}
	}
	slices.Sort(refs)
	return slices.Compact(refs)
}

func tlsSecret(name string, c *credentials.Credential) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inlineBytes(c.Cert), PrivateKey: inlineBytes(c.Key),
	}}}
}

func inlineBytes(b []byte) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
}

// secretsOf turns credentials into SDS secrets, sorted by name, each name
// once: a CA of its own Secret ("<name>-cacert") wins over the ca.crt of
// Secret "<name>", as a gateway's credential directory does.
func secretsOf(creds []*credentials.Credential) []types.Resource {
	byName := map[string]*tlsv3.Secret{}
	own := map[string]bool{} // names a Secret of that very name made
	add := func(s *tlsv3.Secret, isOwn bool) {
		if _, had := byName[s.Name]; had && (own[s.Name] || !isOwn) {
			return
		}
		byName[s.Name] = s
		own[s.Name] = own[s.Name] || isOwn
	}
	inline := inlineBytes
	validation := func(name string, ca []byte) *tlsv3.Secret {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(ca)}}}
	}
	for _, c := range creds {
		base := contract.SecretCredentialPrefix + c.Name
		if c.Cert != nil && c.Key != nil {
			add(tlsSecret(base, c), true)
		} else if c.CA != nil {
			add(validation(base, c.CA), true)
		}
		if c.CA != nil {
			add(validation(base+contract.SecretCASuffix, c.CA), false)
		}
		for k, v := range c.Files {
			add(&tlsv3.Secret{Name: base + "/" + k, Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{Secret: inline(v)}}}, true)
		}
	}
	out := make([]types.Resource, 0, len(byName))
	for _, n := range sortedKeys(byName) {
		out = append(out, byName[n])
	}
	return out
}
