package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/proxyview"
)

func newProxyConfigCmd() *cobra.Command {
	var c proxyview.Client
	cmd := &cobra.Command{
		Use:   "proxy-config listeners|routes|clusters|endpoints PROXY",
		Short: "Show a proxy's listeners, routes, clusters or endpoints from its config dump",
		Long: `Show one section of a proxy's applied xDS config (its admin GET /config_dump) as
a table, or with -o json as the raw resources.

PROXY is the proxy's admin address (host:port), or a node id, workload.namespace
or workload name, which is looked up on the control plane (--control-plane).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.PersistentFlags().StringVar(&c.ControlPlane, "control-plane", proxyview.DefaultControlPlane,
		"the control plane's status address (weft serve --status-address), to find PROXY by name")
	for _, s := range []struct {
		section, short string
		aliases        []string
		flags          func(*cobra.Command, *proxyview.Filter)
	}{
		{proxyview.Listeners, "Listeners: address, port, direction, filter chains and where they send traffic", []string{"listener", "l"},
			func(cmd *cobra.Command, f *proxyview.Filter) {
				cmd.Flags().StringVar(&f.Address, "address", "", "only listeners on this IP")
				cmd.Flags().Uint32Var(&f.Port, "port", 0, "only listeners on this port")
				cmd.Flags().StringVar(&f.Type, "type", "", "only filter chains of this type: HTTP or TCP")
			}},
		{proxyview.Routes, "Routes in match order: virtual host, domains, match, destinations with weights, timeout, retries", []string{"route", "r"},
			func(cmd *cobra.Command, f *proxyview.Filter) {
				cmd.Flags().StringVar(&f.Name, "name", "", "only the route configuration with this name (e.g. http_proxy)")
			}},
		{proxyview.Clusters, "Clusters: service FQDN, port, subset, direction, type, load balancing, circuit breakers, outlier detection", []string{"cluster", "c"},
			func(cmd *cobra.Command, f *proxyview.Filter) {
				cmd.Flags().StringVar(&f.FQDN, "fqdn", "", "only clusters of this service host")
				cmd.Flags().Uint32Var(&f.Port, "port", 0, "only clusters of this port")
				cmd.Flags().StringVar(&f.Subset, "subset", "", "only clusters of this subset")
				cmd.Flags().StringVar(&f.Direction, "direction", "", "only inbound or outbound clusters")
			}},
		{proxyview.Endpoints, "Endpoints: address, health, outlier state, cluster, weight, locality", []string{"endpoint", "ep"},
			func(cmd *cobra.Command, f *proxyview.Filter) {
				cmd.Flags().StringVar(&f.Address, "address", "", "only endpoints with this IP")
				cmd.Flags().Uint32Var(&f.Port, "port", 0, "only endpoints with this port")
				cmd.Flags().StringVar(&f.Cluster, "cluster", "", "only endpoints of this cluster (e.g. outbound|8080|v1|backend.default.svc.cluster.local)")
				cmd.Flags().StringVar(&f.Status, "status", "", "only endpoints with this health status (HEALTHY, UNHEALTHY, …)")
			}},
	} {
		o := proxyview.ConfigOptions{Section: s.section}
		sub := &cobra.Command{
			Use:     s.section + " PROXY",
			Aliases: s.aliases,
			Short:   s.short,
			Args: func(_ *cobra.Command, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("proxy-config %s: want one PROXY (admin host:port, node id, workload.namespace or workload name), got %d arguments", s.section, len(args))
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				o.Proxy = args[0]
				return c.Config(cmd.Context(), cmd.OutOrStdout(), o)
			},
		}
		sub.Flags().StringVarP(&o.Output, "output", "o", proxyview.OutputTable, "output format: table, or json for the section's raw resources")
		s.flags(sub, &o.Filter)
		cmd.AddCommand(sub)
	}
	return cmd
}
