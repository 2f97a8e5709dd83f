// Package proxyview is what `weft proxy-status` and `weft proxy-config`
// show: it reads the connected proxies' xDS sync state from the control
// plane's status endpoint (GET /debug/proxies), finds a proxy's admin
// endpoint by name, reads its GET /config_dump, and renders both as
// istioctl-style tables. The cobra commands in cmd/weft are thin
// wrappers; the e2e tests call the same functions.
package proxyview

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/xds/server"
)

// DefaultControlPlane is where the control plane's status endpoint
// listens unless told otherwise (`weft serve --status-address`).
const DefaultControlPlane = controlplane.DefaultStatusAddress

// maxBody bounds what is read from a status or admin endpoint.
const maxBody = 64 << 20

// Client reads from a control plane's status endpoint and from proxies'
// admin endpoints. The zero value uses DefaultControlPlane and an HTTP
// client with a 10 s timeout that keeps no idle connections (a command
// makes one or two requests). Safe for concurrent use.
type Client struct {
	// ControlPlane is the host:port of the control plane's status endpoint.
	ControlPlane string
	HTTP         *http.Client
}

func (c *Client) controlPlane() string {
	if c.ControlPlane == "" {
		return DefaultControlPlane
	}
	return c.ControlPlane
}

func (c *Client) http() *http.Client {
	if c.HTTP == nil {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	return c.HTTP
}

// get reads url; a status other than 200 is an error with the status and
// the body's first line.
func (c *Client) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		if msg == "" {
			return nil, fmt.Errorf("HTTP %s", resp.Status)
		}
		return nil, fmt.Errorf("HTTP %s: %s", resp.Status, msg)
	}
	return body, nil
}

// Proxies reads GET /debug/proxies from the control plane.
func (c *Client) Proxies(ctx context.Context) (controlplane.DebugProxies, error) {
	var dp controlplane.DebugProxies
	url := "http://" + c.controlPlane() + "/debug/proxies"
	b, err := c.get(ctx, url)
	if err != nil {
		return dp, fmt.Errorf("control plane at %s (--control-plane): GET /debug/proxies: %w", c.controlPlane(), err)
	}
	if err := json.Unmarshal(b, &dp); err != nil {
		return dp, fmt.Errorf("control plane at %s: GET /debug/proxies: %w", c.controlPlane(), err)
	}
	return dp, nil
}

// Target is a proxy to read config from: its admin address and, when it
// was found through the control plane, its status.
type Target struct {
	Name   string // as the user named it
	Admin  string // host:port
	Status *server.ProxyStatus
}

func (t Target) String() string {
	if t.Status != nil {
		return fmt.Sprintf("%s (%s)", displayName(*t.Status), t.Admin)
	}
	return t.Admin
}

// isAddress reports whether name is a host:port rather than a proxy name.
// Node ids contain '~', never a bare host:port.
func isAddress(name string) bool {
	if strings.Contains(name, "~") {
		return false
	}
	_, port, err := net.SplitHostPort(name)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// Resolve finds the proxy called name: an admin address (host:port) is
// used as it is; anything else is looked up among the control plane's
// connected proxies as a node id, workload.namespace or workload name,
// and must match exactly one that reported its admin address.
func (c *Client) Resolve(ctx context.Context, name string) (Target, error) {
	if isAddress(name) {
		return Target{Name: name, Admin: name}, nil
	}
	dp, err := c.Proxies(ctx)
	if err != nil {
		return Target{}, fmt.Errorf("finding proxy %q: %w", name, err)
	}
	ps, err := find(dp.Proxies, name, c.controlPlane())
	if err != nil {
		return Target{}, err
	}
	if ps.AdminAddress == "" {
		return Target{}, fmt.Errorf("proxy %s (node %s) did not report its admin address (node metadata WEFT_ADMIN_ADDRESS); name it by host:port instead",
			displayName(ps), ps.Node)
	}
	return Target{Name: name, Admin: ps.AdminAddress, Status: &ps}, nil
}

// find picks the one proxy name designates.
func find(all []server.ProxyStatus, name, cp string) (server.ProxyStatus, error) {
	for _, match := range []func(server.ProxyStatus) bool{
		func(p server.ProxyStatus) bool { return p.Node == name },
		func(p server.ProxyStatus) bool { return p.Workload+"."+p.Namespace == name },
		func(p server.ProxyStatus) bool { return p.Workload == name },
	} {
		var hits []server.ProxyStatus
		for _, p := range all {
			if match(p) {
				hits = append(hits, p)
			}
		}
		switch len(hits) {
		case 0:
			continue
		case 1:
			return hits[0], nil
		default:
			var nodes []string
			for _, p := range hits {
				nodes = append(nodes, p.Node)
			}
			return server.ProxyStatus{}, fmt.Errorf("%q matches %d proxies (%s); name one by node id or admin address",
				name, len(hits), strings.Join(nodes, ", "))
		}
	}
	var names []string
	for _, p := range all {
		names = append(names, displayName(p))
	}
	known := "none is connected"
	if len(names) > 0 {
		known = "connected: " + strings.Join(names, ", ")
	}
	return server.ProxyStatus{}, fmt.Errorf("no proxy %q is connected to the control plane at %s (%s)", name, cp, known)
}

// ConfigDump reads and decodes the target's GET /config_dump.
func (c *Client) ConfigDump(ctx context.Context, t Target) (*Dump, error) {
	b, err := c.get(ctx, "http://"+t.Admin+"/config_dump")
	if err != nil {
		return nil, fmt.Errorf("proxy %s: GET /config_dump: %w", t, err)
	}
	d, err := ParseDump(b)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", t, err)
	}
	return d, nil
}

// displayName is how tables name a proxy: workload.namespace.
func displayName(p server.ProxyStatus) string {
	if p.Workload == "" {
		return p.Node
	}
	return p.Workload + "." + p.Namespace
}
