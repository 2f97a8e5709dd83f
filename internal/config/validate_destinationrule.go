package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// DestinationRules, rule by rule as Istio's ValidateDestinationRule and
// the CRD schema check them. Load balancer settings are in loadbalancer.go.

// validateDestinationRule checks dr, defined in namespace ns ("" when
// unknown: the checks that need it are skipped).
func validateDestinationRule(is *issues, ns string, dr *networking.DestinationRule) {
	if dr.GetHost() == "" {
		is.errf("spec.host", "host is required")
	} else if err := checkWildcardDomain(dr.GetHost()); err != nil {
		is.errf("spec.host", "%v", err)
	}
	validateTrafficPolicy(is, ns, "spec.trafficPolicy", dr.GetTrafficPolicy())
	seen := map[string]int{}
	for i, s := range dr.GetSubsets() {
		p := fmt.Sprintf("spec.subsets[%d]", i)
		if s == nil {
			is.errf(p, "subset must not be null")
			continue
		}
		switch first, dup := seen[s.GetName()]; {
		case s.GetName() == "":
			is.errf(p+".name", "subset name is required")
		case dup:
			is.errf(p+".name", "duplicate subset name %q (also spec.subsets[%d])", s.GetName(), first)
		case !isDNSLabel(s.GetName()):
			is.errf(p+".name", "subset name %q is not a DNS-1123 label (letters, digits and '-', at most 63, e.g. v1 or canary)", s.GetName())
		}
		if s.GetName() != "" {
			if _, dup := seen[s.GetName()]; !dup {
				seen[s.GetName()] = i
			}
		}
		validateLabels(is, p+".labels", s.GetLabels())
		validateTrafficPolicy(is, ns, p+".trafficPolicy", s.GetTrafficPolicy())
	}
	validateExportTo(is, ns, "spec.exportTo", dr.GetExportTo(), false)
	if sel := dr.GetWorkloadSelector(); sel != nil {
		labels := sel.GetMatchLabels()
		validateSelectorLabels(is, "spec.workloadSelector.matchLabels", labels)
		checkMaxItems(is, "spec.workloadSelector.matchLabels", "labels", len(labels), 4096)
		if len(labels) == 0 {
			is.warnf("spec.workloadSelector", "workloadSelector has no matchLabels, so it selects every workload in the namespace")
		}
		// Istio: a rule for selected workloads is visible in its own
		// namespace only. With the namespace unknown, a namespace name is
		// taken to be the rule's own.
		own := func(e string) bool { return e == "." || e == ns || (ns == "" && isDNSLabel(e)) }
		allOwn := true
		for i, e := range dr.GetExportTo() {
			if !own(e) {
				allOwn = false
				is.errf(fmt.Sprintf("spec.exportTo[%d]", i), "a DestinationRule with a workloadSelector can be exported only to its own namespace (\".\"), not %q", e)
			}
		}
		if allOwn && len(dr.GetExportTo()) > 1 {
			is.errf("spec.exportTo", "a DestinationRule with a workloadSelector can have only one exportTo entry, its own namespace (\".\")")
		}
	}
}

// validateTrafficPolicy is Istio's validateTrafficPolicy, at any level
// (top, subset); ns is the rule's namespace or "".
func validateTrafficPolicy(is *issues, ns, path string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	if tp.GetOutlierDetection() == nil && tp.GetConnectionPool() == nil && tp.GetLoadBalancer() == nil &&
		tp.GetTls() == nil && tp.GetPortLevelSettings() == nil && tp.GetTunnel() == nil &&
		tp.GetProxyProtocol() == nil && tp.GetRetryBudget() == nil {
		is.errf(path, "trafficPolicy is empty; set at least one of loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget")
		return
	}
	if tp.GetTunnel() != nil && tp.GetProxyProtocol() != nil {
		is.errf(path, "tunnel and proxyProtocol are mutually exclusive")
		return
	}
	validateOutlierDetection(is, path+".outlierDetection", tp.GetOutlierDetection())
	validateConnectionPool(is, path+".connectionPool", tp.GetConnectionPool())
	validateLoadBalancer(is, path+".loadBalancer", tp.GetLoadBalancer(), tp.GetOutlierDetection())
	validateClientTLS(is, ns, path+".tls", tp.GetTls())
	checkMaxItems(is, path+".portLevelSettings", "port settings", len(tp.GetPortLevelSettings()), 4096)
	for i, pl := range tp.GetPortLevelSettings() {
		p := fmt.Sprintf("%s.portLevelSettings[%d]", path, i)
		if pl == nil {
			is.errf(p, "port traffic policy must not be null")
			continue
		}
		if pl.GetPort() == nil {
			is.errf(p+".port", "port is required")
		} else if err := checkPort(int64(pl.GetPort().GetNumber())); err != nil {
			// Stricter than Istio: a setting for port 0 or 70000 would
			// silently apply to nothing.
			is.errf(p+".port.number", "%v", err)
		}
		if pl.GetOutlierDetection() == nil && pl.GetConnectionPool() == nil && pl.GetLoadBalancer() == nil && pl.GetTls() == nil {
			is.errf(p, "port traffic policy is empty; set at least one of loadBalancer, connectionPool, outlierDetection or tls")
			continue
		}
		validateOutlierDetection(is, p+".outlierDetection", pl.GetOutlierDetection())
		validateConnectionPool(is, p+".connectionPool", pl.GetConnectionPool())
		validateLoadBalancer(is, p+".loadBalancer", pl.GetLoadBalancer(), pl.GetOutlierDetection())
		validateClientTLS(is, ns, p+".tls", pl.GetTls())
	}
	if t := tp.GetTunnel(); t != nil {
		tp := path + ".tunnel"
		if pr := t.GetProtocol(); pr != "" && pr != "CONNECT" && pr != "POST" {
			is.errf(tp+".protocol", "tunnel protocol %q: want CONNECT or POST", pr)
		}
		if h := t.GetTargetHost(); checkFQDN(h) != nil && !isIP(h) {
			is.errf(tp+".targetHost", "targetHost %q must be a DNS name or an IP address", h)
		}
		if err := checkPort(int64(t.GetTargetPort())); err != nil {
			is.errf(tp+".targetPort", "%v", err)
		}
	}
	if rb := tp.GetRetryBudget(); rb != nil {
		if p := rb.GetPercent(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
			is.errf(path+".retryBudget.percent", "percent %v out of range 0-100", p.GetValue())
		}
	}
}

// validateOutlierDetection is Istio's validateOutlierDetection, plus the
// CRD's range of outlierDetectionHttpErrorCodes.
func validateOutlierDetection(is *issues, path string, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	validateDuration(is, path+".baseEjectionTime", od.GetBaseEjectionTime())
	//nolint:staticcheck // deprecated, still accepted with a warning as by Istio
	if od.GetConsecutiveErrors() != 0 {
		is.warnf(path+".consecutiveErrors", "consecutiveErrors is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors")
	}
	if !od.GetSplitExternalLocalOriginErrors() && od.GetConsecutiveLocalOriginFailures().GetValue() > 0 {
		is.errf(path+".consecutiveLocalOriginFailures", "consecutiveLocalOriginFailures counts only with splitExternalLocalOriginErrors: true")
	}
	validateDuration(is, path+".interval", od.GetInterval())
	if v := od.GetMaxEjectionPercent(); v < 0 || v > 100 {
		is.errf(path+".maxEjectionPercent", "maxEjectionPercent %d out of range 0-100", v)
	}
	if v := od.GetMinHealthPercent(); v < 0 || v > 100 {
		is.errf(path+".minHealthPercent", "minHealthPercent %d out of range 0-100", v)
	}
	if v := od.GetFailurePercentageThreshold(); v.GetValue() > 100 {
		is.errf(path+".failurePercentageThreshold", "failurePercentageThreshold %d out of range 0-100", v.GetValue())
	}
	for i, c := range od.GetOutlierDetectionHttpErrorCodes() {
		if c < 100 || c > 599 {
			is.errf(fmt.Sprintf("%s.outlierDetectionHttpErrorCodes[%d]", path, i), "HTTP status %d out of range 100-599", c)
		}
	}
}

// validateConnectionPool is Istio's validateConnectionPool.
func validateConnectionPool(is *issues, path string, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if cp.GetHttp() == nil && cp.GetTcp() == nil {
		is.errf(path, "connectionPool is empty; set http, tcp or both")
		return
	}
	nonNegative := func(field string, v int32) {
		if v < 0 {
			is.errf(path+"."+field, "%d must not be negative", v)
		}
	}
	if h := cp.GetHttp(); h != nil {
		nonNegative("http.http1MaxPendingRequests", h.GetHttp1MaxPendingRequests())
		nonNegative("http.http2MaxRequests", h.GetHttp2MaxRequests())
		nonNegative("http.maxRequestsPerConnection", h.GetMaxRequestsPerConnection())
		nonNegative("http.maxRetries", h.GetMaxRetries())
		nonNegative("http.maxConcurrentStreams", h.GetMaxConcurrentStreams())
		validateDuration(is, path+".http.idleTimeout", h.GetIdleTimeout())
		if h.GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && h.GetUseClientProtocol() {
			is.errf(path+".http.useClientProtocol", "useClientProtocol cannot be true with h2UpgradePolicy: UPGRADE")
		}
		if ka := h.GetHttp2KeepAlive(); ka != nil {
			if ka.GetInterval() == nil {
				is.errf(path+".http.http2KeepAlive.interval", "interval is required")
			}
			validateDuration(is, path+".http.http2KeepAlive.interval", ka.GetInterval())
			if ka.GetTimeout() == nil {
				is.errf(path+".http.http2KeepAlive.timeout", "timeout is required")
			}
			validateDuration(is, path+".http.http2KeepAlive.timeout", ka.GetTimeout())
		}
	}
	if t := cp.GetTcp(); t != nil {
		nonNegative("tcp.maxConnections", t.GetMaxConnections())
		validateDuration(is, path+".tcp.connectTimeout", t.GetConnectTimeout())
		validateDuration(is, path+".tcp.maxConnectionDuration", t.GetMaxConnectionDuration())
		if d := t.GetIdleTimeout(); d != nil && d.AsDuration() != 0 {
			validateDuration(is, path+".tcp.idleTimeout", d) // 0s disables it
		}
		if ka := t.GetTcpKeepalive(); ka != nil {
			validateDuration(is, path+".tcp.tcpKeepalive.time", ka.GetTime())
			validateDuration(is, path+".tcp.tcpKeepalive.interval", ka.GetInterval())
		}
	}
}

// validateClientTLS is Istio's ValidateTLS for a traffic policy's tls; ns
// is the rule's namespace or "".
func validateClientTLS(is *issues, ns, path string, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	const configMapPrefix = "configmap://"
	if cn, ok := strings.CutPrefix(t.GetCredentialName(), configMapPrefix); ok {
		cmNS, name, scoped := strings.Cut(cn, "/")
		switch {
		case cn == "" || (scoped && (cmNS == "" || name == "")):
			is.errf(path+".credentialName", "credentialName %q: want configmap://<name> or configmap://<namespace>/<name>", t.GetCredentialName())
		case scoped && ns != "" && cmNS != ns:
			is.errf(path+".credentialName", "credentialName %q: the ConfigMap must be in the rule's namespace %q", t.GetCredentialName(), ns)
		}
	}
	if t.GetCaCertCredentialName() != "" {
		is.warnf(path+".caCertCredentialName", "caCertCredentialName is not supported by Weft yet (it reads no Kubernetes secrets or ConfigMaps for sidecars): the server's certificate is verified against caCertificates or, without them, the system's roots; give the CA as a file (caCertificates)")
	}
	if cn := t.GetCredentialName(); strings.HasPrefix(cn, configMapPrefix) {
		is.warnf(path+".credentialName", "a CA from a ConfigMap is not supported by Weft yet: no proxy originates TLS for this destination; give the CA as a file (caCertificates)")
	} else if cn != "" {
		is.warnf(path+".credentialName", "credentialName is applied by gateways only (an egress gateway takes the Secret of its own namespace, as Istio's do): sidecars originate no TLS for this destination, as Istio's sidecars do without a workloadSelector; for sidecars give the files (caCertificates, clientCertificate, privateKey) instead")
	}
	mode := t.GetMode()
	if t.GetInsecureSkipVerify().GetValue() {
		switch {
		case mode == networking.ClientTLSSettings_SIMPLE && (t.GetCaCertificates() != "" || t.GetCredentialName() != "" || len(t.GetSubjectAltNames()) > 0):
			is.errf(path+".insecureSkipVerify", "insecureSkipVerify: true cannot be combined with caCertificates, credentialName or subjectAltNames")
		case mode == networking.ClientTLSSettings_MUTUAL && (t.GetCaCertificates() != "" || len(t.GetSubjectAltNames()) > 0):
			is.errf(path+".insecureSkipVerify", "insecureSkipVerify: true cannot be combined with caCertificates or subjectAltNames")
		}
	}
	if (mode == networking.ClientTLSSettings_SIMPLE || mode == networking.ClientTLSSettings_MUTUAL) && t.GetCredentialName() != "" {
		if t.GetClientCertificate() != "" || t.GetCaCertificates() != "" || t.GetPrivateKey() != "" || t.GetCaCrl() != "" {
			is.errf(path+".credentialName", "with credentialName, clientCertificate, privateKey, caCertificates and caCrl must not be set (they come from the credential)")
		}
		return
	}
	if mode == networking.ClientTLSSettings_MUTUAL {
		if t.GetClientCertificate() == "" {
			is.errf(path+".clientCertificate", "clientCertificate is required for mode MUTUAL")
		}
		if t.GetPrivateKey() == "" {
			is.errf(path+".privateKey", "privateKey is required for mode MUTUAL")
		}
	}
}
