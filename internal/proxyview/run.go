package proxyview

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Output formats.
const (
	OutputTable = "table"
	OutputJSON  = "json"
)

func checkOutput(o string) error {
	if o != "" && o != OutputTable && o != OutputJSON {
		return fmt.Errorf("output %q: want table or json", o)
	}
	return nil
}

// StatusOptions configure Client.Status.
type StatusOptions struct {
	// Proxy, when set, shows that one proxy in detail (node id,
	// workload.namespace or workload name).
	Proxy string
	// Output is "table" (default) or "json" (GET /debug/proxies as it is,
	// or the one proxy's entry).
	Output string
	// Now is the clock for "… ago"; default time.Now.
	Now func() time.Time
}

// Status is `weft proxy-status`: the connected proxies' xDS sync state.
func (c *Client) Status(ctx context.Context, w io.Writer, o StatusOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	dp, err := c.Proxies(ctx)
	if err != nil {
		return err
	}
	if o.Proxy == "" {
		if o.Output == OutputJSON {
			return writeJSON(w, dp)
		}
		return WriteStatusTable(w, dp, c.controlPlane())
	}
	ps, err := find(dp.Proxies, o.Proxy, c.controlPlane())
	if err != nil {
		return err
	}
	if o.Output == OutputJSON {
		return writeJSON(w, ps)
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	return WriteProxyStatus(w, ps, dp.Version, now())
}

// Sections of a config dump.
const (
	Listeners = "listeners"
	Routes    = "routes"
	Clusters  = "clusters"
	Endpoints = "endpoints"
)

// ConfigOptions configure Client.Config.
type ConfigOptions struct {
	Section string // Listeners, Routes, Clusters or Endpoints
	// Proxy is an admin address (host:port), or a node id,
	// workload.namespace or workload name known to the control plane.
	Proxy  string
	Output string // "table" (default) or "json": the section's raw resources
	Filter Filter
}

// Config is `weft proxy-config SECTION PROXY`: one section of a proxy's
// config dump as a table, or as JSON.
func (c *Client) Config(ctx context.Context, w io.Writer, o ConfigOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	if !slices.Contains([]string{Listeners, Routes, Clusters, Endpoints}, o.Section) {
		return fmt.Errorf("section %q: want listeners, routes, clusters or endpoints", o.Section)
	}
	t, err := c.Resolve(ctx, o.Proxy)
	if err != nil {
		return err
	}
	d, err := c.ConfigDump(ctx, t)
	if err != nil {
		return err
	}
	return WriteSection(w, d, o.Section, o.Output, o.Filter)
}

// WriteSection renders one section of d as a table or as JSON.
func WriteSection(w io.Writer, d *Dump, section, output string, f Filter) error {
	if output == OutputJSON {
		return writeJSON(w, rawSection(d, section, f))
	}
	switch section {
	case Listeners:
		return WriteListeners(w, d, f)
	case Routes:
		return WriteRoutes(w, d, f)
	case Clusters:
		return WriteClusters(w, d, f)
	case Endpoints:
		return WriteEndpoints(w, d, f)
	}
	return fmt.Errorf("section %q: want listeners, routes, clusters or endpoints", section)
}

// rawSection is the section's resources that pass the filter, as the
// proxy dumped them.
func rawSection(d *Dump, section string, f Filter) []json.RawMessage {
	out := []json.RawMessage{}
	switch section {
	case Listeners:
		for _, it := range d.Listeners {
			if f.matchListener(it.Msg) {
				out = append(out, it.Raw)
			}
		}
	case Routes:
		for _, it := range d.Routes {
			if f.Name == "" || f.Name == it.Msg.GetName() {
				out = append(out, it.Raw)
			}
		}
	case Clusters:
		for _, it := range d.Clusters {
			if f.matchCluster(it.Msg) {
				out = append(out, it.Raw)
			}
		}
	case Endpoints:
		for _, it := range d.Endpoints {
			if (f.Cluster == "" || f.Cluster == it.Msg.GetClusterName()) && anyEndpoint(it.Msg, f) {
				out = append(out, it.Raw)
			}
		}
	}
	return out
}

func anyEndpoint(cla *endpoint.ClusterLoadAssignment, f Filter) bool {
	if f.Address == "" && f.Port == 0 && f.Status == "" {
		return true
	}
	for _, loc := range cla.GetEndpoints() {
		for _, lbe := range loc.GetLbEndpoints() {
			if f.matchEndpoint(lbe) {
				return true
			}
		}
	}
	return false
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
