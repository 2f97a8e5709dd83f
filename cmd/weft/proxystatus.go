package main

import (
	"github.com/spf13/cobra"

	"weft.dev/weft/internal/proxyview"
)

func newProxyStatusCmd() *cobra.Command {
	var (
		c proxyview.Client
		o proxyview.StatusOptions
	)
	cmd := &cobra.Command{
		Use:   "proxy-status [PROXY]",
		Short: "Show every connected proxy's xDS sync state per type (CDS, LDS, EDS, RDS; VHDS for proxies that take it)",
		Long: `Show every proxy connected to the control plane and, for each xDS type, how
its config compares with the version the control plane holds for it:

  SYNCED    the proxy runs (has ACKed) that version
  STALE     sent or about to be sent, not yet ACKed
  NACKED    the proxy rejected it and keeps running its last accepted version;
            the proxy's error is printed below the table
  NOT SENT  nothing of this type was sent (the proxy has not asked for it)

With PROXY (a node id, workload.namespace or workload name), show that proxy in
detail: its identity and admin address, and per type the version held, sent
and ACKed, with its last NACK. Reads GET /debug/proxies on the control plane's
status endpoint.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Proxy = args[0]
			}
			return c.Status(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.ControlPlane, "control-plane", proxyview.DefaultControlPlane, "the control plane's status address (weft serve --status-address)")
	f.StringVarP(&o.Output, "output", "o", proxyview.OutputTable, "output format: table or json")
	return cmd
}
