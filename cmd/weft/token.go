package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/controlplane"
)

func newTokenCmd() *cobra.Command {
	var (
		req          controlplane.TokenRequest
		ttl          time.Duration
		controlPlane string
		rootOut      string
	)
	cmd := &cobra.Command{
		Use:   "token --namespace NS --service-account SA",
		Short: "Issue a single-use bootstrap token for one workload identity, for weft-proxy --token-file",
		Long: `Ask the running control plane (its status address, on this host) for a
bootstrap token for the workload identity
spiffe://<trust-domain>/ns/<NS>/sa/<SA>, and print it on stdout.

A weft-proxy with --namespace NS --service-account SA presents it once to
get its first certificate from the mesh CA, and renews with that certificate
afterwards. The token is single-use and expires after --ttl. Whoever holds
it can take that identity until then: hand it to the workload only, as a
file it alone can read.

--root-cert-out also writes the mesh's trust root, for weft-proxy --root-cert.`,
		Example: `  weft token --namespace default --service-account backend --root-cert-out root-cert.pem > backend.token
  weft-proxy --root-cert root-cert.pem --token-file backend.token --service-account backend ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Namespace == "" || req.ServiceAccount == "" {
				return fmt.Errorf("--namespace and --service-account are required")
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl %v: must be positive", ttl)
			}
			req.TTL = ttl.String()
			c := statusClient()
			base := "http://" + controlPlane
			if rootOut != "" {
				root, err := fetch(c, http.MethodGet, base+"/debug/root-cert", nil)
				if err != nil {
					return fmt.Errorf("control plane %s: %w", controlPlane, err)
				}
				if err := os.WriteFile(rootOut, root, 0o644); err != nil {
					return fmt.Errorf("--root-cert-out: %w", err)
				}
			}
			body, _ := json.Marshal(req)
			out, err := fetch(c, http.MethodPost, base+"/debug/token", body)
			if err != nil {
				return fmt.Errorf("control plane %s: %w", controlPlane, err)
			}
			var tr controlplane.TokenResponse
			if err := json.Unmarshal(out, &tr); err != nil || tr.Token == "" {
				return fmt.Errorf("control plane %s: /debug/token answered %q", controlPlane, out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tr.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "bootstrap token for %s, single use, expires %s\n", tr.Identity, tr.Expires.Local().Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Namespace, "namespace", "", "the workload's namespace (weft-proxy --namespace)")
	f.StringVar(&req.ServiceAccount, "service-account", "", "the workload's service account (weft-proxy --service-account)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used (at most 24h)")
	f.StringVar(&controlPlane, "control-plane", controlplane.DefaultStatusAddress, "the control plane's status address (weft serve --status-address)")
	f.StringVar(&rootOut, "root-cert-out", "", "also write the mesh's trust root (PEM) to this `file`, for weft-proxy --root-cert")
	return cmd
}

// fetch sends one request to the status endpoint and returns the body of
// a 200 answer; anything else is an error with the answer in it.
func fetch(c *http.Client, method, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, req.URL.Path, resp.Status, strings.TrimSpace(string(out)))
	}
	return out, nil
}
