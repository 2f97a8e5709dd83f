package main

import (
	"github.com/spf13/cobra"

	"weft.dev/weft/internal/echo"
)

func newEchoCmd() *cobra.Command {
	var o echo.Options
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Run the echo workload (HTTP/1.1, h2c and gRPC on one port)",
		Long: `Run the echo workload. It answers every HTTP request with JSON describing it
(name, version, method, path, host, headers) and obeys per-request controls:
?status=503, ?delay=200ms, ?reset=true, ?size=1024 (or x-echo-* headers).
With --upstream (its sidecar's outbound listener), ?call=HOST (or
x-echo-call: HOST) makes it call GET / on HOST through the sidecar before
answering, forwarding the trace headers as an instrumented application
does (docs/observability.md), and put the callee's reply in "upstream".
On the same port it serves the gRPC service weft.echo.v1.Echo and gRPC health.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger(cmd)
			if err != nil {
				return err
			}
			o.Logger = log
			s, err := echo.New(o)
			if err != nil {
				return err
			}
			log.Info("echo serving", "address", s.Addr().String(), "name", o.Name, "version", o.Version)
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "echo", "workload name to report")
	f.StringVar(&o.Version, "version", "v1", "version to report")
	f.StringVar(&o.Address, "address", "127.0.0.1:8080", "listen address")
	f.StringVar(&o.Upstream, "upstream", "", "host:port of the sidecar's outbound listener, through which ?call=HOST calls other services; empty refuses calls")
	return cmd
}
