// Command weft is Weft's control plane and toolbox: `weft serve` runs the
// control plane, `weft demo` runs a whole mesh on loopback, `weft echo`
// runs the demo/test workload, `weft token` issues a bootstrap token for
// a proxy, `weft validate` checks a config directory
// without serving it, and `weft proxy-status` and `weft proxy-config`
// show what the connected proxies run. The data plane is the separate,
// lean `weft-proxy` binary.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/logflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "weft:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "weft",
		Short:         "Weft service mesh: control plane, demo and tools",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	logflag.Add(root.PersistentFlags())
	root.AddCommand(newServeCmd(), newDemoCmd(), newEchoCmd(), newValidateCmd(), newAnalyzeCmd(), newExplainCmd(),
		newProxyStatusCmd(), newProxyConfigCmd(), newTokenCmd(), newInjectCmd(), newGRPCBootstrapCmd())
	return root
}

// logger builds the process logger from --log-level, as weft-proxy does.
func logger(cmd *cobra.Command) (*slog.Logger, error) {
	s, _ := cmd.Flags().GetString(logflag.Name)
	return logflag.Logger(os.Stderr, s)
}
