package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/mesh"
)

// minWorkloadCertTTL is the shortest --workload-cert-ttl: shorter
// lifetimes exist for tests only (controlplane.Options).
const minWorkloadCertTTL = time.Minute

func newServeCmd() *cobra.Command {
	var (
		o              controlplane.Options
		regs           registryFlags
		inj            injectionFlags
		tracingF       tracingFlags
		outboundPolicy string
		egressScope    string
		meshConfigFile string
		memLimit       string
		keepStartup    bool
	)
	cmd := &cobra.Command{
		Use:   "serve [--config DIR] [--kubeconfig FILE | --in-cluster] [--consul ADDR]",
		Short: "Run the control plane: watch Istio config and registries, serve xDS and the mesh CA",
		Long: `Run the control plane: watch the Istio config in DIR (and/or the Kubernetes
API server's Istio custom resources) and serve it to proxies over ADS, with
the services of ServiceEntries, Kubernetes and Consul merged into one mesh
(docs/registries.md), and run the mesh CA that gives each proxy its
workload certificate.

ADS and the CA are served over TLS on the secure port (--xds-address);
proxies verify it against the mesh's root (GET /debug/root-cert, or
weft token --root-cert-out) and prove who they are with a bootstrap token
(weft token) the first time. --xds-plaintext-address also serves ADS
without TLS, for local development. See docs/security.md.

The status address serves /status, /metrics and /debug/*, including
POST /debug/token, which issues bootstrap tokens: it answers only callers on
this host (loopback), but anyone who can reach it from here can become any
workload. Keep it on loopback, or at least away from untrusted hosts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger(cmd)
			if err != nil {
				return err
			}
			if o.WorkloadCertTTL < minWorkloadCertTTL {
				return fmt.Errorf("--workload-cert-ttl %v: must be at least %v", o.WorkloadCertTTL, minWorkloadCertTTL)
			}
			if o.OutboundTrafficPolicy, err = mesh.ParseOutboundTrafficPolicy(outboundPolicy); err != nil {
				return fmt.Errorf("--outbound-traffic-policy: %w", err)
			}
			if o.EgressScope, err = mesh.ParseEgressScope(egressScope); err != nil {
				return fmt.Errorf("--default-egress-scope: %w", err)
			}
			o.Logger = log
			limit, err := memoryLimit(memLimit)
			if err != nil {
				return err
			}
			applyMemoryLimit(limit, log)
			o.PageOutStartup = !keepStartup
			if meshConfigFile != "" {
				mc, warns, err := config.LoadMeshConfig(meshConfigFile)
				if err != nil {
					return fmt.Errorf("--mesh-config: %w", err)
				}
				for _, w := range warns {
					log.Warn("mesh config", "warning", w.Error())
				}
				o.MeshConfig = mc
			}
			if err := regs.apply(&o, log); err != nil {
				return err
			}
			if err := inj.apply(&o, &regs); err != nil {
				return err
			}
			if err := tracingF.apply(&o); err != nil {
				return err
			}
			cp, err := controlplane.New(o)
			if err != nil {
				return err
			}
			status, plain := "disabled", "off"
			if a := cp.StatusAddr(); a != nil {
				status = a.String()
			}
			if a := cp.XDSPlaintextAddr(); a != nil {
				plain = a.String()
				log.Warn("plaintext xDS is on: anyone who can reach it gets the mesh's config, and its proxies run without certificates; for local development only", "address", plain)
			}
			injection := "off"
			if a := cp.InjectionAddr(); a != nil {
				injection = a.String()
			}
			log.Info("control plane serving", "xds", cp.XDSAddr().String(), "xds_plaintext", plain, "status", status, "injection", injection, "config", o.ConfigDir)
			return cp.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ConfigDir, "config", "", "directory of Istio YAML (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry; Weft's RateLimit), watched for changes")
	f.StringVar(&o.XDSAddress, "xds-address", controlplane.DefaultXDSAddress, "the secure port: ADS and the CA over TLS")
	f.StringVar(&o.XDSPlaintextAddress, "xds-plaintext-address", "", "also serve ADS without TLS here (no CA, proxies without certificates): local development only; empty is off")
	f.StringVar(&o.StatusAddress, "status-address", "127.0.0.1:15014", "address of the status endpoint (/status, /metrics, /debug/proxies, /debug/analyze, /debug/explain, /debug/root-cert, POST /debug/token); \"-\" disables it. It issues bootstrap tokens to local callers: keep it on loopback")
	f.StringVar(&o.CADir, "ca-dir", "", "directory of the CA's root and key (Istio's cacerts layout): used if present (a plug-in CA when ca-cert.pem is an intermediate), else a new self-signed root is written there. Empty keeps the root in memory: a restart makes a new trust root")
	f.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh's SPIFFE identities")
	f.DurationVar(&o.WorkloadCertTTL, "workload-cert-ttl", 24*time.Hour, "lifetime of workload certificates (at least 1m); proxies renew at about half of it")
	f.StringVar(&o.DomainSuffix, "domain-suffix", "cluster.local", "cluster domain used to expand short host names")
	f.StringVar(&o.RootNamespace, "root-namespace", "istio-system", "namespace whose PeerAuthentication, AuthorizationPolicy and RequestAuthentication without a selector apply to the whole mesh")
	f.BoolVar(&o.HTTP10, "http10", false, "every proxy accepts HTTP/1.0 requests (Istio's PILOT_HTTP10); otherwise only proxies started with --http10 (ISTIO_META_HTTP10) do, and the others answer them 426 Upgrade Required, as Envoy and Istio")
	f.StringVar(&egressScope, "default-egress-scope", string(mesh.EgressScopeMesh), "what a proxy without a Sidecar resource is sent: mesh (every service, as Istio) or namespace (the services of its namespace and of the root namespace, and what their VirtualServices route to)")
	f.StringVar(&meshConfigFile, "mesh-config", "", "Istio mesh config file (MeshConfig YAML, as the istio ConfigMap's \"mesh\" key): Weft reads extensionProviders (telemetry and envoyExtAuthzHttp/Grpc), defaultProviders, accessLogFile/accessLogFormat/accessLogEncoding, dnsRefreshRate and localityLbSetting, once at start (docs/observability.md, docs/security.md, docs/load-balancing.md)")
	f.StringVar(&outboundPolicy, "outbound-traffic-policy", string(mesh.AllowAny), "what captured sidecars do with traffic to destinations outside the registry: ALLOW_ANY forwards it to where it was going (PassthroughCluster), REGISTRY_ONLY refuses it (BlackHoleCluster), as Istio's outboundTrafficPolicy.mode")
	f.DurationVar(&o.JWKSRefresh, "jwks-refresh-interval", 20*time.Minute, "how often the JWT keys of a RequestAuthentication's jwksUri are fetched again")
	f.DurationVar(&o.Debounce, "debounce", 0, "a change is pushed at once, unless it follows a push by less than this; then it waits for this long a quiet period, as a burst of edits (0 = default 100ms)")
	f.DurationVar(&o.DebounceMax, "debounce-max", 0, "longest a change waits during a burst of edits (0 = default 1s)")
	f.DurationVar(&o.AutoRegistrationGrace, "auto-registration-grace", 0, "how long a VM registered by WorkloadGroup (weft-proxy --auto-register-group) stays after its proxy disconnects (0 = default 10s)")
	f.DurationVar(&o.SourceSyncTimeout, "source-sync-timeout", controlplane.DefaultSourceSyncTimeout, "how long to wait for the Kubernetes and Consul sources to be read once before serving the first config without the late ones")
	f.BoolVar(&keepStartup, "keep-startup-pages", false, "keep mapped the pages of the executable that only start-up used; by default they are handed back (Linux madvise MADV_PAGEOUT and MADV_DONTNEED) 30s after the first config is published; a page needed again is mapped again at its next access, without read-ahead (MADV_RANDOM)")
	f.DurationVar(&o.ReleaseWhenQuiet, "release-memory-when-quiet", controlplane.DefaultReleaseWhenQuiet, "once the xDS server has sent nothing and been given nothing for this long, hand the heap's free memory back to the operating system (a collection, then every free page returned): the garbage a push to many proxies leaves would otherwise stay resident until the next; 0: never")
	f.StringVar(&memLimit, "memory-limit", "auto", "soft memory limit of the Go runtime (as GOMEMLIMIT, which wins if set): a size (512Mi, 1G), 0 for off, or auto: 90% of the cgroup's memory limit, off without one. The garbage collector works harder near it rather than let garbage grow the process; it does not bound the live heap (docs/control-plane.md)")
	regs.register(f)
	inj.register(f)
	tracingF.register(f)
	return cmd
}
