package xdsload

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the report as a compact table for people.
func (r *Report) WriteTable(w io.Writer) error {
	mode := "explicit"
	if r.Captured {
		mode = "captured"
	}
	var b strings.Builder
	scope := r.Scope
	if scope == "" {
		scope = ScopeMesh
	}
	source := r.EndpointSource
	if source == "" {
		source = SourceFile
	}
	decode := r.Decode
	if decode == "" {
		decode = DecodeEnvelope
	}
	protocol := string(r.Protocol) + " ADS"
	if r.VHDS {
		protocol += " with VHDS"
	}
	conns := fmt.Sprintf("%d connections", r.Conns)
	if r.TLS {
		conns = fmt.Sprintf("%d TLS connections", r.Conns)
	}
	fmt.Fprintf(&b, "xDS load: %d proxies (%s, %s decode, %s, %s scope, %s), %d services x %d endpoints (%d of them spare, in %s)\n",
		r.Proxies, protocol, decode, mode, scope, conns, r.Services, r.Endpoints+r.Spare, r.Spare, source)
	if r.Aborted != "" {
		fmt.Fprintf(&b, "ABORTED: %s\n", r.Aborted)
	}
	fmt.Fprintf(&b, "connect: %d of %d ACKed a complete config in %v; control plane %.1f CPU-s, RSS %.0f MiB (peak %.0f), load %.2f; per proxy %.0f responses, %.0f resources, %.0f KiB\n\n",
		r.Connect.Synced, r.Proxies, r.Connect.Duration.Round(time.Millisecond), r.Connect.CPUSeconds, r.Connect.After.RSSMiB, r.Connect.After.PeakRSSMiB,
		r.Connect.After.Load1, r.Connect.PerProxy.Responses, r.Connect.PerProxy.Resources, r.Connect.PerProxy.KiB)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "change\ttimed in\tn\tproxies\tACK p50\tp99\tmax\trecv p50\tp99\tmax\tnot ACKed\tresp/proxy\tres/proxy\tKiB/proxy\tCP CPU-s\tsim CPU-s\tRSS MiB\tload\t")
	for _, c := range []Change{r.Config, r.Endpoint} {
		if c.Changes == 0 || len(c.PerChangeMax) == 0 {
			continue // not reached
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%.0f\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t\n", c.Kind, c.Type, c.Changes, c.Watched,
			ms(c.Latency.P50), ms(c.Latency.P99), ms(c.Latency.Max), ms(c.Received.P50), ms(c.Received.P99), ms(c.Received.Max), c.Latency.Missing,
			c.PerProxy.Responses, c.PerProxy.Resources, c.PerProxy.KiB, c.CPUSeconds, c.SimCPUSeconds, c.After.RSSMiB, c.After.Load1)
	}
	if s := r.Storm; s != nil {
		fmt.Fprintf(tw, "storm %d/s for %v (after last)\tEDS\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%.0f\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t\n", s.Rate, s.Duration, s.Changes, s.Converge.N,
			ms(s.Converge.P50), ms(s.Converge.P99), ms(s.Converge.Max), ms(s.ConvergeReceived.P50), ms(s.ConvergeReceived.P99), ms(s.ConvergeReceived.Max), s.Converge.Missing,
			s.PerProxy.Responses, s.PerProxy.Resources, s.PerProxy.KiB, s.CPUSeconds, s.After.SimCPUSeconds-s.Before.SimCPUSeconds, s.After.RSSMiB, s.After.Load1)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if s := r.Storm; s != nil {
		fmt.Fprintf(&b, "\nstorm: RSS before %.0f MiB, max %.0f MiB, after %.0f MiB; per proxy %.1f responses (max %d): %s\n",
			s.Before.RSSMiB, s.MaxRSSMiB, s.After.RSSMiB, s.PerProxy.Responses, s.PerProxy.MaxResponses, r.byType(s.PerProxy))
	}
	if s := r.Rest; s != nil {
		fmt.Fprintf(&b, "\nrest: %v with nothing changing: control plane RSS %.0f MiB before, %.0f MiB after, %.1f CPU-s; RSS every %v: %s\n",
			s.Duration, s.Before.RSSMiB, s.After.RSSMiB, s.CPUSeconds, RestSample, joinMiB(s.RSSMiB))
	}
	fmt.Fprintf(&b, "final: control plane %.1f CPU-s in all, RSS %.0f MiB (peak %.0f); simulator %.1f CPU-s, RSS %.0f MiB (peak %.0f; %.0f after connect); load %.2f\n",
		r.Final.CPUSeconds, r.Final.RSSMiB, r.Final.PeakRSSMiB, r.Final.SimCPUSeconds, r.Final.SimRSSMiB, r.Final.SimPeakRSSMiB, r.Connect.After.SimRSSMiB, r.Final.Load1)
	if r.Reconnects > 0 {
		fmt.Fprintf(&b, "reconnects: %d streams were reopened\n", r.Reconnects)
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(&b, "profile: %s\n", p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// joinMiB lists samples of MiB, "412 398 260".
func joinMiB(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " ")
}

// byType lists the mean responses per type of p, "CDS 0.0, LDS 0.0, EDS
// 1.0, RDS 0.0", with VHDS only when the proxies took it.
func (r *Report) byType(p Pushed) string {
	n := len(shortTypes)
	if !r.VHDS {
		n = vhdsIndex
	}
	parts := make([]string, 0, n)
	for t := range n {
		parts = append(parts, fmt.Sprintf("%s %.1f", shortTypes[t], p.ByType[t]))
	}
	return strings.Join(parts, ", ")
}

// ms formats d for the table: milliseconds under a second, else seconds.
func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
