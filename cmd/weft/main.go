// Command weft is Weft's control plane and toolbox: `weft serve` runs the
// control plane, `weft demo` runs a whole mesh on loopback, `weft echo`
// runs the demo/test workload, `weft validate` checks a config directory
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
	"strings"
	"syscall"

	"github.com/spf13/cobra"
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
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(newServeCmd(), newDemoCmd(), newEchoCmd(), newValidateCmd(), newAnalyzeCmd(), newExplainCmd(),
		newProxyStatusCmd(), newProxyConfigCmd())
	return root
}

// logger builds the process logger from --log-level.
func logger(cmd *cobra.Command) (*slog.Logger, error) {
	s, _ := cmd.Flags().GetString("log-level")
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}
