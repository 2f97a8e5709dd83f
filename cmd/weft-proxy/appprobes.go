package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/spf13/pflag"

	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/proxy/probes"
)

// appProbes is --app-probes-address and the probes of WEFT_APP_PROBERS
// (set by the sidecar injector).
type appProbes struct {
	addr    string
	probers map[string]probes.Prober
	metrics *probes.AppMetrics // the app's scrape settings, from WEFT_PROMETHEUS_ANNOTATIONS
	// metricsErr is why WEFT_PROMETHEUS_ANNOTATIONS was not used: it is
	// copied from the pod's prometheus.io/* annotations, which Prometheus
	// itself only ignores when wrong (a named port), so the sidecar logs
	// it and serves its own metrics rather than refuse to start.
	metricsErr error
}

func registerAppProbes(fs *pflag.FlagSet, addr *string) {
	fs.StringVar(addr, "app-probes-address", "", "serve the pod's rewritten Kubernetes probes (/app-health/<container>/<kind>, from "+probes.Env+"), the proxy's /healthz/ready and its metrics merged with the app's ("+probes.MetricsPath+", the app's from "+probes.MetricsEnv+") on `host:port` (default "+probes.DefaultAddress+" when "+probes.Env+" is set, else off)")
}

// appProbesConfig checks --app-probes-address and WEFT_APP_PROBERS; a zero
// addr means no probes server.
func appProbesConfig(addr string) (appProbes, error) {
	env, set := os.LookupEnv(probes.Env)
	if addr == "" && set {
		addr = probes.DefaultAddress
	}
	if addr == "" {
		return appProbes{}, nil
	}
	if err := checkHostPort(addr); err != nil {
		return appProbes{}, fmt.Errorf("--app-probes-address %q: %w", addr, err)
	}
	a := appProbes{addr: addr}
	if set && env != "" {
		var err error
		if a.probers, err = probes.Parse(env); err != nil {
			return appProbes{}, err
		}
	}
	a.metrics, a.metricsErr = probes.ParseAppMetrics(os.Getenv(probes.MetricsEnv))
	return a, nil
}

// withAppProbes serves the probes next to the proxy run by serve, until
// serve returns. The proxy's readiness is asked from its admin /ready.
func withAppProbes(ctx context.Context, a appProbes, opts proxy.Options, serve func(context.Context, proxy.Options) error) error {
	if a.addr == "" {
		return serve(ctx, opts)
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("--app-probes-address: %w", err)
	}
	admin := opts.AdminAddress
	if admin == "" {
		admin = proxy.DefaultAdminAddress
	}
	if host, port, err := net.SplitHostPort(admin); err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			admin = net.JoinHostPort("127.0.0.1", port)
		}
	}
	log := opts.Logger.With("component", "app-probes")
	if a.metricsErr != nil {
		log.Warn("the application's metrics are left out of "+probes.MetricsPath, "error", a.metricsErr)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- probes.Serve(pctx, ln, probes.Handler(a.probers, "http://"+admin, a.metrics, log)) }()
	log.Info("serving application probes", "address", ln.Addr().String(), "probes", len(a.probers))
	err = serve(ctx, opts)
	stop()
	if perr := <-done; perr != nil && err == nil {
		err = fmt.Errorf("app probes server on %s: %w", ln.Addr(), perr)
	}
	return err
}
