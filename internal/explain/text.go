package explain

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"weft.dev/weft/internal/guard"
)

// WriteText renders an explanation for people:
//
//	GET http://backend/ from proxy frontend~... with x-canary: true
//	  outcome:  forwarded: 100% to subset v2 of backend... (1 healthy endpoint(s))
//	  route:    VirtualService default/backend (backend.yaml:18), spec.http[0] "canary-header" at backend.yaml:23:5
//	  ...
func (e *Explanation) WriteText(w io.Writer) error {
	var b strings.Builder
	req := e.Request
	fmt.Fprintf(&b, "%s http://%s%s from proxy %s", req.Method, req.Host, req.Path, e.Proxy)
	if len(req.Headers) > 0 {
		keys := make([]string, 0, len(req.Headers))
		for k := range req.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var hs []string
		for _, k := range keys {
			hs = append(hs, k+": "+req.Headers[k])
		}
		fmt.Fprintf(&b, " with %s", strings.Join(hs, ", "))
	}
	b.WriteString("\n")
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "  %-14s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	line("outcome", "%s", e.Outcome)
	if e.VirtualHost != "" {
		line("virtual host", "%s", e.VirtualHost)
	}
	if r := e.Route; r != nil {
		if r.Rule != "" {
			line("route", "%s, %s at %s", r.Source, r.Rule, r.At)
		} else {
			line("route", "%s", r.Source)
		}
		if r.Match != "" {
			line("matched by", "%s", r.Match)
		}
		line("timeout", "%s", r.Timeout)
		line("retries", "%s", r.Retries)
		for _, p := range r.Policies {
			line("policy", "%s", p)
		}
		for _, d := range r.Destinations {
			what := d.Host
			if d.Subset != "" {
				what = "subset " + d.Subset + " of " + d.Host
			}
			fmt.Fprintf(&b, "  %s  %s port %d (cluster %s)\n", padLeft(guard.Percent(d.Share), 5), what, d.Port, d.Cluster)
			if d.SubsetFrom != "" {
				fmt.Fprintf(&b, "         subset from %s\n", d.SubsetFrom)
			}
			if d.Policy != "" {
				fmt.Fprintf(&b, "         %s", d.Policy)
				if len(d.PolicyFrom) > 0 {
					fmt.Fprintf(&b, " (from %s)", strings.Join(d.PolicyFrom, ", "))
				}
				b.WriteString("\n")
			}
			if len(d.Endpoints) == 0 {
				b.WriteString("         no endpoints\n")
			}
			for _, ep := range d.Endpoints {
				fmt.Fprintf(&b, "         %-21s %s", ep.Address, ep.Health)
				if ep.Workload != "" {
					fmt.Fprintf(&b, "  %s", ep.Workload)
				}
				if ep.Locality != "" {
					fmt.Fprintf(&b, "  %s", ep.Locality)
				}
				b.WriteString("\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func padLeft(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat(" ", n-len(s)) + s
}
