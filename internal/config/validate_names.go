package config

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// The syntax checks Istio's validation shares across kinds: DNS names,
// wildcard hosts, Kubernetes labels, ports, durations, IP addresses and
// subnets, exportTo. Each returns an error whose message says what is wrong
// and what is allowed; callers add the field path.

const dns1123LabelMax = 63

var (
	// A DNS-1123 label as Istio checks it (upper case is allowed).
	dnsLabelRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	// A first label that may be a wildcard: "*", "*foo", "*-foo" or a label.
	wildcardLabelRE = regexp.MustCompile(`^(\*|(\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$`)
	// A Kubernetes label key: an optional DNS prefix and "/", then a
	// qualified name.
	labelKeyRE = regexp.MustCompile(`^([a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)*/)?((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$`)
	// A Kubernetes label value (may be empty).
	labelValueRE = regexp.MustCompile(`^((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

func isDNSLabel(s string) bool { return len(s) <= dns1123LabelMax && dnsLabelRE.MatchString(s) }

// checkFQDN is Istio's ValidateFQDN: at most 255 characters of DNS-1123
// labels, the last not all digits; a trailing dot is allowed.
func checkFQDN(name string) error {
	if err := checkDomainLength(name); err != nil {
		return err
	}
	return checkDNSLabels(name, name)
}

func checkDomainLength(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty domain name")
	case len(name) > 255:
		return fmt.Errorf("domain name %q is longer than 255 characters", name)
	}
	return nil
}

// checkDNSLabels checks the dot-separated labels of rest, part of name.
func checkDNSLabels(name, rest string) error {
	parts := strings.Split(rest, ".")
	if tld := parts[len(parts)-1]; tld != "" {
		if _, err := strconv.Atoi(tld); err == nil {
			return fmt.Errorf("domain name %q: the last label %q must not be all digits", name, tld)
		}
	}
	for i, l := range parts {
		if i == len(parts)-1 && l == "" {
			return nil // "istio.io." is a fully qualified name
		}
		if !isDNSLabel(l) {
			return fmt.Errorf("domain name %q: label %q is not a DNS-1123 label (letters, digits and '-', at most 63, starting and ending with a letter or digit)", name, l)
		}
	}
	return nil
}

// checkWildcardDomain is Istio's ValidateWildcardDomain: an FQDN or short
// name whose first label may be a wildcard ("*", "*.example.com",
// "*-foo.example.com").
func checkWildcardDomain(name string) error {
	if err := checkDomainLength(name); err != nil {
		return err
	}
	first, rest, dotted := strings.Cut(name, ".")
	if len(first) > dns1123LabelMax || !wildcardLabelRE.MatchString(first) {
		return fmt.Errorf("host %q: label %q is not a DNS-1123 label; a '*' is allowed only at the start of the first label (\"*.example.com\")", name, first)
	}
	if dotted {
		return checkDNSLabels(name, rest)
	}
	return nil
}

// isIP reports whether s is an IP address (v4 or v6, no zone check).
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// checkIPSubnet is Istio's ValidateIPSubnet: an IP address, or a CIDR block
// when s has one "/".
func checkIPSubnet(s string) error {
	if strings.Count(s, "/") == 1 {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q is not a valid CIDR block (want e.g. 10.0.0.0/16)", s)
		}
		return nil
	}
	if !isIP(s) {
		return fmt.Errorf("%q is not an IP address or CIDR block", s)
	}
	return nil
}

// checkUnixAddress is Istio's ValidateUnixAddress for the part after
// "unix://": an absolute file path, or an abstract socket "@name".
func checkUnixAddress(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("unix socket path must not be empty")
	case strings.HasPrefix(p, "@"):
		return nil
	case !path.IsAbs(p) || strings.HasSuffix(p, "/"):
		return fmt.Errorf("unix socket %q must be an absolute path to a file (unix:///var/run/app.sock) or an abstract socket (unix://@name)", p)
	}
	return nil
}

// checkPort is Istio's ValidatePort.
func checkPort(n int64) error {
	if n < 1 || n > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", n)
	}
	return nil
}

// checkPortName is Istio's ValidatePortName: a DNS-1123 label.
func checkPortName(name string) error {
	if name == "" {
		return fmt.Errorf("port name is required")
	}
	if !isDNSLabel(name) {
		return fmt.Errorf("port name %q is not a DNS-1123 label (letters, digits and '-', at most 63, e.g. http-web)", name)
	}
	return nil
}

// checkDuration is Istio's ValidateDuration (and the CRD's "at least 1ms"
// rule): at least 1ms, in whole milliseconds.
func checkDuration(d *durationpb.Duration) error {
	if err := d.CheckValid(); err != nil {
		return fmt.Errorf("invalid duration: %v", err)
	}
	v := d.AsDuration()
	if v < time.Millisecond {
		return fmt.Errorf("duration %v must be at least 1ms", v)
	}
	if v%time.Millisecond != 0 {
		return fmt.Errorf("duration %v must be a whole number of milliseconds", v)
	}
	return nil
}

// validateDuration reports checkDuration's error at path when d is set.
func validateDuration(is *issues, path string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := checkDuration(d); err != nil {
		is.errf(path, "%v", err)
	}
}

// validateLabels is Istio's labels.Instance.Validate: Kubernetes label keys
// (an optional DNS prefix and '/', then at most 63 characters) and values.
func validateLabels(is *issues, path string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		p := path + "." + k
		if err := checkLabelKey(k); err != nil {
			is.errf(p, "%v", err)
		}
		if v := labels[k]; !labelValueRE.MatchString(v) {
			is.errf(p, "label value %q is invalid: letters, digits, '-', '_' and '.', starting and ending with a letter or digit", v)
		}
	}
}

func checkLabelKey(k string) error {
	m := labelKeyRE.FindStringSubmatch(k)
	switch {
	case m == nil:
		return fmt.Errorf("label key %q is invalid: want [dns.prefix/]name, the name made of letters, digits, '-', '_' and '.'", k)
	case len(m[1]) > 0 && len(m[1])-1 > 253:
		return fmt.Errorf("label key %q: the prefix is longer than 253 characters", k)
	case len(m[2]) > dns1123LabelMax:
		return fmt.Errorf("label key %q: the name is longer than 63 characters", k)
	}
	return nil
}

// validateSelectorLabels checks a workloadSelector's labels as Istio does
// (no empty key, no '*' anywhere) and as its CRD does (values of at most
// 63 characters); the warning for an empty selector is the caller's.
func validateSelectorLabels(is *issues, path string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		v := labels[k]
		p := path + "." + k
		switch {
		case k == "":
			is.errf(p, "a selector label key must not be empty")
		case strings.Contains(k, "*") || strings.Contains(v, "*"):
			is.errf(p, "wildcards are not supported in selectors (%s=%s): a selector matches label values exactly", k, v)
		case len(v) > dns1123LabelMax:
			is.errf(p, "label value is longer than 63 characters")
		}
	}
}

// validateExportTo is Istio's validateExportTo: each entry is ".", "*", a
// namespace name, or (ServiceEntry only) "~"; no duplicates ("." is the
// resource's own namespace ns, when known); "*" and "~" stand alone.
func validateExportTo(is *issues, ns, path string, exportTo []string, serviceEntry bool) {
	seen := map[string]int{}
	for i, e := range exportTo {
		p := fmt.Sprintf("%s[%d]", path, i)
		key := e
		if e == "." && ns != "" {
			key = ns
		}
		if first, dup := seen[key]; dup {
			is.errf(p, "duplicate exportTo entry %q (also %s[%d]; \".\" is the resource's own namespace)", e, path, first)
			continue
		}
		seen[key] = i
		switch {
		case e == "." || e == "*":
		case e == "~":
			if !serviceEntry {
				is.errf(p, "exportTo \"~\" (no one) is allowed only on ServiceEntries")
			}
		case !isDNSLabel(e):
			is.errf(p, "exportTo entry %q must be \".\", \"*\" or a namespace name", e)
		}
	}
	if len(exportTo) > 1 {
		if _, ok := seen["*"]; ok {
			is.errf(path, "\"*\" (every namespace) cannot be combined with other exportTo entries")
		}
		if _, ok := seen["~"]; ok {
			is.errf(path, "\"~\" (no one) cannot be combined with other exportTo entries")
		}
	}
}

// hostsOverlap is Istio's host.Name.Matches: equal names, or a wildcard
// covering the other name.
func hostsOverlap(a, b string) bool {
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	switch {
	case aw && bw:
		if len(a) < len(b) {
			return strings.HasSuffix(b[1:], a[1:])
		}
		return strings.HasSuffix(a[1:], b[1:])
	case aw:
		return strings.HasSuffix(b, a[1:])
	case bw:
		return strings.HasSuffix(a, b[1:])
	}
	return a == b
}

// hostSubsetOf is Istio's host.Name.SubsetOf: every name a matches, b
// matches too.
func hostSubsetOf(a, b string) bool {
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	switch {
	case aw && bw:
		return len(a) >= len(b) && strings.HasSuffix(a[1:], b[1:])
	case aw:
		return false
	case bw:
		return strings.HasSuffix(a, b[1:])
	}
	return a == b
}

// checkMaxLen reports a string longer than the CRD schema allows.
func checkMaxLen(is *issues, path, what, s string, limit int) {
	if len(s) > limit {
		is.errf(path, "%s is %d characters long; at most %d are allowed", what, len(s), limit)
	}
}

// checkMaxItems reports a list or map with more entries than the CRD
// schema allows.
func checkMaxItems(is *issues, path, what string, n, limit int) {
	if n > limit {
		is.errf(path, "%d %s; at most %d are allowed", n, what, limit)
	}
}
