// Command weft-proxy is Weft's lean sidecar/gateway proxy: it takes its
// configuration over ADS from the control plane and serves it.
//
//	weft-proxy --root-cert root-cert.pem --token-file reviews.token --workload reviews-v2 \
//	    --service-account reviews --labels app=reviews,version=v2 --ip 127.0.0.2 \
//	    --app-port 9080=127.0.0.1:18080
//
// Its command line follows weft's: cobra and pflag, double-dash long flags,
// the shared --log-level. Bad flags exit with status 2 and a message naming
// the flag and the value; --help exits 0; SIGINT or SIGTERM shut it down
// gracefully (exit 0).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"weft.dev/weft/internal/gctune"
	"weft.dev/weft/internal/logflag"
	"weft.dev/weft/internal/procscale"
	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/proxy/overload"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

func main() {
	heapProfilerOff(os.Getenv("GODEBUG"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0 // clean shutdown, or --help
	exitFailed  = 1 // the proxy could not start, or failed
	exitBadFlag = 2 // bad flags or arguments
)

// run parses args, runs the proxy until ctx is done and returns the exit
// status. Help goes to stdout, everything else to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stderr, runProxy)
	cmd.InitDefaultHelpFlag() // so that -help, like --help, is known to longFlagsCompat
	cmd.SetArgs(longFlagsCompat(args, cmd.Flags(), stderr))
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.ExecuteContext(ctx)
	var bad usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &bad):
		fmt.Fprintf(stderr, "weft-proxy: %v\n", bad.err)
		return exitBadFlag
	default:
		fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
		return exitFailed
	}
}

// runProxy starts the proxy and serves until ctx is done.
func runProxy(ctx context.Context, opts proxy.Options) error {
	applyConcurrency(opts.Concurrency)
	if opts.ConcurrencyMin > 0 {
		log := opts.Logger
		if log == nil {
			log = slog.Default()
		}
		defer procscale.Start(ctx, procscale.Options{Min: opts.ConcurrencyMin, Max: opts.Concurrency, OnChange: func(old, new int) {
			log.Debug("worker threads changed with the load (--concurrency-min)", "gomaxprocs", new, "was", old)
		}})()
	}
	applyHeapProfiler(opts.HeapProfiler, os.Getenv("GODEBUG"))
	if opts.OverloadMemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// The garbage collector works to stay under 85 % of the limit,
		// so the overload guard (90 %) sees live memory, not garbage.
		debug.SetMemoryLimit(int64(float64(opts.OverloadMemoryLimit) * gcMemoryLimitFraction))
	}
	if opts.GCHeadroom > 0 && os.Getenv("GOGC") == "" {
		log := opts.Logger
		if log == nil {
			log = slog.Default()
		}
		// A large configuration is taken in on a tighter bound
		// (xdsclient.Options.HeavyWork): 2 MiB by default.
		tight := opts.GCHeadroomIntake
		if tight == 0 {
			tight = opts.GCHeadroom / 4
		}
		defer gctune.Start(ctx, gctune.Options{Headroom: opts.GCHeadroom, MinHeadroom: opts.GCHeadroomMin, MaxPercent: gcMaxPercent, TightHeadroom: max(tight, 1), OnChange: func(old, new int) {
			log.Debug("garbage collector pacing changed for --gc-headroom", "gogc", new, "was", old)
		}})()
	}
	p, err := proxy.New(opts)
	if err != nil {
		return fmt.Errorf("cannot start: %w", err)
	}
	return p.Run(ctx)
}

// usageError marks an error in the command line: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// newRootCmd builds the command line; serve runs the proxy once every flag
// has been checked. Logs go to stderr.
func newRootCmd(stderr io.Writer, serve func(context.Context, proxy.Options) error) *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "weft-proxy [flags]",
		Short: "Weft's sidecar: serve the configuration the control plane sends over ADS",
		Long: `weft-proxy is Weft's sidecar. It connects to the control plane (weft serve)
over ADS (Envoy xDS v3), introduces itself with the identity its flags give,
and serves the listeners, routes and clusters it receives: an outbound
listener where the application sends requests for other services, and an
inbound listener for every endpoint registered on one of its --ip
addresses. The admin endpoint serves /ready, /config_dump, /certs,
/stats/prometheus and POST /drain. See docs/proxy.md.

It reaches the control plane on its secure port over TLS, verified against
--root-cert. It first gets its workload certificate (SPIFFE ID
spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>) from the
control plane's CA with a single-use bootstrap token (weft token), then
renews it with the certificate itself. See docs/security.md.

With --gateway it is a gateway instead (Istio's ingress or egress
gateway): no application behind it, listeners from the Gateway resources
whose selector matches its --labels, TLS certificates by credentialName
from --credential-dir. See docs/gateways.md.`,
		Example: `  weft token --namespace default --service-account backend --root-cert-out root-cert.pem > backend.token
  weft-proxy --root-cert root-cert.pem --token-file backend.token \
      --workload backend-v1 --service-account backend --labels app=backend,version=v1 --ip 127.0.10.2 \
      --app-port 8080=127.0.10.2:18080 --outbound 127.0.10.2:15001 --admin-address 127.0.10.2:15000
  weft-proxy --gateway --root-cert root-cert.pem --token-file gateway.token --namespace team-a \
      --workload team-a-gateway --labels istio=team-a-gateway --ip 127.0.20.1 --gateway-bind 127.0.20.1 \
      --credential-dir /etc/weft/credentials --admin-address 127.0.20.1:15000`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected arguments %q: weft-proxy takes flags only", args)}
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.outboundSet = cmd.Flags().Changed("outbound")
			f.concurrencySet = cmd.Flags().Changed("concurrency")
			f.gcHeadroomSet = cmd.Flags().Changed("gc-headroom")
			opts, err := f.options(stderr)
			if err != nil {
				return usageError{err}
			}
			probes, err := appProbesConfig(f.appProbesAddr)
			if err != nil {
				return usageError{err}
			}
			return withAppProbes(cmd.Context(), probes, opts, serve)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f.register(cmd.Flags())
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.AddCommand(newCaptureCmd(stderr))
	return cmd
}

// flags holds the raw command line.
type flags struct {
	adminAddr, id, namespace, workload           string
	serviceAccount, outbound, logLevel, locality string
	autoRegisterGroup, interceptionMode          string
	rootCert, tokenFile, token, trustDomain      string
	certDir, appProbesAddr                       string
	xdsProtocol                                  string
	plaintext                                    bool
	drain, listenerDrain                         time.Duration
	maxConns, concurrency, concurrencyMin        int
	keepStartupPages, heapProfiler               bool
	concurrencySet, gcHeadroomSet                bool
	maxTotalConns, overloadMemory, gcHeadroom    string
	gcHeadroomMin                                string
	gateway, outboundSet, http10                 bool
	gatewayBind, credentialDir                   string
	ips, appPorts, labels, dnsServers            listFlag
	xdsAddrs                                     defaultedList
}

func (f *flags) register(fs *pflag.FlagSet) {
	fs.SortFlags = false
	f.xdsAddrs = defaultedList{list: []string{"127.0.0.1:15012"}}
	fs.Var(&f.xdsAddrs, "xds-address", "the control plane's secure port, `host:port` (weft serve --xds-address); with --xds-plaintext its plaintext port. Repeatable or a comma list for several replicas, and a host name stands for all its DNS records: the proxy starts at a random one and moves to the next at once when its connection is lost (docs/control-plane.md)")
	fs.StringVar(&f.rootCert, "root-cert", "", "the mesh's trust root, a PEM `file` (weft token --root-cert-out): the control plane must present a certificate from it")
	fs.StringVar(&f.tokenFile, "token-file", "", "`file` holding the bootstrap token for the first certificate (weft token); read again at each attempt")
	fs.StringVar(&f.token, "token", "", "the bootstrap token itself (visible in the process list: prefer --token-file)")
	fs.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "trust domain of the proxy's SPIFFE ID (weft serve --trust-domain)")
	fs.StringVar(&f.certDir, "cert-dir", "", "`directory` to keep the key and certificate in, so a restart renews with them instead of needing a new token")
	fs.StringVar(&f.xdsProtocol, "xds-protocol", string(xdsclient.ProtocolDelta), "ADS variant to speak: delta (incremental: only changed resources are sent, and a reconnect resumes with the versions held) or sotw (state of the world)")
	fs.BoolVar(&f.plaintext, "xds-plaintext", false, "reach a plaintext xDS port (weft serve --xds-plaintext-address) with no certificate: local development only")
	fs.StringVar(&f.adminAddr, "admin-address", proxy.DefaultAdminAddress, "admin endpoint `host:port` (/ready, /config_dump, /stats/prometheus); port 0 picks a free one")
	fs.StringVar(&f.workload, "workload", "", "workload name, as in its WorkloadEntry (default: the host name up to its first dot)")
	fs.StringVar(&f.namespace, "namespace", "default", "workload namespace")
	fs.Var(&f.labels, "labels", "workload labels, `k=v,k=v` (repeatable; a later value for a key wins)")
	fs.Var(&f.ips, "ip", "an `address` of this host (repeatable or a comma list; default 127.0.0.1)")
	fs.Var(&f.appPorts, "app-port", "where the app listens for a workload port, `port=host:port` (repeatable or a comma list)")
	fs.StringVar(&f.outbound, "outbound", contract.DefaultOutboundAddress, "outbound listener `host:port`; '' for none")
	fs.StringVar(&f.id, "id", "", "xDS node id (default sidecar~<first ip>~<workload>.<namespace>~<namespace>.svc.cluster.local)")
	fs.StringVar(&f.serviceAccount, "service-account", "default", "workload service account")
	fs.StringVar(&f.interceptionMode, "interception-mode", contract.InterceptionNone, "how the workload's traffic reaches the proxy: NONE (explicit: apps use the outbound listener, the inbound listeners bind the workload's address) or REDIRECT (iptables REDIRECT by weft-proxy capture: the proxy serves virtualOutbound on 15001 and virtualInbound on 15006 and routes by original destination)")
	fs.StringVar(&f.autoRegisterGroup, "auto-register-group", "", "register this workload (a VM) with the WorkloadGroup of this `name` in --namespace while the proxy is connected: the control plane adds it to the mesh with the group's labels and removes it after the proxy disconnects")
	fs.StringVar(&f.locality, "locality", "", "where this proxy runs, `region/zone/subzone` (endpoint priorities are relative to it)")
	fs.DurationVar(&f.drain, "drain-timeout", proxy.DefaultDrainTimeout, "how long in-flight requests may finish on shutdown")
	fs.DurationVar(&f.listenerDrain, "listener-drain-time", proxy.DefaultListenerDrain, "how long a listener the control plane removed keeps serving (answering with Connection: close / GOAWAY) before it closes")
	fs.IntVar(&f.maxConns, "max-connections-per-listener", 0, "the most connections each listener holds open at once; more are closed at once (0: no limit, as Envoy)")
	fs.StringVar(&f.maxTotalConns, "max-connections", "auto", "the most connections, `N`, all listeners together hold open at once (Envoy's global_downstream_max_connections); more are closed at once. auto: half the open-file limit, so each can have an upstream connection; 0: no limit")
	fs.IntVar(&f.concurrencyMin, "concurrency-min", 0, "the fewest worker threads, `N`, when set: while the proxy uses little CPU (under 0.15 of a core per thread for five seconds) it runs on fewer than --concurrency threads, down to N, and gets them back within a second of using more than a quarter of a core per thread. One thread costs a lightly loaded proxy 5–15 % less CPU per request and adds latency to requests that arrive while it is busy (a collection, another request). 0: the threads stay at --concurrency")
	fs.IntVar(&f.concurrency, "concurrency", defaultConcurrency, "worker threads, `N`: the Go runtime's GOMAXPROCS (Envoy's --concurrency, Istio's ProxyConfig concurrency); 0: every CPU (or the container's CPU limit), the default with --gateway. At most the CPUs available; the GOMAXPROCS environment variable wins")
	fs.BoolVar(&f.heapProfiler, "heap-profiler", false, "sample allocations for /debug/pprof/heap and /debug/pprof/allocs from the start (Go's default rate); off by default, as Envoy's heap profiler, because its records cost a sidecar 1-7 MiB that are never freed; POST /heapprofiler?enable=y on the admin endpoint turns it on while the proxy runs, GODEBUG=memprofilerate=N wins over both")
	fs.BoolVar(&f.keepStartupPages, "keep-startup-pages", false, "keep mapped the pages of the executable that only start-up used; by default they are handed back (Linux madvise MADV_PAGEOUT and MADV_DONTNEED) a second after the first config is applied, about 15 MiB of RSS; a page needed again is mapped again at its next access, without read-ahead (MADV_RANDOM)")
	fs.StringVar(&f.overloadMemory, "overload-memory-limit", "auto", "memory, a `size` (bytes, or e.g. 256Mi, 1Gi), the overload guard measures the Go heap and stacks against: past 90% new connections are closed at once, past 95% every response closes its connection. auto: the cgroup's memory limit when there is one, else off; 0: off")
	fs.StringVar(&f.gcHeadroom, "gc-headroom", "8Mi", "the most the Go heap may grow above its live heap before the garbage collector runs, a `size`: after each collection GOGC is lowered so that the heap goal stays within it (never below GOGC=25), so a proxy holding a large mesh keeps its garbage to that instead of as much again as its live heap; a heap too small to reach it keeps GOGC=100 while lightly loaded and, busy, is given what it allocates in a second (up to this bound) so that it collects about once a second. 0: off, the default with --gateway; the GOGC environment variable turns it off")
	fs.StringVar(&f.gcHeadroomMin, "gc-headroom-min", "", "the least the bound of --gc-headroom is, a `size` (default: 3/8 of --gc-headroom): between the two the bound is what the proxy allocated in the last second, so a lightly loaded proxy keeps a small headroom and a busy one collects about once a second, not more often the more requests come; equal to --gc-headroom: a fixed bound. A large configuration (a response of 64 KiB or more) is taken in on a quarter of --gc-headroom (half of this flag when it is given), so what it builds is packed into the space its temporaries leave")
	fs.BoolVar(&f.gateway, "gateway", false, "run as a gateway (Istio's router): no application behind it, listeners from the Gateways whose selector matches --labels, node id router~...; no outbound listener unless --outbound is given")
	fs.BoolVar(&f.http10, "http10", contract.EnablesHTTP10(os.Getenv("ISTIO_META_HTTP10")), "accept HTTP/1.0 requests on this proxy's listeners (Istio's ISTIO_META_HTTP10, which sets the default: 1 or true); otherwise they are answered 426 Upgrade Required, as Envoy and Istio, unless the control plane accepts them mesh-wide (weft serve --http10)")
	fs.StringVar(&f.gatewayBind, "gateway-bind", "", "with --gateway, the `address` its listeners bind (a Gateway server's bind wins); default every address (0.0.0.0)")
	fs.StringVar(&f.credentialDir, "credential-dir", "", "with --gateway, the `directory` of TLS credentials Gateways name by credentialName: <dir>/<name>/tls.crt, tls.key and, for MUTUAL, ca.crt (Kubernetes Secret mounts work as is); read again every 2s, so a rotated certificate is served to new connections")
	fs.Var(&f.dnsServers, "dns-server", "a DNS server, `host:port`, to resolve the names of DNS clusters (ServiceEntries with resolution DNS) with, asked for their records' TTLs (repeatable or a comma list, tried in order); default: the system's resolver, re-resolving every dns_refresh_rate")
	fs.StringVar(&f.logLevel, logflag.Name, logflag.Default, logflag.Usage)
	registerAppProbes(fs, &f.appProbesAddr)
}

// options checks the flags and turns them into proxy options. Every error
// names the flag and the offending value.
func (f *flags) options(stderr io.Writer) (proxy.Options, error) {
	log, err := logflag.Logger(stderr, f.logLevel)
	if err != nil {
		return proxy.Options{}, err
	}
	addrs := []struct{ name, addr string }{{"--admin-address", f.adminAddr}}
	for _, a := range f.xdsAddrs.list {
		addrs = append(addrs, struct{ name, addr string }{"--xds-address", a})
	}
	if len(f.xdsAddrs.list) == 0 {
		return proxy.Options{}, errors.New("--xds-address: no address given")
	}
	for _, a := range addrs {
		if err := checkHostPort(a.addr); err != nil {
			return proxy.Options{}, fmt.Errorf("%s %q: %w", a.name, a.addr, err)
		}
	}
	if f.outbound != "" {
		if err := checkHostPort(f.outbound); err != nil {
			return proxy.Options{}, fmt.Errorf("--outbound %q: %w", f.outbound, err)
		}
	}
	ips := []string(f.ips)
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	for _, ip := range ips {
		if net.ParseIP(ip) == nil {
			return proxy.Options{}, fmt.Errorf("--ip %q: not an IP address", ip)
		}
	}
	labels := map[string]string{}
	for _, kv := range f.labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return proxy.Options{}, fmt.Errorf("--labels %q: %q is not key=value", f.labels.String(), kv)
		}
		labels[k] = v
	}
	appPorts, err := contract.ParseAppPorts(f.appPorts.String())
	if err != nil {
		return proxy.Options{}, fmt.Errorf("--app-port: %w", err)
	}
	for p, addr := range appPorts {
		if err := checkHostPort(addr); err != nil {
			return proxy.Options{}, fmt.Errorf("--app-port %d=%s: %w", p, addr, err)
		}
	}
	if f.namespace == "" {
		return proxy.Options{}, errors.New("--namespace must not be empty")
	}
	workload := f.workload
	if workload == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return proxy.Options{}, errors.New("--workload is required (the host name is unknown)")
		}
		workload, _, _ = strings.Cut(h, ".")
	}
	if f.drain <= 0 {
		return proxy.Options{}, fmt.Errorf("--drain-timeout %v: must be positive", f.drain)
	}
	if f.listenerDrain <= 0 {
		return proxy.Options{}, fmt.Errorf("--listener-drain-time %v: must be positive", f.listenerDrain)
	}
	if f.maxConns < 0 {
		return proxy.Options{}, fmt.Errorf("--max-connections-per-listener %d: must not be negative", f.maxConns)
	}
	maxTotalConns, err := maxConnections(f.maxTotalConns)
	if err != nil {
		return proxy.Options{}, err
	}
	memLimit, err := overloadMemoryLimit(f.overloadMemory)
	if err != nil {
		return proxy.Options{}, err
	}
	gcHeadroom, err := overload.ParseBytes(f.gcHeadroom)
	if err != nil {
		return proxy.Options{}, fmt.Errorf("--gc-headroom %q: %w", f.gcHeadroom, err)
	}
	if f.gateway && !f.gcHeadroomSet {
		// A gateway's live heap grows with its connections, and its
		// request rate can be high: a bound in megabytes would collect
		// it many times a second. Gateways are few; sidecars are many.
		gcHeadroom = 0
	}
	// The floor is 3/8 of the bound (3 MiB of 8), and a large
	// configuration is taken in on a quarter of it (2 MiB); a floor given
	// takes in on half of itself.
	gcHeadroomMin, gcIntake := gcHeadroom*3/8, gcHeadroom/4
	if f.gcHeadroomMin != "" {
		if gcHeadroomMin, err = overload.ParseBytes(f.gcHeadroomMin); err != nil {
			return proxy.Options{}, fmt.Errorf("--gc-headroom-min %q: %w", f.gcHeadroomMin, err)
		}
		if gcHeadroom > 0 && gcHeadroomMin > gcHeadroom {
			return proxy.Options{}, fmt.Errorf("--gc-headroom-min %s is above --gc-headroom %s", f.gcHeadroomMin, f.gcHeadroom)
		}
		gcIntake = gcHeadroomMin / 2
	}
	conc := f.concurrency
	if f.gateway && !f.concurrencySet {
		conc = 0 // a gateway carries many workloads' traffic: every CPU, as Istio's gateways
	}
	procs, err := concurrency(conc, gomaxprocsFromEnv(), runtime.GOMAXPROCS(0))
	if err != nil {
		return proxy.Options{}, err
	}
	if f.concurrencySet && gomaxprocsFromEnv() != "" {
		log.Warn("ignoring --concurrency: the GOMAXPROCS environment variable is set", "concurrency", f.concurrency, "GOMAXPROCS", gomaxprocsFromEnv())
	}
	concMin, err := concurrencyMin(f.concurrencyMin, procs, gomaxprocsFromEnv(), runtime.GOMAXPROCS(0))
	if err != nil {
		return proxy.Options{}, err
	}
	if conc > 0 && f.concurrencyMin > conc {
		return proxy.Options{}, fmt.Errorf("--concurrency-min %d is above --concurrency %d", f.concurrencyMin, conc)
	}
	for _, s := range f.dnsServers {
		if err := checkHostPort(s); err != nil {
			return proxy.Options{}, fmt.Errorf("--dns-server %q: %w", s, err)
		}
	}
	protocol := xdsclient.Protocol(strings.ToLower(f.xdsProtocol))
	if protocol != xdsclient.ProtocolDelta && protocol != xdsclient.ProtocolSotW {
		return proxy.Options{}, fmt.Errorf("--xds-protocol %q: want delta or sotw", f.xdsProtocol)
	}
	mode := strings.ToUpper(f.interceptionMode)
	if mode != contract.InterceptionNone && mode != contract.InterceptionRedirect {
		return proxy.Options{}, fmt.Errorf("--interception-mode %q: want NONE or REDIRECT", f.interceptionMode)
	}
	if mode == contract.InterceptionNone {
		mode = "" // the default: not sent
	}
	outbound := f.outbound
	if f.gateway {
		if !f.outboundSet {
			outbound = "" // a gateway has no app to send it traffic
		}
		if len(appPorts) > 0 {
			return proxy.Options{}, errors.New("--app-port: a gateway (--gateway) has no application behind it")
		}
		if mode == contract.InterceptionRedirect {
			return proxy.Options{}, errors.New("--interception-mode REDIRECT: a gateway (--gateway) is addressed directly, not captured")
		}
		if f.gatewayBind != "" && net.ParseIP(f.gatewayBind) == nil {
			return proxy.Options{}, fmt.Errorf("--gateway-bind %q: not an IP address", f.gatewayBind)
		}
	} else {
		for _, g := range []struct{ flag, v string }{{"--gateway-bind", f.gatewayBind}, {"--credential-dir", f.credentialDir}} {
			if g.v != "" {
				return proxy.Options{}, fmt.Errorf("%s: only for a gateway (add --gateway)", g.flag)
			}
		}
	}
	if f.credentialDir != "" {
		if fi, err := os.Stat(f.credentialDir); err != nil || !fi.IsDir() {
			return proxy.Options{}, fmt.Errorf("--credential-dir %q: not a readable directory", f.credentialDir)
		}
	}
	id := f.id
	switch {
	case id != "":
	case f.gateway:
		id = contract.RouterNodeID(ips[0], workload, f.namespace)
	default:
		id = contract.DefaultNodeID(ips[0], workload, f.namespace)
	}
	sec, err := f.security(log)
	if err != nil {
		return proxy.Options{}, err
	}
	return proxy.Options{
		Plaintext:   f.plaintext,
		RootCertPEM: sec.root,
		Token:       sec.token,
		TrustDomain: f.trustDomain,
		CertDir:     f.certDir,
		Identity: contract.Identity{
			ID: id, Namespace: f.namespace, WorkloadName: workload, Labels: labels,
			IPs: ips, ServiceAccount: f.serviceAccount, OutboundAddress: outbound, AppPorts: appPorts,
			Locality: f.locality, AutoRegisterGroup: f.autoRegisterGroup, InterceptionMode: mode,
			GatewayBind: f.gatewayBind, HTTP10: f.http10,
		},
		CredentialDir:             f.credentialDir,
		XDSAddress:                strings.Join(f.xdsAddrs.list, ","),
		AdminAddress:              f.adminAddr,
		DrainTimeout:              f.drain,
		ListenerDrain:             f.listenerDrain,
		MaxConnectionsPerListener: f.maxConns,
		MaxConnections:            maxTotalConns,
		OverloadMemoryLimit:       memLimit,
		GCHeadroom:                gcHeadroom,
		GCHeadroomMin:             gcHeadroomMin,
		GCHeadroomIntake:          gcIntake,
		Concurrency:               procs,
		ConcurrencyMin:            concMin,
		PageOutStartup:            !f.keepStartupPages,
		HeapProfiler:              f.heapProfiler,
		DNSServers:                f.dnsServers,
		Logger:                    log,
		XDS:                       xdsclient.Options{Protocol: protocol, HeavyWork: gctune.Tight},
	}, nil
}

// security is what the proxy proves itself and checks the control plane with.
type security struct {
	root  []byte
	token func() (string, error)
}

// security checks --root-cert, --token-file, --token and --cert-dir.
func (f *flags) security(log *slog.Logger) (security, error) {
	if f.plaintext {
		for _, s := range []struct{ flag, v string }{{"--root-cert", f.rootCert}, {"--token-file", f.tokenFile}, {"--token", f.token}, {"--cert-dir", f.certDir}} {
			if s.v != "" {
				log.Warn("ignoring "+s.flag+": with --xds-plaintext the proxy runs without a certificate", "flag", s.flag)
			}
		}
		return security{}, nil
	}
	if f.rootCert == "" {
		return security{}, errors.New("--root-cert is required to verify the control plane on its secure port (weft token --root-cert-out FILE writes it); --xds-plaintext uses a plaintext port instead")
	}
	root, err := os.ReadFile(f.rootCert)
	if err != nil {
		return security{}, fmt.Errorf("--root-cert: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(root) {
		return security{}, fmt.Errorf("--root-cert %s: no PEM certificate in it", f.rootCert)
	}
	if f.trustDomain == "" {
		return security{}, errors.New("--trust-domain must not be empty")
	}
	var token func() (string, error)
	switch {
	case f.token != "" && f.tokenFile != "":
		return security{}, errors.New("--token and --token-file: give one")
	case f.token != "":
		tok := f.token
		token = func() (string, error) { return tok, nil }
	case f.tokenFile != "":
		if _, err := os.Stat(f.tokenFile); err != nil {
			return security{}, fmt.Errorf("--token-file: %w", err)
		}
		path := f.tokenFile
		token = func() (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", err
			}
			tok := strings.TrimSpace(string(b))
			if tok == "" {
				return "", fmt.Errorf("token file %s is empty", path)
			}
			return tok, nil
		}
	case f.certDir == "":
		return security{}, errors.New("--token-file (or --token) is required for the proxy's first certificate: weft token --namespace NS --service-account SA prints one")
	}
	return security{root: root, token: token}, nil
}

// listFlag collects a flag given several times and/or as a comma list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Type() string   { return "list" }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// defaultedList is a listFlag whose default is replaced, not extended, by
// the first value given.
type defaultedList struct {
	list []string
	set  bool
}

func (l *defaultedList) String() string { return strings.Join(l.list, ",") }
func (l *defaultedList) Type() string   { return "string" } // so --help quotes the default

func (l *defaultedList) Set(v string) error {
	if !l.set {
		l.list, l.set = nil, true
	}
	return (*listFlag)(&l.list).Set(v)
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

// gcMaxPercent is the highest GOGC --gc-headroom sets for a small heap
// under load (gctune.Options.MaxPercent); the headroom's bytes, not this,
// are what limit it, unless the live heap is under a megabyte or two.
const gcMaxPercent = 800

// gcMemoryLimitFraction of --overload-memory-limit is the Go runtime's
// soft memory limit (unless GOMEMLIMIT is set).
const gcMemoryLimitFraction = 0.85

// maxConnections reads --max-connections: a number (0: no limit) or auto,
// half the open-file limit (which Go raises to the hard limit at start):
// a proxied connection needs a descriptor downstream and one upstream,
// so past that accepting more only makes upstream dials fail.
func maxConnections(v string) (int, error) {
	if v == "auto" {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 || rl.Cur >= 1<<40 {
			return 0, nil // unknown or unlimited: no limit
		}
		return int(rl.Cur / 2), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--max-connections %q: want a number of connections (0: no limit) or auto", v)
	}
	return n, nil
}

// overloadMemoryLimit reads --overload-memory-limit: a size, 0 (off), or
// auto — the cgroup's memory limit, off without one.
func overloadMemoryLimit(v string) (uint64, error) {
	if v == "auto" {
		n, err := overload.CgroupMemoryLimit()
		if err != nil {
			return 0, nil // no limit to guard
		}
		return n, nil
	}
	n, err := overload.ParseBytes(v)
	if err != nil {
		return 0, fmt.Errorf("--overload-memory-limit %q: %w", v, err)
	}
	if n > 0 && n < minOverloadMemory {
		return 0, fmt.Errorf("--overload-memory-limit %q: at least 16Mi (the proxy alone needs more than that), or 0 for off", v)
	}
	return n, nil
}

// minOverloadMemory is the smallest --overload-memory-limit: below it the
// guard would shed connections from the start.
const minOverloadMemory = 16 << 20
