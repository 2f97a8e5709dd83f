package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/config"
)

func newValidateCmd() *cobra.Command {
	var suffix string
	cmd := &cobra.Command{
		Use:   "validate DIR",
		Short: "Check a config directory and print every error and warning",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := config.ReadDir(args[0])
			if err != nil {
				return err
			}
			// Diagnostics are this command's output; the store need not log them too.
			snap := config.NewStore(config.Options{DomainSuffix: suffix, Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
			errs := 0
			for _, d := range snap.Diagnostics {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", d.Severity, d.Error())
				if d.Severity == config.SeverityError {
					errs++
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d VirtualService, %d DestinationRule, %d ServiceEntry, %d WorkloadEntry; %d error(s), %d warning(s)\n",
				len(snap.VirtualServices), len(snap.DestinationRules), len(snap.ServiceEntries), len(snap.WorkloadEntries), errs, len(snap.Diagnostics)-errs)
			if errs > 0 {
				return fmt.Errorf("%s: %d error(s)", args[0], errs)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&suffix, "domain-suffix", "cluster.local", "cluster domain used to expand short host names")
	return cmd
}
