// Command weft-proxy is Weft's lean sidecar/gateway proxy: it takes its
// configuration over ADS from the control plane and serves it.
//
//	weft-proxy --xds-address 127.0.0.1:15010 --workload reviews-v2 \
//	    --labels app=reviews,version=v2 --ip 127.0.0.2 --app-port 9080=127.0.0.1:18080
//
// Bad flags exit with status 2; SIGINT or SIGTERM shut it down gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/xds/contract"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, runs the proxy until ctx is done and returns the exit
// status: 0 after a clean shutdown, 1 when the proxy fails, 2 for bad flags.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	opts, level, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
		return 2
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	p, err := proxy.New(opts)
	if err != nil {
		opts.Logger.Error("cannot start", "error", err)
		return 1
	}
	if err := p.Run(ctx); err != nil {
		opts.Logger.Error("proxy failed", "error", err)
		return 1
	}
	return 0
}

// listFlag collects a flag given several times and/or as a comma list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// parseFlags turns the command line into proxy options. Every error names
// the flag and the offending value.
func parseFlags(args []string, out io.Writer) (proxy.Options, slog.Level, error) {
	fs := flag.NewFlagSet("weft-proxy", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		xdsAddr   = fs.String("xds-address", "127.0.0.1:15010", "control plane ADS `host:port`")
		adminAddr = fs.String("admin-address", proxy.DefaultAdminAddress, "admin endpoint `host:port` (/ready, /config_dump, /stats/prometheus)")
		id        = fs.String("id", "", "xDS node id (default sidecar~<first ip>~<workload>.<namespace>~<namespace>.svc.cluster.local)")
		namespace = fs.String("namespace", "default", "workload namespace")
		workload  = fs.String("workload", "", "workload name (default: the host name)")
		labels    = fs.String("labels", "", "workload labels, `k=v,k=v` (e.g. app=reviews,version=v2)")
		sa        = fs.String("service-account", "default", "workload service account")
		outbound  = fs.String("outbound", contract.DefaultOutboundAddress, "outbound listener `host:port`; empty for none")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		locality  = fs.String("locality", "", "where this proxy runs, `region/zone/subzone` (node.locality; endpoint priorities are relative to it)")
		drain     = fs.Duration("drain-timeout", proxy.DefaultDrainTimeout, "how long in-flight requests may finish on shutdown")
		lnDrain   = fs.Duration("listener-drain-time", proxy.DefaultListenerDrain, "how long a listener the control plane removed keeps serving (answering with Connection: close / GOAWAY) before it closes")
		ips       listFlag
		appPorts  listFlag
	)
	fs.Var(&ips, "ip", "an address of this host (repeatable or a comma list; default 127.0.0.1): INSTANCE_IPS")
	fs.Var(&appPorts, "app-port", "where the app listens for a workload port, `port=host:port` (repeatable or a comma list)")
	if err := fs.Parse(args); err != nil {
		return proxy.Options{}, 0, err
	}
	if fs.NArg() > 0 {
		return proxy.Options{}, 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return proxy.Options{}, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	for name, addr := range map[string]string{"--xds-address": *xdsAddr, "--admin-address": *adminAddr} {
		if err := checkHostPort(addr); err != nil {
			return proxy.Options{}, 0, fmt.Errorf("%s %q: %w", name, addr, err)
		}
	}
	if *outbound != "" {
		if err := checkHostPort(*outbound); err != nil {
			return proxy.Options{}, 0, fmt.Errorf("--outbound %q: %w", *outbound, err)
		}
	}
	if len(ips) == 0 {
		ips = listFlag{"127.0.0.1"}
	}
	for _, ip := range ips {
		if net.ParseIP(ip) == nil {
			return proxy.Options{}, 0, fmt.Errorf("--ip %q: not an IP address", ip)
		}
	}
	lbls := map[string]string{}
	if strings.TrimSpace(*labels) != "" {
		for _, kv := range strings.Split(*labels, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok || k == "" {
				return proxy.Options{}, 0, fmt.Errorf("--labels %q: %q is not key=value", *labels, kv)
			}
			lbls[k] = v
		}
	}
	ap, err := contract.ParseAppPorts(strings.Join(appPorts, ","))
	if err != nil {
		return proxy.Options{}, 0, fmt.Errorf("--app-port: %w", err)
	}
	for p, addr := range ap {
		if err := checkHostPort(addr); err != nil {
			return proxy.Options{}, 0, fmt.Errorf("--app-port %d=%s: %w", p, addr, err)
		}
	}
	if *namespace == "" {
		return proxy.Options{}, 0, errors.New("--namespace must not be empty")
	}
	if *workload == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return proxy.Options{}, 0, errors.New("--workload is required (the host name is unknown)")
		}
		*workload, _, _ = strings.Cut(h, ".")
	}
	if *drain <= 0 {
		return proxy.Options{}, 0, fmt.Errorf("--drain-timeout %v: must be positive", *drain)
	}
	if *lnDrain <= 0 {
		return proxy.Options{}, 0, fmt.Errorf("--listener-drain-time %v: must be positive", *lnDrain)
	}
	if *id == "" {
		*id = contract.DefaultNodeID(ips[0], *workload, *namespace)
	}
	return proxy.Options{
		Identity: contract.Identity{
			ID: *id, Namespace: *namespace, WorkloadName: *workload, Labels: lbls,
			IPs: ips, ServiceAccount: *sa, OutboundAddress: *outbound, AppPorts: ap,
			Locality: *locality,
		},
		XDSAddress:    *xdsAddr,
		AdminAddress:  *adminAddr,
		DrainTimeout:  *drain,
		ListenerDrain: *lnDrain,
	}, level, nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if port == "" {
		return errors.New("want host:port: missing port")
	}
	return nil
}
