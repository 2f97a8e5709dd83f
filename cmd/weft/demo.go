package main

import (
	"github.com/spf13/cobra"

	"weft.dev/weft/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a gray release on one machine: control plane, sidecars and workloads on loopback",
		Long: `Run a whole mesh on loopback: the control plane on examples/canary (embedded),
a frontend and a backend v1 and v2, each an echo workload with its own
weft-proxy sidecar. Requests with x-canary: true go to v2, the rest split
90/10. The demo drives traffic, prints the split per version, then keeps
running so you can curl it and edit the config live. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The demo's own report is its interface: components only
			// speak up about problems unless asked to say more.
			if !cmd.Flags().Changed("log-level") {
				_ = cmd.Flags().Set("log-level", "warn")
			}
			log, err := logger(cmd)
			if err != nil {
				return err
			}
			o.Logger = log
			o.Out = cmd.OutOrStdout()
			return demo.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ConfigDir, "config", "", "config directory (default: a temporary copy of the embedded examples/canary)")
	f.StringVar(&o.From, "from", "frontend", "workload whose sidecar sends the demo traffic")
	f.StringVar(&o.To, "to", "backend", "service the demo traffic calls")
	f.StringVar(&o.CanaryHeader, "canary-header", "x-canary", "header that routes to the canary")
	f.IntVar(&o.Requests, "requests", 1000, "requests per measurement")
	f.DurationVar(&o.Duration, "duration", 0, "exit by itself after this long (0 = run until Ctrl-C)")
	f.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:15012", "control plane secure port (ADS and the CA over TLS)")
	f.StringVar(&o.StatusAddr, "status-address", "127.0.0.1:15014", "control plane status address")
	return cmd
}
