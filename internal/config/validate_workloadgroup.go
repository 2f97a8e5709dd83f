package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// validateWorkloadGroup is Istio's ValidateWorkloadGroup: a template is
// required, metadata labels must be valid Kubernetes labels, and the
// readiness probe's numbers may not be negative. The template is not a
// WorkloadEntry in full (its address is filled in when a VM registers),
// so it is checked field by field; Weft also warns about a template
// address, which auto-registration replaces.
func validateWorkloadGroup(is *issues, wg *networking.WorkloadGroup) {
	if wg.GetTemplate() == nil {
		is.errf("spec.template", "template is required")
	} else {
		t := wg.GetTemplate()
		validateLabels(is, "spec.template.labels", t.GetLabels())
		checkMaxLen(is, "spec.template.serviceAccount", "serviceAccount", t.GetServiceAccount(), 253)
		checkMaxLen(is, "spec.template.locality", "locality", t.GetLocality(), 2048)
		if t.GetAddress() != "" {
			is.warnf("spec.template.address", "address %q is ignored: each VM that registers with this group gets its proxy's own address", t.GetAddress())
		}
		for name, port := range t.GetPorts() {
			if port == 0 || port > 65535 {
				is.errf("spec.template.ports."+name, "port %d of %q must be between 1 and 65535", port, name)
			}
		}
	}
	if md := wg.GetMetadata(); md != nil {
		validateLabels(is, "spec.metadata.labels", md.GetLabels())
	}
	validateReadinessProbe(is, "spec.probe", wg.GetProbe())
}

// validateReadinessProbe is Istio's validateReadinessProbe.
func validateReadinessProbe(is *issues, path string, p *networking.ReadinessProbe) {
	if p == nil {
		return
	}
	for _, f := range []struct {
		name string
		v    int32
	}{
		{"periodSeconds", p.GetPeriodSeconds()}, {"initialDelaySeconds", p.GetInitialDelaySeconds()},
		{"timeoutSeconds", p.GetTimeoutSeconds()}, {"successThreshold", p.GetSuccessThreshold()},
		{"failureThreshold", p.GetFailureThreshold()},
	} {
		if f.v < 0 {
			is.errf(path+"."+f.name, "%s must be non-negative", f.name)
		}
	}
	switch m := p.GetHealthCheckMethod().(type) {
	case *networking.ReadinessProbe_HttpGet:
		h := m.HttpGet
		if h == nil {
			is.errf(path+".httpGet", "httpGet may not be empty")
			return
		}
		if h.GetPort() == 0 || h.GetPort() > 65535 {
			is.errf(path+".httpGet.port", "port %d must be between 1 and 65535", h.GetPort())
		}
		if s := h.GetScheme(); s != "" && s != "HTTP" && s != "HTTPS" {
			is.errf(path+".httpGet.scheme", `scheme must be one of "HTTPS", "HTTP"`)
		}
		for i, hd := range h.GetHttpHeaders() {
			if hd == nil || hd.GetName() == "" || strings.ContainsAny(hd.GetName(), " :\t") {
				is.errf(fmt.Sprintf("%s.httpGet.httpHeaders[%d].name", path, i), "invalid header name %q", hd.GetName())
			}
		}
	case *networking.ReadinessProbe_TcpSocket:
		if m.TcpSocket == nil || m.TcpSocket.GetPort() == 0 || m.TcpSocket.GetPort() > 65535 {
			is.errf(path+".tcpSocket.port", "port must be between 1 and 65535")
		}
	case *networking.ReadinessProbe_Exec:
		if m.Exec == nil || len(m.Exec.GetCommand()) == 0 {
			is.errf(path+".exec.command", "exec.command is required")
		}
	}
}
