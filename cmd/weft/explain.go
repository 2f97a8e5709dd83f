package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/explain"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

func newExplainCmd() *cobra.Command {
	var (
		proxy, controlPlane, configDir, suffix, namespace, labels, output string
		req                                                               explain.Request
		headers                                                           []string
	)
	cmd := &cobra.Command{
		Use:   "explain --host HOST [--path PATH] [-H 'name: value'] (--proxy PROXY | --config DIR)",
		Short: "Say what a proxy does with a request: the rule that matches (file:line), destinations, endpoints, timeouts, retries, policies",
		Long: `Explain one request as a proxy sees it.

With --proxy (a node id or workload name), the running control plane
(--control-plane) explains it for that connected proxy, with the config in
force and the live registry. With --config DIR, the files are loaded on
their own and the request is explained for a sidecar in --namespace with
--labels.

The route is decided by the proxy's own router over the resources the
control plane generates for it, then traced back to the VirtualService rule
and DestinationRule it came from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req.Headers = map[string]string{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("-H %q: want 'name: value'", h)
				}
				req.Headers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
			var (
				e   *explain.Explanation
				err error
			)
			switch {
			case configDir != "" && proxy != "":
				return fmt.Errorf("give either --proxy or --config, not both")
			case configDir != "":
				lbls, lerr := parseLabels(labels)
				if lerr != nil {
					return lerr
				}
				e, err = explainFiles(configDir, suffix, contract.Identity{
					ID: "explain~" + namespace, Namespace: namespace, WorkloadName: "explain", Labels: lbls,
					IPs: []string{"127.0.0.1"}, OutboundAddress: contract.DefaultOutboundAddress,
				}, req)
			case proxy != "":
				e, err = fetchExplanation(controlPlane, proxy, req)
			default:
				return fmt.Errorf("give --proxy (a connected proxy) or --config DIR")
			}
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(e)
			}
			return e.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Host, "host", "", "the request's Host, as the application sends it (backend, backend:8080, an FQDN)")
	f.StringVar(&req.Path, "path", "/", "the request's path and query")
	f.StringVar(&req.Method, "method", "GET", "the request's method")
	f.StringArrayVarP(&headers, "header", "H", nil, "a request header, 'name: value' (repeatable)")
	f.StringVar(&proxy, "proxy", "", "a connected proxy: node id, or workload name (namespace/name)")
	f.StringVar(&controlPlane, "control-plane", "127.0.0.1:15014", "status address of the running control plane (with --proxy)")
	f.StringVar(&configDir, "config", "", "explain against the files of DIR instead of a running control plane")
	f.StringVar(&suffix, "domain-suffix", "cluster.local", "cluster domain used to expand short host names (with --config)")
	f.StringVar(&namespace, "namespace", "default", "the client sidecar's namespace (with --config)")
	f.StringVar(&labels, "labels", "", "the client sidecar's labels, k=v,k=v (with --config; sourceLabels matches use them)")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

// explainFiles explains a request against a config directory on its own.
func explainFiles(dir, suffix string, id contract.Identity, req explain.Request) (*explain.Explanation, error) {
	files, err := config.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	snap := config.NewStore(config.Options{DomainSuffix: suffix, Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
	return explain.Explain(mesh.New(snap, static.Build(snap, suffix), suffix), id, req)
}

// fetchExplanation asks the running control plane.
func fetchExplanation(addr, proxy string, req explain.Request) (*explain.Explanation, error) {
	q := url.Values{"proxy": {proxy}, "host": {req.Host}, "path": {req.Path}, "method": {req.Method}}
	for k, v := range req.Headers {
		q.Add("header", k+":"+v)
	}
	c := statusClient()
	resp, err := c.Get("http://" + addr + "/debug/explain?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control plane %s: %s", addr, strings.TrimSpace(string(body)))
	}
	var e explain.Explanation
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("control plane %s: /debug/explain: %w", addr, err)
	}
	return &e, nil
}

// parseLabels reads k=v,k=v.
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels %q: %q is not key=value", s, kv)
		}
		out[k] = v
	}
	return out, nil
}
