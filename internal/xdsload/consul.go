package xdsload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// EndpointSource is where the mesh's spare endpoints — the ones endpoint
// changes move — live.
type EndpointSource string

// The endpoint sources of a mesh.
const (
	// SourceFile: spare endpoints are WorkloadEntries in the config
	// directory, like everything else; a change rewrites a file, so it
	// passes the file watch and a reload of the directory.
	SourceFile EndpointSource = "file"
	// SourceConsul: spare endpoints are VMs registered in a Consul
	// catalog; a change is a catalog write, which reaches the control
	// plane through its Consul registry's blocking queries. Config
	// (ServiceEntries, DestinationRules, VirtualServices) and the played
	// workloads stay in files.
	SourceConsul EndpointSource = "consul"
)

// ParseEndpointSource checks an endpoint source name.
func ParseEndpointSource(s string) (EndpointSource, error) {
	switch EndpointSource(s) {
	case SourceFile, SourceConsul:
		return EndpointSource(s), nil
	}
	return "", fmt.Errorf("unknown endpoint source %q: want file or consul", s)
}

// Spare is one spare endpoint of a mesh as a registry holds it.
type Spare struct {
	Service   string // "svc-0042"
	Namespace string // "ns-02"
	Host      string // "svc-0042.ns-02.svc.cluster.local"
	Name      string // "svc-0042-2", unique in the mesh
	IP        string
	Version   string // "v1" or "v2"
}

// SpareRegistry keeps a mesh's spare endpoints outside its files. Put
// returns once the registry has accepted the write: the control plane
// can learn of it from then on.
type SpareRegistry interface {
	Put(e Spare) error
	// Source names the registry in reports.
	Source() EndpointSource
}

// ConsulDomain is the `weft serve --consul-domain` that makes a Consul
// service named "<name>.<namespace>" the mesh host of the same service's
// ServiceEntry, <name>.<namespace>.svc.cluster.local: its instances are
// then endpoints of that host, and the mesh has no further hosts.
const ConsulDomain = "svc.cluster.local"

// ConsulRegistry registers spare endpoints in a Consul catalog as
// external nodes, one per endpoint (a VM each), as a VM's agent or
// consul-esm would. Safe for concurrent use.
type ConsulRegistry struct {
	// Addr is the agent's HTTP address (host:port).
	Addr   string
	client *api.Client
}

// NewConsulRegistry talks to the Consul agent at addr (host:port).
func NewConsulRegistry(addr string) (*ConsulRegistry, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.HttpClient = &http.Client{Timeout: 10 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", addr, err)
	}
	return &ConsulRegistry{Addr: addr, client: c}, nil
}

// ServeArgs are the `weft serve` arguments that read this catalog.
func (c *ConsulRegistry) ServeArgs() []string {
	return []string{"--consul", c.Addr, "--consul-domain", ConsulDomain}
}

// Source is SourceConsul.
func (c *ConsulRegistry) Source() EndpointSource { return SourceConsul }

// Put registers e, or moves it to e.IP when it is registered already.
func (c *ConsulRegistry) Put(e Spare) error {
	_, err := c.client.Catalog().Register(&api.CatalogRegistration{
		Node:     "vm-" + e.Name,
		Address:  e.IP,
		NodeMeta: map[string]string{"external-node": "true"},
		Service: &api.AgentService{
			ID:      e.Name,
			Service: e.Service + "." + e.Namespace,
			Address: e.IP,
			Port:    8080,
			Tags:    []string{"app=" + e.Service, "version=" + e.Version},
			Meta:    map[string]string{"protocol": "http", "weft-host": e.Host, "service-account": e.Service},
		},
	}, nil)
	if err != nil {
		return fmt.Errorf("consul %s: registering %s at %s: %w", c.Addr, e.Name, e.IP, err)
	}
	return nil
}

var _ SpareRegistry = (*ConsulRegistry)(nil)

// ConsulProcess is a `consul agent -dev` (one server, state in memory) on
// free loopback ports, started for a run.
type ConsulProcess struct {
	*ConsulRegistry
	// PID is the agent's process.
	PID int

	cmd  *exec.Cmd
	done chan error
}

// ConsulOptions start a Consul agent.
type ConsulOptions struct {
	// Binary is the consul binary; empty means ConsulBinary().
	Binary string
	// Dir holds the agent's port configuration; it must exist.
	Dir string
	// CPUs, when set, pins the agent with taskset.
	CPUs string
	// Stderr receives the agent's log; nil discards it.
	Stderr io.Writer
}

// ConsulBinary is the consul hack/tools.sh builds
// ($WEFT_TOOLS_DIR/bin/consul, default ~/.cache/weft-tools/bin/consul),
// else the one on $PATH; "" when there is none.
func ConsulBinary() string {
	dir := os.Getenv("WEFT_TOOLS_DIR")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".cache", "weft-tools")
		}
	}
	p := filepath.Join(dir, "bin", "consul")
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p
	}
	return ""
}

// StartConsul runs a dev agent and waits until it has a leader. It is
// killed when ctx is done; Stop ends it first.
func StartConsul(ctx context.Context, o ConsulOptions) (*ConsulProcess, error) {
	if o.Binary == "" {
		if o.Binary = ConsulBinary(); o.Binary == "" {
			return nil, errors.New("consul not found in $WEFT_TOOLS_DIR/bin (default ~/.cache/weft-tools/bin) or $PATH: build it with hack/tools.sh")
		}
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	port := func(i int) int {
		_, p, _ := strings.Cut(ports[i], ":")
		var n int
		_, _ = fmt.Sscan(p, &n)
		return n
	}
	b, _ := json.Marshal(map[string]any{
		"ports": map[string]int{"http": port(0), "serf_lan": port(1), "serf_wan": port(2), "server": port(3), "dns": -1, "grpc": -1, "grpc_tls": -1},
		// weft serve holds one blocking query per service, each on its
		// own connection (docs/registries.md): 1,000 services need more
		// than the default 200 connections per client address.
		"limits": map[string]int{"http_max_conns_per_client": 8192},
	})
	portsFile := filepath.Join(o.Dir, "consul-ports.json")
	if err := os.WriteFile(portsFile, b, 0o644); err != nil {
		return nil, err
	}
	args := []string{"agent", "-dev", "-client=127.0.0.1", "-bind=127.0.0.1", "-node=xdsload",
		"-config-file=" + portsFile, "-log-level=warn"}
	name := o.Binary
	if o.CPUs != "" {
		args = append([]string{"-c", o.CPUs, o.Binary}, args...)
		name = "taskset"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1")
	cmd.Stdout, cmd.Stderr = o.Stderr, o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting consul: %w", err)
	}
	reg, err := NewConsulRegistry(ports[0])
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	p := &ConsulProcess{ConsulRegistry: reg, PID: cmd.Process.Pid, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := reg.client.Status().Leader()
		if err == nil && leader != "" {
			return p, nil
		}
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("consul exited before electing a leader: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = p.Stop()
			return nil, fmt.Errorf("consul at %s: no leader after 30s (last: %v)", ports[0], err)
		}
	}
}

// Stop ends the agent (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (p *ConsulProcess) Stop() error {
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	return nil
}
