package proxyview

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/xds/server"
)

// WriteStatusTable writes one row per proxy with each xDS type's state and
// the version the control plane holds for it, then the error of every
// standing NACK.
func WriteStatusTable(w io.Writer, dp controlplane.DebugProxies, cp string) error {
	if len(dp.Proxies) == 0 {
		_, err := fmt.Fprintf(w, "No proxy is connected to the control plane at %s.\n", cp)
		return err
	}
	proxies := slices.Clone(dp.Proxies)
	names := uniqueNames(proxies)
	order := make([]int, len(proxies))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	// The types of the proxy that has the most: VHDS is served only to
	// proxies that take it; the others show "-" there.
	var types []string
	for _, p := range proxies {
		if len(p.Types) > len(types) {
			types = types[:0]
			for _, ts := range p.Types {
				types = append(types, ts.Type)
			}
		}
	}
	header := append([]string{"NAME"}, types...)
	header = append(header, "MESH VERSION", "ADMIN")
	t := newTable(w, header...)
	type nack struct {
		proxy, err string
		types      []string
	}
	var nacks []nack
	for _, i := range order {
		p := proxies[i]
		row := []string{names[i]}
		for _, typ := range types {
			j := slices.IndexFunc(p.Types, func(ts server.TypeStatus) bool { return ts.Type == typ })
			if j < 0 {
				row = append(row, "-")
				continue
			}
			ts := p.Types[j]
			cell := string(ts.State)
			if ts.State != server.NotSent && ts.Current != "" {
				cell += " " + short(ts.Current)
			}
			row = append(row, cell)
			if ts.State == server.NACKed && ts.LastNACK != nil {
				msg := oneLine(ts.LastNACK.Error)
				typ := ts.Type + " " + short(ts.LastNACK.Version)
				if j := slices.IndexFunc(nacks, func(n nack) bool { return n.proxy == names[i] && n.err == msg }); j >= 0 {
					nacks[j].types = append(nacks[j].types, typ)
				} else {
					nacks = append(nacks, nack{proxy: names[i], err: msg, types: []string{typ}})
				}
			}
		}
		mv := p.MeshVersion
		if mv != "" && mv != dp.Version {
			mv += " (current " + dp.Version + ")"
		}
		row = append(row, mv, p.AdminAddress)
		t.row(row...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	for i, n := range nacks {
		if i == 0 {
			fmt.Fprintln(w)
		}
		if _, err := fmt.Fprintf(w, "%s NACKED %s: %s\n", n.proxy, strings.Join(n.types, ", "), n.err); err != nil {
			return err
		}
	}
	return nil
}

// uniqueNames names each proxy workload.namespace, or by node id where
// several share that name.
func uniqueNames(ps []server.ProxyStatus) []string {
	count := map[string]int{}
	for _, p := range ps {
		count[displayName(p)]++
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = displayName(p)
		if count[out[i]] > 1 {
			out[i] = p.Node
		}
	}
	return out
}

// WriteProxyStatus writes one proxy's identity and, per xDS type, the
// version the control plane holds, the last sent and the one the proxy
// runs, with times relative to now, then its last NACK of each type.
func WriteProxyStatus(w io.Writer, p server.ProxyStatus, meshVersion string, now time.Time) error {
	var labels []string
	for _, k := range sortedKeys(p.Labels) {
		labels = append(labels, k+"="+p.Labels[k])
	}
	mesh := p.MeshVersion
	if mesh != meshVersion {
		mesh += " (the control plane is at " + meshVersion + ")"
	}
	kv := newTable(w)
	for _, r := range [][2]string{
		{"NAME:", displayName(p)},
		{"NODE:", p.Node},
		{"LABELS:", strings.Join(labels, ", ")},
		{"IPS:", strings.Join(p.IPs, ", ")},
		{"SERVICE ACCOUNT:", p.ServiceAccount},
		{"LOCALITY:", p.Locality},
		{"ADMIN:", p.AdminAddress},
		{"CONNECTED:", fmt.Sprintf("%s, %d stream(s)", ago(p.ConnectedAt, now), p.Streams)},
		{"MESH VERSION:", mesh},
	} {
		kv.row(r[0], r[1])
	}
	if err := kv.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t := newTable(w, "TYPE", "STATE", "CONTROL PLANE", "SENT", "PROXY RUNS (ACKED)")
	withAge := func(v string, at time.Time) string {
		if v == "" {
			return ""
		}
		return v + " " + ago(at, now)
	}
	// A proxy rejects a set: every type of it carries the same error.
	type nackGroup struct {
		err, stands string
		versions    []string
		count       int
		last        time.Time
	}
	var groups []*nackGroup
	for _, ts := range p.Types {
		t.row(ts.Type, string(ts.State), ts.Current, withAge(ts.Sent, ts.SentAt), withAge(ts.Acked, ts.AckedAt))
		n := ts.LastNACK
		if n == nil {
			continue
		}
		var stands string
		switch {
		case ts.State == server.NACKed:
			stands = "standing: the proxy runs its last accepted version"
		case n.Version == ts.Current && ts.State == server.Synced:
			stands = "since accepted"
		case n.Version == ts.Current:
			stands = "sent again, not yet answered"
		default:
			stands = "superseded: the control plane holds another version now"
		}
		msg := oneLine(n.Error)
		i := slices.IndexFunc(groups, func(g *nackGroup) bool { return g.err == msg && g.stands == stands })
		if i < 0 {
			groups = append(groups, &nackGroup{err: msg, stands: stands})
			i = len(groups) - 1
		}
		g := groups[i]
		g.versions = append(g.versions, ts.Type+" "+n.Version)
		g.count = max(g.count, n.Count)
		if n.Last.After(g.last) {
			g.last = n.Last
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(groups) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nLAST NACK")
	for _, g := range groups {
		if _, err := fmt.Fprintf(w, "%s: %d time(s), last %s (%s):\n  %s\n",
			strings.Join(g.versions, ", "), g.count, ago(g.last, now), g.stands, g.err); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
