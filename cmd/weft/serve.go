package main

import (
	"time"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/controlplane"
)

func newServeCmd() *cobra.Command {
	var o controlplane.Options
	cmd := &cobra.Command{
		Use:   "serve --config DIR",
		Short: "Run the control plane: watch Istio config in DIR and serve xDS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger(cmd)
			if err != nil {
				return err
			}
			o.Logger = log
			cp, err := controlplane.New(o)
			if err != nil {
				return err
			}
			status := "disabled"
			if a := cp.StatusAddr(); a != nil {
				status = a.String()
			}
			log.Info("control plane serving", "xds", cp.XDSAddr().String(), "status", status, "config", o.ConfigDir)
			return cp.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ConfigDir, "config", "", "directory of Istio YAML (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, PeerAuthentication, AuthorizationPolicy, RequestAuthentication), watched for changes")
	f.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:15010", "address the ADS (gRPC) server listens on")
	f.StringVar(&o.StatusAddress, "status-address", "127.0.0.1:15014", "address of the status endpoint (/status, /metrics, /debug/proxies, /debug/analyze, /debug/explain); \"-\" disables it")
	f.StringVar(&o.DomainSuffix, "domain-suffix", "cluster.local", "cluster domain used to expand short host names")
	f.StringVar(&o.RootNamespace, "root-namespace", "istio-system", "namespace whose PeerAuthentication, AuthorizationPolicy and RequestAuthentication without a selector apply to the whole mesh")
	f.DurationVar(&o.JWKSRefresh, "jwks-refresh-interval", 20*time.Minute, "how often the JWT keys of a RequestAuthentication's jwksUri are fetched again")
	f.DurationVar(&o.Debounce, "debounce", 0, "quiet period before a config change is pushed (0 = default 100ms)")
	f.DurationVar(&o.DebounceMax, "debounce-max", 0, "longest a change waits during a burst of edits (0 = default 1s)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
