package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/analyze"
	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
)

func newAnalyzeCmd() *cobra.Command {
	var (
		suffix, rootNS, controlPlane, output string
	)
	cmd := &cobra.Command{
		Use:   "analyze [DIR]",
		Short: "Find config mistakes: conflicts, unreachable routes, traffic to destinations with no endpoints, ...",
		Long: `Analyze config as istioctl analyze does, and say what would go wrong.

With DIR, the files are analyzed on their own: hosts and endpoints they do
not declare may come from another registry, so findings about them are
warnings. With --control-plane, the running control plane analyzes the
config in force against its live registry.

Every finding has a stable code (WF0xxx, see docs/operations.md), a severity,
the file, line and field. The exit status is 1 when there is an error.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				diags []config.Diagnostic
				what  string
			)
			switch {
			case len(args) == 1 && cmd.Flags().Changed("control-plane"):
				return fmt.Errorf("give either DIR or --control-plane, not both")
			case len(args) == 1:
				what = args[0]
				dir, err := config.ReadDir(args[0])
				if err != nil {
					return err
				}
				diags = analyzeFiles(dir, suffix, rootNS)
			default:
				what = controlPlane
				var err error
				if diags, err = fetchAnalysis(controlPlane); err != nil {
					return err
				}
			}
			if err := printDiagnostics(cmd.OutOrStdout(), diags, output); err != nil {
				return err
			}
			if errs, _, _ := analyze.Count(diags); errs > 0 {
				return fmt.Errorf("%s: %d error(s)", what, errs)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&suffix, "domain-suffix", "cluster.local", "cluster domain used to expand short host names (with DIR)")
	f.StringVar(&rootNS, "root-namespace", "istio-system", "namespace of the mesh-wide security policies, as weft serve --root-namespace (with DIR)")
	f.StringVar(&controlPlane, "control-plane", "127.0.0.1:15014", "status address of a running control plane (weft serve --status-address)")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// analyzeFiles loads a directory on its own and analyzes it.
func analyzeFiles(dir *config.Dir, suffix, rootNS string) []config.Diagnostic {
	snap := config.NewStore(config.Options{DomainSuffix: suffix, RootNamespace: rootNS, Logger: slog.New(slog.DiscardHandler)}).LoadDir(dir)
	m := mesh.Build(snap, static.Build(snap, suffix), mesh.Options{DomainSuffix: suffix, RootNamespace: rootNS})
	return analyze.Mesh(m, analyze.Options{FilesOnly: true})
}

// fetchAnalysis asks a running control plane for its analysis.
func fetchAnalysis(addr string) ([]config.Diagnostic, error) {
	c := statusClient()
	resp, err := c.Get("http://" + addr + "/debug/analyze")
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control plane %s: /debug/analyze answered %s: %s", addr, resp.Status, body)
	}
	var out struct {
		Diagnostics []config.Diagnostic `json:"diagnostics"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("control plane %s: /debug/analyze: %w", addr, err)
	}
	return out.Diagnostics, nil
}

// printDiagnostics writes findings one per line, istioctl analyze style:
//
//	Error [WF0301] routes.yaml:26:44 VirtualService default/backend spec.http[1].route[0].destination.subset: subset "v9" ...
func printDiagnostics(w io.Writer, ds []config.Diagnostic, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if ds == nil {
			ds = []config.Diagnostic{}
		}
		return enc.Encode(ds)
	case "text", "":
	default:
		return fmt.Errorf("--output %q: want text or json", format)
	}
	for _, d := range ds {
		where := d.File
		if d.Line > 0 {
			where += fmt.Sprintf(":%d:%d", d.Line, d.Column)
		}
		line := fmt.Sprintf("%s [%s] %s", severityWord(d.Severity), d.Code, where)
		if d.Resource != "" {
			line += " " + d.Resource
		}
		if d.Path != "" {
			line += " " + d.Path
		}
		fmt.Fprintf(w, "%s: %s\n", line, d.Message)
	}
	errs, warns, infos := analyze.Count(ds)
	if len(ds) == 0 {
		fmt.Fprintln(w, "No problems found.")
		return nil
	}
	fmt.Fprintf(w, "%d error(s), %d warning(s), %d info\n", errs, warns, infos)
	return nil
}

func severityWord(s config.Severity) string {
	switch s {
	case config.SeverityError:
		return "Error"
	case config.SeverityWarning:
		return "Warning"
	}
	return "Info"
}

// statusClient talks to a control plane's status endpoint. It ignores
// http_proxy: the demo sets it to a sidecar, which must not carry the
// operator's own requests.
func statusClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}
