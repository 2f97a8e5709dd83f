// Package demo is `weft demo`: one command that starts a whole mesh on
// loopback from a config directory (the embedded examples/canary by
// default), drives traffic through it, prints the split each version
// received, and keeps running so a person can edit the config live.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"weft.dev/weft/examples"
	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// Options configure the demo.
type Options struct {
	// ConfigDir is the mesh config; empty means a temporary copy of the
	// embedded examples/canary.
	ConfigDir string
	// From is the workload whose sidecar sends the demo traffic; To is the
	// service it calls; CanaryHeader is the header that selects the canary.
	From, To, CanaryHeader string
	// Requests is how many requests each measurement sends.
	Requests int
	// Duration stops the demo by itself after this long; zero runs until ctx ends.
	Duration     time.Duration
	XDSAddress   string
	StatusAddr   string
	Out          io.Writer
	Logger       *slog.Logger
	ReportPeriod time.Duration
}

// Run runs the demo until ctx is done or Duration has passed.
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.Requests <= 0 {
		o.Requests = 1000
	}
	if o.ReportPeriod <= 0 {
		o.ReportPeriod = 3 * time.Second
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	dir := o.ConfigDir
	if dir == "" {
		tmp, err := extractCanary()
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}

	// The workloads to start are the WorkloadEntries of the config.
	store := config.NewStore(config.Options{Logger: o.Logger})
	files, err := config.ReadDir(dir)
	if err != nil {
		return err
	}
	snap := store.LoadDir(files)
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			return fmt.Errorf("demo config: %w", d)
		}
	}
	if len(snap.WorkloadEntries) == 0 {
		return fmt.Errorf("demo config %s has no WorkloadEntry to run", dir)
	}

	// The CA's root lives as long as the demo: sidecars reconnecting to a
	// control plane restarted in between would not trust a new one.
	caDir, err := os.MkdirTemp("", "weft-demo-ca-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(caDir)
	cp, err := localmesh.StartControlPlane(controlplane.Options{ConfigDir: dir, XDSAddress: o.XDSAddress,
		StatusAddress: o.StatusAddr, CADir: filepath.Join(caDir, "ca"), Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer cp.Stop()

	var from *localmesh.Workload
	var workloads []*localmesh.Workload
	defer func() {
		for _, w := range workloads {
			_ = w.Stop()
		}
	}()
	for _, we := range snap.WorkloadEntries {
		var port uint32
		for _, p := range sortedPorts(we.Spec.GetPorts()) {
			port = p
			break
		}
		w, err := localmesh.StartWorkload(localmesh.WorkloadOptions{
			Name: we.Name, Namespace: we.Namespace, Labels: we.Spec.GetLabels(), ServiceAccount: we.Spec.GetServiceAccount(),
			IPs: []string{we.Spec.GetAddress()}, WorkloadPort: port,
			AppAddress:   fmt.Sprintf("%s:%d", we.Spec.GetAddress(), 10000+port),
			OutboundPort: 15001, AdminPort: 15000,
			ControlPlane: cp, Logger: o.Logger,
		})
		if err != nil {
			return err
		}
		workloads = append(workloads, w)
		if we.Name == o.From {
			from = w
		}
	}
	if from == nil {
		return fmt.Errorf("demo: no WorkloadEntry named %q to send traffic from", o.From)
	}
	fmt.Fprintf(o.Out, "Weft demo: control plane on %s (ADS and the CA over TLS; status http://%s/status), config in %s\n", cp.XDSAddr(), cp.StatusAddr(), dir)
	for _, w := range workloads {
		fmt.Fprintf(o.Out, "  %-12s %-4s app %s, sidecar inbound %s:%d, outbound %s, admin http://%s\n",
			w.Opts.Name, w.Opts.Labels["version"], w.Echo.Addr(), w.Opts.IPs[0], w.Opts.WorkloadPort, w.Outbound, w.Proxy.AdminAddr())
	}
	if err := waitReady(ctx, workloads); err != nil {
		return err
	}
	fmt.Fprintln(o.Out, "\nMutual TLS between the sidecars: each holds a workload certificate from the mesh CA (see /certs")
	fmt.Fprintln(o.Out, "on its admin address), uses it toward the others, and accepts what its PeerAuthentication says:")
	for _, w := range workloads {
		if b := w.Proxy.Certs().Current(); b != nil {
			fmt.Fprintf(o.Out, "  %-12s %-46s mTLS: %-10s certificate expires %s\n", w.Opts.Name, b.ID,
				mtlsMode(snap, w), b.Leaf().NotAfter.Local().Format(time.DateTime))
		}
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	if err := waitRouted(ctx, c, from, o.To, map[string]string{o.CanaryHeader: "true"}); err != nil {
		return err
	}

	fmt.Fprintf(o.Out, "\nSending %d requests to %q through %s's sidecar:\n", o.Requests, o.To, o.From)
	report(o.Out, "no header", measure(ctx, c, from, o.To, nil, o.Requests))
	report(o.Out, o.CanaryHeader+": true", measure(ctx, c, from, o.To, map[string]string{o.CanaryHeader: "true"}, o.Requests/10))

	fmt.Fprintf(o.Out, `
Try it:
  curl -s -H 'Host: %[1]s' http://%[2]s/
  curl -s -H 'Host: %[1]s' -H '%[3]s: true' http://%[2]s/
  http_proxy=http://%[2]s curl -s http://%[1]s/
  curl -s http://%[4]s/stats/prometheus | grep istio_requests_total
  curl -s -H 'Host: %[1]s' http://%[6]s/    # plaintext, straight to a sidecar: refused when STRICT
Edit the weights in %[5]s: the new split is in force within a second.
Ctrl-C stops the demo.

`, o.To, from.Outbound, o.CanaryHeader, from.Proxy.AdminAddr(), filepath.Join(dir, "backend.yaml"), inbound(workloads, from))

	tick := time.NewTicker(o.ReportPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(o.Out, "stopping")
			return nil
		case <-tick.C:
			report(o.Out, "live", measure(ctx, c, from, o.To, nil, 100))
		}
	}
}

// mtlsMode is the mutual TLS mode w's sidecar accepts on its workload
// port, from the PeerAuthentications of the demo's config (mesh-wide in
// the root namespace istio-system, as the control plane's default).
func mtlsMode(snap *config.Snapshot, w *localmesh.Workload) config.MTLSMode {
	set := config.SelectPeerAuthentications(config.DefaultRootNamespace, w.Opts.Namespace, w.Opts.Labels, snap.PeerAuthentications)
	return set.Compose().ModeFor(w.Opts.WorkloadPort)
}

// inbound is the sidecar inbound address of a workload other than from
// (one that receives the demo's traffic), for the plaintext curl.
func inbound(ws []*localmesh.Workload, from *localmesh.Workload) string {
	for _, w := range ws {
		if w != from && w.Opts.WorkloadPort != 0 {
			return fmt.Sprintf("%s:%d", w.Opts.IPs[0], w.Opts.WorkloadPort)
		}
	}
	return fmt.Sprintf("%s:%d", from.Opts.IPs[0], from.Opts.WorkloadPort)
}

// tally is what one measurement saw.
type tally struct {
	n, failed int
	byVersion map[string]int
}

func measure(ctx context.Context, c *http.Client, from *localmesh.Workload, host string, hdr map[string]string, n int) tally {
	t := tally{byVersion: map[string]int{}}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		t.n++
		r, code, err := get(ctx, c, from, host, hdr)
		if err != nil || code != http.StatusOK {
			t.failed++
			continue
		}
		t.byVersion[r.Version]++
	}
	return t
}

func report(w io.Writer, label string, t tally) {
	if t.n == 0 {
		return
	}
	versions := make([]string, 0, len(t.byVersion))
	for v := range t.byVersion {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	var parts []string
	for _, v := range versions {
		parts = append(parts, fmt.Sprintf("%s %4d (%5.1f%%)", v, t.byVersion[v], 100*float64(t.byVersion[v])/float64(t.n)))
	}
	if t.failed > 0 {
		parts = append(parts, fmt.Sprintf("failed %d", t.failed))
	}
	fmt.Fprintf(w, "  %-16s %5d requests  %s\n", label, t.n, strings.Join(parts, "  "))
}

func get(ctx context.Context, c *http.Client, from *localmesh.Workload, host string, hdr map[string]string) (echo.Reply, int, error) {
	var r echo.Reply
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+from.Outbound+"/", nil)
	if err != nil {
		return r, 0, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return r, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		err = decodeJSON(resp.Body, &r)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return r, resp.StatusCode, err
}

func waitReady(ctx context.Context, ws []*localmesh.Workload) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, w := range ws {
		for !w.Serving() {
			select {
			case <-ctx.Done():
				return fmt.Errorf("sidecar of %s did not get its config: %w", w.Opts.Name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// waitRouted waits until the routing config is in force: 20 requests in a
// row that carry the canary header reach one version. Before the
// VirtualService arrives the default route round-robins over all versions,
// so a streak shows the header route is applied.
func waitRouted(ctx context.Context, c *http.Client, from *localmesh.Workload, host string, hdr map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var last error
	for {
		streak, version := 0, ""
		for ; streak < 20; streak++ {
			r, code, err := get(ctx, c, from, host, hdr)
			if err != nil || code != http.StatusOK {
				last = errors.Join(err, fmt.Errorf("status %d", code))
				break
			}
			if streak > 0 && r.Version != version {
				last = fmt.Errorf("canary header reached both %s and %s", version, r.Version)
				break
			}
			version = r.Version
		}
		if streak == 20 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("routing to %s through %s not in force: %w", host, from.Opts.Name, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// extractCanary copies the embedded examples/canary into a temporary dir.
func extractCanary() (string, error) {
	dir, err := os.MkdirTemp("", "weft-demo-")
	if err != nil {
		return "", err
	}
	err = fs.WalkDir(examples.Canary, "canary", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := examples.Canary.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o644)
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("extracting the embedded demo config: %w", err)
	}
	return dir, nil
}

func sortedPorts(m map[string]uint32) []uint32 {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]uint32, 0, len(names))
	for _, n := range names {
		out = append(out, m[n])
	}
	return out
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
