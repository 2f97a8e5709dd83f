package capture

import (
	"fmt"
	"slices"
	"strings"
)

// Annotations maps each Istio pod annotation that tunes capture to the
// weft-proxy capture flag taking the same value, as Istio's injection
// template passes them to istio-iptables.
var Annotations = map[string]string{
	"traffic.sidecar.istio.io/includeOutboundIPRanges": "--include-outbound-ip-ranges",
	"traffic.sidecar.istio.io/excludeOutboundIPRanges": "--exclude-outbound-ip-ranges",
	"traffic.sidecar.istio.io/includeInboundPorts":     "--include-inbound-ports",
	"traffic.sidecar.istio.io/excludeInboundPorts":     "--exclude-inbound-ports",
	"traffic.sidecar.istio.io/includeOutboundPorts":    "--include-outbound-ports",
	"traffic.sidecar.istio.io/excludeOutboundPorts":    "--exclude-outbound-ports",
	"traffic.sidecar.istio.io/excludeInterfaces":       "--exclude-interfaces",
}

// ArgsFromAnnotations returns the weft-proxy capture arguments a pod's
// annotations ask for (see Annotations), sorted by flag, for the sidecar
// injector to put on the capture init container. Each value is checked as
// the flag would check it, so a bad annotation is refused at injection
// with an error naming it, not at pod start. Annotations Weft cannot honour
// (sidecar.istio.io/interceptionMode other than REDIRECT,
// traffic.sidecar.istio.io/kubevirtInterfaces) are errors too.
func ArgsFromAnnotations(annotations map[string]string) ([]string, error) {
	var args [][2]string
	for key, value := range annotations {
		switch key {
		case "sidecar.istio.io/interceptionMode":
			if !strings.EqualFold(value, "REDIRECT") {
				return nil, fmt.Errorf("annotation %s=%q: only REDIRECT is supported", key, value)
			}
			continue
		case "traffic.sidecar.istio.io/kubevirtInterfaces":
			return nil, fmt.Errorf("annotation %s: not supported", key)
		}
		flag, ok := Annotations[key]
		if !ok {
			continue
		}
		if err := checkAnnotation(flag, value); err != nil {
			return nil, fmt.Errorf("annotation %s=%q: %w", key, value, err)
		}
		args = append(args, [2]string{flag, value})
	}
	slices.SortFunc(args, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	var out []string
	for _, a := range args {
		out = append(out, a[0], a[1])
	}
	return out, nil
}

// checkAnnotation parses value as flag would.
func checkAnnotation(flag, value string) error {
	switch flag {
	case "--include-outbound-ip-ranges":
		_, err := ParseRanges(value)
		return err
	case "--exclude-outbound-ip-ranges":
		r, err := ParseRanges(value)
		if err == nil && r.All {
			err = fmt.Errorf("\"*\" is not allowed")
		}
		return err
	case "--include-inbound-ports":
		_, err := ParsePorts(value)
		return err
	case "--exclude-interfaces":
		for name := range strings.SplitSeq(value, ",") {
			if name = strings.TrimSpace(name); name != "" && !validInterface(name) {
				return fmt.Errorf("interface %q: not a network interface name", name)
			}
		}
		return nil
	}
	p, err := ParsePorts(value)
	if err == nil && p.All {
		err = fmt.Errorf("\"*\" is not allowed")
	}
	return err
}
