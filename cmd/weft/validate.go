package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/analyze"
	"weft.dev/weft/internal/config"
)

func newValidateCmd() *cobra.Command {
	var suffix, rootNS string
	cmd := &cobra.Command{
		Use:   "validate DIR",
		Short: "Check a config directory and print every error and warning",
		Long: `Check a config directory as the control plane would load it on a fresh
start, and print every diagnostic: file:line:column, resource, field path and
message. Hosts and endpoints the files do not declare may come from another
registry, so they are warnings here. The exit status is 1 when there is an
error. weft analyze goes further (routes that never match, subsets with no
endpoints, ...).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := config.ReadDir(args[0])
			if err != nil {
				return err
			}
			// Diagnostics are this command's output; the store need not log them too.
			snap := config.NewStore(config.Options{DomainSuffix: suffix, RootNamespace: rootNS, Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
			for _, d := range snap.Diagnostics {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", d.Severity, d.Error())
			}
			errs, warns, infos := analyze.Count(snap.Diagnostics)
			counts := fmt.Sprintf("%d VirtualService, %d DestinationRule, %d ServiceEntry, %d WorkloadEntry",
				len(snap.VirtualServices), len(snap.DestinationRules), len(snap.ServiceEntries), len(snap.WorkloadEntries))
			if n := len(snap.PeerAuthentications) + len(snap.AuthorizationPolicies) + len(snap.RequestAuthentications); n > 0 {
				counts += fmt.Sprintf(", %d PeerAuthentication, %d AuthorizationPolicy, %d RequestAuthentication",
					len(snap.PeerAuthentications), len(snap.AuthorizationPolicies), len(snap.RequestAuthentications))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s; %d error(s), %d warning(s)", counts, errs, warns)
			if infos > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), ", %d info", infos)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			if errs > 0 {
				return fmt.Errorf("%s: %d error(s)", args[0], errs)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&suffix, "domain-suffix", "cluster.local", "cluster domain used to expand short host names")
	cmd.Flags().StringVar(&rootNS, "root-namespace", "istio-system", "namespace of the mesh-wide security policies, as weft serve --root-namespace")
	return cmd
}
