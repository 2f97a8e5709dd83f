// Command xdsload loads a control plane with a generated mesh and N
// simulated proxies and measures config and endpoint changes, as
// internal/xdsload describes. By default it builds nothing: give it the
// weft binary (go build -o /tmp/weft ./cmd/weft).
//
//	go run ./bench/xdsload --weft /tmp/weft --proxies 1000 --services 1000 \
//	    --cp-cpus 1 --sim-cpus 0 --storm 60s --profile-dir /tmp/prof
//
// The proxies speak delta ADS, as weft-proxy does by default;
// --xds-protocol sotw makes them speak state of the world. With delta they
// take their route configurations' virtual hosts by VHDS, as weft-proxy's
// delta client does (a config change then reaches them as VirtualHost
// responses, and is timed in those); --vhds=false gives them whole route
// configurations by RDS. State of the world has no VHDS.
// --decode full makes every simulated proxy also unmarshal every resource
// (by default it reads only the responses' envelopes: see
// internal/xdsload). --endpoint-source consul keeps the endpoints that changes move in a
// Consul catalog (a dev agent started for the run) instead of files.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"weft.dev/weft/internal/xdsload"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "xdsload:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		weft       = flag.String("weft", "", "the weft `binary` to run as `weft serve` (required)")
		proxies    = flag.Int("proxies", 100, "simulated proxies (N)")
		services   = flag.Int("services", 1000, "services (M)")
		endpoints  = flag.Int("endpoints", 0, "WorkloadEntries per service that proxies play; 0: enough for every proxy to play its own workload, at least 2")
		spare      = flag.Int("spare", 1, "further WorkloadEntries per service that no proxy plays; endpoint changes move these")
		namespaces = flag.Int("namespaces", 10, "namespaces the services are spread over")
		conns      = flag.Int("conns", 0, "gRPC connections the proxies' streams share; 0: one per proxy, as real sidecars")
		protocol   = flag.String("xds-protocol", string(xdsload.Delta), "ADS variant the proxies speak: delta (incremental, as weft-proxy by default) or sotw (state of the world)")
		vhds       = flag.Bool("vhds", true, "with --xds-protocol delta, the proxies take their route configurations' virtual hosts by VHDS, as weft-proxy (config changes are then timed in VirtualHost responses); false: whole route configurations by RDS. Ignored with sotw")
		decode     = flag.String("decode", string(xdsload.DecodeEnvelope), "how much of each response a simulated proxy decodes: envelope (names, versions, nonce off the wire; the resources' bytes only searched for the change's marker) or full (also unmarshal every resource into its Go type, as a real proxy, but here every proxy on the simulator's cores)")
		simProfile = flag.Bool("sim-profile", false, "with --profile-dir, also profile the simulator itself: CPU over the config and endpoint changes (sim-cpu-changes.pprof), live heap once connected (sim-heap-connect.pprof)")
		useTLS     = flag.Bool("tls", false, "connect the proxies to weft serve's secure port (--xds-address) over TLS, each with a workload certificate of its own as its client certificate, as weft-proxy does by default; otherwise to the plaintext port (--xds-plaintext-address). Implies one connection per proxy")
		explicit   = flag.Bool("explicit", false, "explicit proxies (outbound listener on 127.0.0.1:15001) instead of captured sidecars (INTERCEPTION_MODE REDIRECT, as injected pods)")
		changes    = flag.Int("changes", 3, "config changes and endpoint changes measured, each")
		storm      = flag.Duration("storm", 0, "duration of the endpoint-change storm; 0 skips it")
		rest       = flag.Duration("rest", 0, "after the changes (and the storm), keep the fleet connected this long with nothing changing and sample the control plane's RSS every 5s: what a quiet control plane gives back; 0 skips it")
		stormRate  = flag.Int("storm-rate", 100, "endpoint changes per second during the storm")
		timeout    = flag.Duration("timeout", 5*time.Minute, "longest wait for the fleet to connect or for one change to be ACKed everywhere")
		cpCPUs     = flag.String("cp-cpus", "", "pin weft serve to these CPUs (taskset -c list, e.g. 1)")
		simCPUs    = flag.String("sim-cpus", "", "pin the simulator to these CPUs (e.g. 0) and size its GOMAXPROCS to them")
		profileDir = flag.String("profile-dir", "", "write the control plane's CPU profiles (from the first config change on, and during the storm) and heap profile (after the single changes) here")
		changeProf = flag.Duration("change-profile", 30*time.Second, "length of the CPU profile taken from the first config change on (with --profile-dir)")
		epProf     = flag.Duration("endpoint-profile", 0, "with --profile-dir, also profile the control plane for this long from the first endpoint change on (cpu-endpoint.pprof); shorten --change-profile so the two do not overlap")
		maxRSS     = flag.Int64("max-cp-rss-mib", 6144, "stop the run when weft serve's RSS exceeds this many MiB (0: no limit)")
		jsonOut    = flag.String("json", "", "also write the report as JSON to this `file` (- for stdout)")
		cpLog      = flag.String("cp-log", "", "write weft serve's log to this file (default: discarded)")
		scope      = flag.String("scope", string(xdsload.ScopeMesh), "what weft serve sends a proxy (--default-egress-scope): mesh (every service) or namespace (its namespace's; a change is then waited for on that namespace's proxies)")
		epSource   = flag.String("endpoint-source", string(xdsload.SourceFile), "where the spare endpoints that endpoint changes move live: file (WorkloadEntries in the config directory) or consul (VMs in the catalog of a `consul agent -dev` started for the run, read by weft serve --consul)")
		consulBin  = flag.String("consul", "", "the consul `binary` for --endpoint-source consul (default: $WEFT_TOOLS_DIR/bin/consul, else $PATH)")
		verbose    = flag.Bool("v", false, "log progress to stderr")
	)
	flag.Parse()
	if *weft == "" {
		return errors.New("--weft is required: go build -o /tmp/weft ./cmd/weft")
	}
	proto, err := xdsload.ParseProtocol(*protocol)
	if err != nil {
		return fmt.Errorf("--xds-protocol: %w", err)
	}
	dec, err := xdsload.ParseDecode(*decode)
	if err != nil {
		return fmt.Errorf("--decode: %w", err)
	}
	sc, err := xdsload.ParseScope(*scope)
	if err != nil {
		return fmt.Errorf("--scope: %w", err)
	}
	source, err := xdsload.ParseEndpointSource(*epSource)
	if err != nil {
		return fmt.Errorf("--endpoint-source: %w", err)
	}
	if *simCPUs != "" {
		if err := pinSelf(*simCPUs); err != nil {
			return err
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	k := *endpoints
	if k <= 0 {
		k = max(2, (*proxies+*services-1) / *services)
	}
	dir, err := os.MkdirTemp("", "xdsload-mesh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	serveArgs := sc.ServeArgs()
	var reg xdsload.SpareRegistry
	if source == xdsload.SourceConsul {
		// The registry runs beside the simulator: in a mesh it is another
		// machine, not the control plane's core.
		cdir, err := os.MkdirTemp("", "xdsload-consul-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(cdir)
		c, err := xdsload.StartConsul(ctx, xdsload.ConsulOptions{Binary: *consulBin, Dir: cdir, CPUs: *simCPUs})
		if err != nil {
			return err
		}
		defer c.Stop()
		log.Info("consul started", "pid", c.PID, "http", c.Addr)
		reg = c
		serveArgs = append(serveArgs, c.ServeArgs()...)
	}
	m, err := xdsload.WriteMeshWith(dir, xdsload.MeshSpec{Services: *services, Endpoints: k, Spare: *spare, Namespaces: *namespaces}, reg)
	if err != nil {
		return err
	}
	var cpOut io.Writer
	if *cpLog != "" {
		f, err := os.Create(*cpLog)
		if err != nil {
			return err
		}
		defer f.Close()
		cpOut = f
	}
	fleet := xdsload.FleetOptions{Proxies: *proxies, Conns: *conns, Captured: !*explicit, Protocol: proto, VHDS: *vhds && proto == xdsload.Delta, Decode: dec}
	var caDir string
	if *useTLS {
		if caDir, err = os.MkdirTemp("", "xdsload-ca-"); err != nil {
			return err
		}
		defer os.RemoveAll(caDir)
		certs, err := xdsload.NewWorkloadCerts(caDir)
		if err != nil {
			return err
		}
		fleet.ClientTLS = certs.ClientTLS
	}
	cp, err := xdsload.StartProcess(ctx, xdsload.ProcessOptions{Binary: *weft, ConfigDir: dir, CPUs: *cpCPUs, Stderr: cpOut, ExtraArgs: serveArgs, CADir: caDir})
	if err != nil {
		return err
	}
	defer cp.Stop()
	log.Info("control plane started", "pid", cp.PID, "xds", cp.XDSAddress, "status", cp.StatusAddress, "config", dir)
	if *profileDir != "" {
		if *profileDir, err = filepath.Abs(*profileDir); err != nil {
			return err
		}
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			return err
		}
	}
	rep, err := xdsload.Run(ctx, xdsload.Options{
		Mesh: m, CP: cp,
		Fleet:   fleet,
		Changes: *changes, StormRate: *stormRate, StormDuration: *storm, Rest: *rest, Timeout: *timeout,
		ProfileDir: *profileDir, SimProfile: *simProfile, ChangeProfile: *changeProf, EndpointProfile: *epProf, MaxRSS: *maxRSS << 20, Scope: sc, Logger: log,
	})
	if rep != nil {
		if werr := rep.WriteTable(os.Stdout); werr != nil {
			return werr
		}
		if *jsonOut != "" {
			b, jerr := json.MarshalIndent(rep, "", "  ")
			if jerr != nil {
				return jerr
			}
			b = append(b, '\n')
			if *jsonOut == "-" {
				_, jerr = os.Stdout.Write(b)
			} else {
				jerr = os.WriteFile(*jsonOut, b, 0o644)
			}
			if jerr != nil {
				return jerr
			}
		}
	}
	return err
}

// pinSelf restricts every thread of this process to the CPUs of list
// ("0", "0-1", "0,2") and sets GOMAXPROCS to their count. Threads made
// later inherit the mask from the thread that makes them.
func pinSelf(list string) error {
	var set unix.CPUSet
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return fmt.Errorf("--sim-cpus %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return fmt.Errorf("--sim-cpus %q: %w", list, err)
			}
		}
		for c := a; c <= b; c++ {
			set.Set(c)
			n++
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("--sim-cpus: listing threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("--sim-cpus %q: thread %d: %w", list, tid, err)
		}
	}
	runtime.GOMAXPROCS(n)
	return nil
}
