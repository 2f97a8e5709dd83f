// Package localmesh runs a whole Weft mesh inside one process on loopback:
// a control plane, and for each workload an echo app with its own
// weft-proxy sidecar, which gets its certificate from the control plane's
// CA with a token issued in process and takes its config over the secure
// port. `weft demo` and the end-to-end tests both use it, so
// the demo a user runs is the setup the tests prove.
package localmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// runner runs one component's Run in the background until Stop.
type runner struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func start(run func(context.Context) error) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	return r
}

// Stop cancels the component and waits for Run to return. Safe to call twice.
func (r *runner) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
		if errors.Is(r.err, context.Canceled) {
			r.err = nil
		}
	})
	return r.err
}

// ControlPlane is a control plane running in the background.
type ControlPlane struct {
	*controlplane.ControlPlane
	r *runner
}

// StartControlPlane binds and runs a control plane until Stop.
func StartControlPlane(opts controlplane.Options) (*ControlPlane, error) {
	cp, err := controlplane.New(opts)
	if err != nil {
		return nil, err
	}
	return &ControlPlane{ControlPlane: cp, r: start(cp.Run)}, nil
}

// Stop shuts the control plane down and waits for it.
func (c *ControlPlane) Stop() error { return c.r.stop() }

// WorkloadOptions describe one workload: an echo app and its sidecar.
type WorkloadOptions struct {
	Name      string
	Namespace string // default "default"
	Labels    map[string]string
	// IPs are the host addresses the proxy reports (INSTANCE_IPS); the
	// first is where its outbound and admin listeners bind.
	IPs []string
	// WorkloadPort is the port registered for this workload in the mesh
	// (its WorkloadEntry's port): the sidecar's inbound listener. Zero means
	// the workload receives no mesh traffic.
	WorkloadPort uint32
	// AppAddress is where the echo app listens; default IPs[0]:0.
	AppAddress string
	// AppTarget, when set, is where the sidecar's inbound port forwards
	// instead of the echo app: a server of the test's own behind the
	// sidecar (the echo app still runs, unused by mesh traffic).
	AppTarget string
	// OutboundPort and AdminPort on IPs[0]; zero picks a free port.
	OutboundPort, AdminPort int
	// XDSAddress is the control plane's address: its secure port, or its
	// plaintext port with Plaintext. Empty means ControlPlane's secure port.
	XDSAddress string
	// ControlPlane, when set, issues the sidecar's bootstrap token (unless
	// Token is set) and gives its trust root (unless RootCertPEM is set),
	// in process.
	ControlPlane *ControlPlane
	// Token is the bootstrap token; RootCertPEM the mesh's trust root.
	Token       string
	RootCertPEM []byte
	// ServiceAccount is the workload's identity; default its app label
	// (Labels["app"]), else Name: the versions of an app share one
	// identity, as the service accounts of a Kubernetes deployment's pods.
	ServiceAccount string
	// Plaintext runs the sidecar without TLS or certificate, against a
	// plaintext xDS port.
	Plaintext bool
	Logger    *slog.Logger
	// Locality is the proxy's "region/zone/subzone" (node.locality).
	Locality string
	// ListenerDrain is the proxy's drain period for removed listeners;
	// zero for the default.
	ListenerDrain time.Duration
	// XDSProtocol is the ADS variant the sidecar speaks; empty for the
	// default (delta).
	XDSProtocol xdsclient.Protocol
	// DNSServers resolve the sidecar's DNS clusters (proxy.Options);
	// empty for the system's resolver.
	DNSServers []string
}

// Workload is a running echo app with its sidecar.
type Workload struct {
	Opts     WorkloadOptions
	Echo     *echo.Server
	Proxy    *proxy.Proxy
	Outbound string // host:port of the sidecar's outbound listener
	echoR    *runner
	proxyR   *runner
}

// StartWorkload starts the echo app, then its proxy, and returns without
// waiting for the proxy to be ready (see Workload.Proxy.Ready).
func StartWorkload(o WorkloadOptions) (*Workload, error) {
	if len(o.IPs) == 0 {
		return nil, fmt.Errorf("workload %s: at least one IP is required", o.Name)
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = o.Labels["app"]
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = o.Name
	}
	// A token issued here is not kept in Opts: a workload started again
	// from its Opts gets a new one.
	tok := o.Token
	if o.ControlPlane != nil && !o.Plaintext {
		if o.XDSAddress == "" {
			o.XDSAddress = o.ControlPlane.XDSAddr().String()
		}
		if o.RootCertPEM == nil {
			o.RootCertPEM = o.ControlPlane.RootCertPEM()
		}
		if tok == "" {
			var err error
			if tok, err = o.ControlPlane.IssueToken(o.Namespace, o.ServiceAccount, 0); err != nil {
				return nil, fmt.Errorf("workload %s: %w", o.Name, err)
			}
		}
	}
	ip := o.IPs[0]
	// The ports picked on ip must differ from each other and from the
	// workload port (picked by the caller, maybe on another address), or
	// the sidecar's inbound listener finds its port taken.
	taken := []int{int(o.WorkloadPort), o.OutboundPort, o.AdminPort}
	pick := func(p *int) error {
		if *p != 0 {
			return nil
		}
		port, err := freePortExcept(ip, taken)
		if err != nil {
			return err
		}
		*p = port
		taken = append(taken, port)
		return nil
	}
	if err := pick(&o.OutboundPort); err != nil {
		return nil, err
	}
	if err := pick(&o.AdminPort); err != nil {
		return nil, err
	}
	if o.AppAddress == "" {
		var app int
		if err := pick(&app); err != nil {
			return nil, err
		}
		o.AppAddress = net.JoinHostPort(ip, strconv.Itoa(app))
	}
	var err error
	es, err := echo.New(echo.Options{Name: o.Name, Version: o.Labels["version"], Address: o.AppAddress,
		Logger: o.Logger.With("workload", o.Name), Upstream: net.JoinHostPort(ip, strconv.Itoa(o.OutboundPort))})
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", o.Name, err)
	}
	w := &Workload{Opts: o, Echo: es, Outbound: net.JoinHostPort(ip, strconv.Itoa(o.OutboundPort))}
	w.echoR = start(es.Run)

	id := contract.Identity{
		ID:              contract.DefaultNodeID(ip, o.Name, o.Namespace),
		Namespace:       o.Namespace,
		WorkloadName:    o.Name,
		Labels:          o.Labels,
		IPs:             o.IPs,
		ServiceAccount:  o.ServiceAccount,
		OutboundAddress: w.Outbound,
		AppPorts:        map[uint32]string{},
		Locality:        o.Locality,
	}
	if o.WorkloadPort != 0 {
		id.AppPorts[o.WorkloadPort] = es.Addr().String()
		if o.AppTarget != "" {
			id.AppPorts[o.WorkloadPort] = o.AppTarget
		}
	}
	var token func() (string, error)
	if tok != "" {
		token = func() (string, error) { return tok, nil }
	}
	var td string
	if o.ControlPlane != nil {
		td = o.ControlPlane.TrustDomain()
	}
	p, err := proxy.New(proxy.Options{
		Identity:      id,
		XDSAddress:    o.XDSAddress,
		Plaintext:     o.Plaintext,
		RootCertPEM:   o.RootCertPEM,
		TrustDomain:   td,
		Token:         token,
		AdminAddress:  net.JoinHostPort(ip, strconv.Itoa(o.AdminPort)),
		Logger:        o.Logger.With("workload", o.Name),
		ListenerDrain: o.ListenerDrain,
		XDS:           xdsclient.Options{Protocol: o.XDSProtocol},
		DNSServers:    o.DNSServers,
	})
	if err != nil {
		_ = w.echoR.stop()
		return nil, fmt.Errorf("workload %s: %w", o.Name, err)
	}
	w.Proxy = p
	w.proxyR = start(p.Run)
	return w, nil
}

// StopProxy stops only the sidecar.
func (w *Workload) StopProxy() error { return w.proxyR.stop() }

// Stop stops the proxy, then the app.
func (w *Workload) Stop() error {
	return errors.Join(w.proxyR.stop(), w.echoR.stop())
}

// FreePort returns a TCP port that was free on ip a moment ago. Tests give
// each workload its own loopback address, so nothing else races for it.
func FreePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePortOn returns a TCP port that was free on every one of ips a
// moment ago, for listeners that must share a port across addresses (two
// gateway replicas behind one Gateway). The kernel picks the port on the
// first address; one that is taken on another is tried again, a bounded
// number of times.
func FreePortOn(ips ...string) (int, error) {
	if len(ips) == 0 {
		return 0, errors.New("finding a free port: no addresses")
	}
	var last error
	for range 20 {
		port, err := FreePort(ips[0])
		if err != nil {
			return 0, err
		}
		last = nil
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				last = err
				break
			}
			l.Close()
		}
		if last == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("finding a port free on all of %v: %w", ips, last)
}

// FreePorts returns n distinct TCP ports that were free on ip a moment
// ago: each is held until all are found, so two calls' worth of FreePort
// cannot return the same port twice (the kernel may hand a port it just
// got back out again).
func FreePorts(ip string, n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port on %s: %w", ip, err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Serving reports whether the workload can take mesh traffic: its sidecar
// has applied config and, for a workload with a WorkloadPort, its inbound
// listener for that port is bound on one of its IPs.
func (w *Workload) Serving() bool {
	if !w.Proxy.Ready() {
		return false
	}
	if w.Opts.WorkloadPort == 0 {
		return true
	}
	for _, ip := range w.Opts.IPs {
		if w.Proxy.ListenerAddr(contract.ListenerName(ip, w.Opts.WorkloadPort)) != nil {
			return true
		}
	}
	return false
}

// freePortExcept is FreePort on ip, never one of taken (tried a bounded
// number of times).
func freePortExcept(ip string, taken []int) (int, error) {
	for range 20 {
		p, err := FreePort(ip)
		if err != nil {
			return 0, err
		}
		if !slices.Contains(taken, p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s outside %v", ip, taken)
}
