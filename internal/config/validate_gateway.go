package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/registry"
)

// validateGateway is Istio's ValidateGateway (servers, ports, hosts, TLS
// settings), plus Weft's limits: what the gateway proxy cannot serve is
// an error here rather than a listener that silently does something else.
func validateGateway(is *issues, gw *networking.Gateway) {
	validateSelectorLabels(is, "spec.selector", gw.GetSelector())
	if len(gw.GetServers()) == 0 {
		is.errf("spec.servers", "a gateway must have at least one server")
	}
	portNames := map[string]int{}
	// Servers sharing a port number must agree on the protocol family:
	// one listener serves the port.
	type family struct {
		proto registry.Protocol
		index int
	}
	byNumber := map[uint32]family{}
	for i, s := range gw.GetServers() {
		path := fmt.Sprintf("spec.servers[%d]", i)
		if s == nil {
			is.errf(path, "server may not be empty")
			continue
		}
		validateServer(is, path, s)
		p := s.GetPort()
		if p == nil {
			continue
		}
		if j, dup := portNames[p.GetName()]; dup && p.GetName() != "" {
			is.errf(path+".port.name", "port names in servers must be unique: %q is also spec.servers[%d].port.name", p.GetName(), j)
		} else {
			portNames[p.GetName()] = i
		}
		proto, _ := registry.ParseProtocol(p.GetProtocol())
		if !proto.IsHTTP() && s.GetTls().GetHttpsRedirect() {
			is.warnf(path+".tls.httpsRedirect", "httpsRedirect applies to HTTP servers only; it is ignored on a %s server", p.GetProtocol())
		}
		if f, ok := byNumber[p.GetNumber()]; ok && p.GetNumber() != 0 && serverFamily(f.proto) != serverFamily(proto) {
			is.errf(path+".port.protocol", "port %d is also spec.servers[%d] with protocol %s: servers on one port must all be HTTP (HTTP, HTTP2, GRPC), all HTTPS/TLS, or all TCP", p.GetNumber(), f.index, f.proto)
		} else if !ok {
			byNumber[p.GetNumber()] = family{proto, i}
		}
	}
}

// serverFamily groups protocols that can share one gateway listener.
func serverFamily(p registry.Protocol) string {
	switch {
	case p.IsHTTP():
		return "http"
	case p == registry.HTTPS || p == registry.TLS:
		return "tls"
	}
	return "tcp"
}

// validateServer is Istio's validateServer.
func validateServer(is *issues, path string, s *networking.Server) {
	if len(s.GetHosts()) == 0 {
		is.errf(path+".hosts", "a server must list at least one host")
	}
	for i, h := range s.GetHosts() {
		if _, _, err := parseServerHost(h); err != nil {
			is.errf(fmt.Sprintf("%s.hosts[%d]", path, i), "%v", err)
		}
	}
	portOK := validateServerPort(is, path+".port", s.GetPort())
	if b := s.GetBind(); b != "" {
		switch {
		case strings.HasPrefix(b, "unix://"):
			is.errf(path+".bind", "bind %q: unix domain sockets are not supported by the Weft gateway; bind an IP address", b)
		case !isIP(b):
			is.errf(path+".bind", "bind %q is not an IP address", b)
		}
	}
	validateServerTLS(is, path+".tls", s.GetTls())
	if !portOK {
		return
	}
	proto, _ := registry.ParseProtocol(s.GetPort().GetProtocol())
	tlsProto := proto == registry.HTTPS || proto == registry.TLS
	switch {
	case tlsProto && s.GetTls() == nil:
		is.errf(path+".tls", "a %s server must have TLS settings (tls.mode and, for SIMPLE or MUTUAL, its certificate)", proto)
	case !tlsProto && s.GetTls() != nil && proto.IsHTTP():
		// Only httpsRedirect is allowed on a plaintext HTTP server.
		t := s.GetTls()
		if t.GetMode() != networking.ServerTLSSettings_PASSTHROUGH || t.GetServerCertificate() != "" || t.GetPrivateKey() != "" || t.GetCaCertificates() != "" || t.GetCredentialName() != "" {
			is.errf(path+".tls", "a plaintext %s server can only set tls.httpsRedirect; serve TLS with protocol HTTPS", proto)
		}
	case !tlsProto && s.GetTls() != nil:
		is.errf(path+".tls", "a %s server cannot have TLS settings; use protocol TLS or HTTPS", proto)
	}
}

// validateServerPort is Istio's validateServerPort; ok is false when the
// port is too broken to check the rest of the server against.
func validateServerPort(is *issues, path string, p *networking.Port) bool {
	if p == nil {
		is.errf(path, "port is required")
		return false
	}
	ok := true
	if _, known := registry.ParseProtocol(p.GetProtocol()); !known {
		is.errf(path+".protocol", "invalid protocol %q, supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, MONGO, REDIS, MYSQL", p.GetProtocol())
		ok = false
	}
	if err := checkPort(int64(p.GetNumber())); err != nil {
		is.errf(path+".number", "%v", err)
		ok = false
	}
	if p.GetTargetPort() != 0 { //nolint:staticcheck // deprecated, still reported as Istio does
		is.warnf(path+".targetPort", "targetPort has no effect on gateways")
	}
	if p.GetName() == "" {
		is.errf(path+".name", "port name must be set")
	}
	return ok
}

// parseServerHost splits a server host "[namespace/]dnsName" as Istio's
// ValidateNamespaceSlashWildcardHostname with the namespace optional
// (then "*"): namespace is "*", "." or a namespace name; dnsName is "*",
// "*.suffix" or a full name.
func parseServerHost(h string) (ns, host string, err error) {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		ns, host = "*", h
	}
	switch {
	case ns == "" || host == "":
		return "", "", fmt.Errorf("host %q: namespace and dnsName must not be empty", h)
	case ns == "~":
		return "", "", fmt.Errorf("host %q: namespace \"~\" is not allowed on a gateway", h)
	case ns != "*" && ns != "." && !isDNSLabel(ns):
		return "", "", fmt.Errorf("host %q: namespace %q must be \"*\", \".\" or a namespace name", h, ns)
	case host == "*":
		return ns, host, nil
	case strings.Contains(host, "*") && !strings.HasPrefix(host, "*."):
		return "", "", fmt.Errorf("host %q: partial wildcard %q not allowed", h, host)
	}
	if err := checkWildcardDomain(host); err != nil {
		return "", "", fmt.Errorf("host %q: %v", h, err)
	}
	return ns, host, nil
}

// ParseServerHost splits a validated gateway server host into its
// namespace ("*", "." or a name) and DNS name.
func ParseServerHost(h string) (ns, host string) {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		return "*", h
	}
	return ns, host
}

// validateServerTLS is Istio's validateTLSOptions, with Weft's limits.
func validateServerTLS(is *issues, path string, t *networking.ServerTLSSettings) {
	if t == nil {
		return
	}
	if v := t.GetMinProtocolVersion(); v == networking.ServerTLSSettings_TLSV1_0 || v == networking.ServerTLSSettings_TLSV1_1 {
		is.warnf(path+".minProtocolVersion", "%s is below TLS 1.2; the gateway serves TLS 1.2 at least (Go's crypto/tls offers no TLS 1.0/1.1 cipher suites by default)", v)
	}
	if mn, mx := t.GetMinProtocolVersion(), t.GetMaxProtocolVersion(); mn != networking.ServerTLSSettings_TLS_AUTO && mx != networking.ServerTLSSettings_TLS_AUTO && mx < mn {
		is.errf(path+".maxProtocolVersion", "maxProtocolVersion %s is below minProtocolVersion %s", mx, mn)
	}
	seen := map[string]bool{}
	for i, cs := range t.GetCipherSuites() {
		p := fmt.Sprintf("%s.cipherSuites[%d]", path, i)
		switch {
		case !tlssocket.KnownCipherSuite(cs):
			is.warnf(p, "ignoring unknown cipher suite %q (use OpenSSL names such as ECDHE-RSA-AES128-GCM-SHA256)", cs)
		case seen[cs]:
			is.warnf(p, "ignoring duplicate cipher suite %q", cs)
		}
		seen[cs] = true
	}
	seenCurve := map[string]bool{}
	for i, c := range t.GetEcdhCurves() {
		p := fmt.Sprintf("%s.ecdhCurves[%d]", path, i)
		switch {
		case !tlssocket.KnownCurve(c):
			is.warnf(p, "ignoring unknown ECDH curve %q (the proxy offers X25519, P-256, P-384, P-521 and X25519MLKEM768)", c)
		case seenCurve[c]:
			is.warnf(p, "ignoring duplicate ECDH curve %q", c)
		}
		seenCurve[c] = true
	}
	for i, a := range t.GetAlpnProtocols() {
		if a == "" || len(a) > 255 {
			is.errf(fmt.Sprintf("%s.alpnProtocols[%d]", path, i), "an ALPN protocol name is 1 to 255 bytes, got %d", len(a))
		}
	}
	if len(t.GetAlpnProtocols()) > 0 && t.GetMode() == networking.ServerTLSSettings_PASSTHROUGH {
		is.warnf(path+".alpnProtocols", "alpnProtocols has no effect with PASSTHROUGH: the gateway does not terminate TLS")
	}
	hasFiles := t.GetServerCertificate() != "" || t.GetPrivateKey() != ""
	switch t.GetMode() {
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		for _, f := range []struct{ name, v string }{
			{"serverCertificate", t.GetServerCertificate()}, {"privateKey", t.GetPrivateKey()},
			{"caCertificates", t.GetCaCertificates()}, {"credentialName", t.GetCredentialName()},
		} {
			if f.v != "" {
				is.errf(path+"."+f.name, "ISTIO_MUTUAL uses the gateway's mesh certificate and cannot set %s", f.name)
			}
		}
		return
	case networking.ServerTLSSettings_PASSTHROUGH:
		if hasFiles || t.GetCaCertificates() != "" || t.GetCredentialName() != "" || t.GetCaCrl() != "" {
			is.warnf(path, "PASSTHROUGH mode does not use certificates; they are ignored")
		}
		return
	case networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		is.errf(path+".mode", "AUTO_PASSTHROUGH (multi-network east-west routing by SNI) is not supported by Weft yet; use PASSTHROUGH with tls routes")
		return
	case networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		is.errf(path+".mode", "OPTIONAL_MUTUAL is not supported by Weft yet; use MUTUAL or SIMPLE")
		return
	}
	if len(t.GetTlsCertificates()) > 0 {
		is.errf(path+".tlsCertificates", "tlsCertificates is not supported by Weft yet; use credentialName or serverCertificate/privateKey")
	}
	if len(t.GetCredentialNames()) > 0 {
		is.errf(path+".credentialNames", "credentialNames is not supported by Weft yet; use credentialName")
	}
	if t.GetCredentialName() != "" && hasFiles {
		is.errf(path+".credentialName", "only one of credentialName and serverCertificate/privateKey may be set")
	}
	mutual := t.GetMode() == networking.ServerTLSSettings_MUTUAL
	if t.GetCredentialName() != "" {
		if !validCredentialName(t.GetCredentialName()) {
			is.errf(path+".credentialName", "credentialName %q must be a secret name (a DNS-1123 subdomain), optionally prefixed kubernetes://", t.GetCredentialName())
		}
		if t.GetCaCrl() != "" {
			is.errf(path+".caCrl", "caCrl is not supported with credentialName: put the CRL in the credential")
		}
		return
	}
	prefix := "SIMPLE TLS"
	if mutual {
		prefix = "MUTUAL TLS"
		if t.GetCaCertificates() == "" {
			is.errf(path+".caCertificates", "%s requires a client CA bundle (caCertificates or a credentialName with ca.crt)", prefix)
		}
	}
	if t.GetServerCertificate() == "" {
		is.errf(path+".serverCertificate", "%s requires a server certificate (credentialName or serverCertificate)", prefix)
	}
	if t.GetPrivateKey() == "" {
		is.errf(path+".privateKey", "%s requires a private key (credentialName or privateKey)", prefix)
	}
	if t.GetCaCrl() != "" && !mutual {
		is.errf(path+".caCrl", "a CRL is not supported with SIMPLE TLS")
	}
}

// validCredentialName accepts a Kubernetes secret name, optionally with
// Istio's kubernetes:// prefix.
func validCredentialName(n string) bool {
	n = strings.TrimPrefix(n, "kubernetes://")
	if n == "" || len(n) > 253 {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}
