package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// STRICT_DNS and LOGICAL_DNS clusters: the proxy resolves the names of
// the endpoints of load_assignment itself, as Envoy does, and keeps
// resolving them while the cluster runs.
//
//   - STRICT_DNS: every address of every name is a host, with the
//     endpoint's weight, health, metadata, locality and priority;
//   - LOGICAL_DNS: the one endpoint is one host at the first address of
//     the latest answer (new connections follow it; open ones finish).
//
// A name is looked up again after dns_refresh_rate (Envoy's default
// 5 s), or after the answer's TTL when respect_dns_ttl is set and the
// resolver tells it; after a failed lookup, after
// dns_failure_refresh_rate (exponential backoff between its base and max
// interval), else dns_refresh_rate. A failed lookup — an error, a name
// that no longer exists, an empty answer — keeps the name's last good
// addresses: the cluster never loses hosts to a DNS outage.
//
// The first lookups are made before the cluster serves (Warm: Envoy's
// cluster warming); a cluster replaced by a changed Cluster resource
// starts from the last good addresses of the one it replaces. The
// refresh goroutine starts when the cluster becomes part of the running
// configuration (RetainConnections) and ends when its state is retired
// (CloseIdle): a configuration that is rejected never starts one.

// Resolver looks up host names for the clusters the proxy resolves
// itself. network is "ip4", "ip6" or "ip" (both); ttl is how long the
// answer may be used, zero when the resolver does not know. It must
// honour ctx and be safe for concurrent use.
type Resolver interface {
	LookupIP(ctx context.Context, network, host string) (addrs []netip.Addr, ttl time.Duration, err error)
}

// SystemResolver resolves with the host's resolver (net.DefaultResolver:
// /etc/hosts, /etc/resolv.conf, search domains), which does not tell
// TTLs: names are looked up again every dns_refresh_rate.
type SystemResolver struct{}

// LookupIP implements Resolver.
func (SystemResolver) LookupIP(ctx context.Context, network, host string) ([]netip.Addr, time.Duration, error) {
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	return addrs, 0, err
}

const (
	// defaultDNSRefresh is Envoy's dns_refresh_rate default.
	defaultDNSRefresh = 5 * time.Second
	// dnsLookupTimeout bounds one lookup of one name.
	dnsLookupTimeout = 10 * time.Second
	// minDNSRefresh keeps a TTL of a few milliseconds from spinning.
	minDNSRefresh = 100 * time.Millisecond
)

// dnsConfig is what a Cluster says about resolving its names.
type dnsConfig struct {
	logical    bool
	networks   []string // tried in order until one answers (AUTO, V4_PREFERRED)
	refresh    time.Duration
	respectTTL bool
	failBase   time.Duration // 0: refresh
	failMax    time.Duration
}

func parseDNSConfig(c *clusterv3.Cluster) (dnsConfig, error) {
	cfg := dnsConfig{logical: c.GetType() == clusterv3.Cluster_LOGICAL_DNS, refresh: defaultDNSRefresh,
		respectTTL: c.GetRespectDnsTtl()}
	switch c.GetDnsLookupFamily() {
	case clusterv3.Cluster_AUTO:
		cfg.networks = []string{"ip6", "ip4"}
	case clusterv3.Cluster_V4_ONLY:
		cfg.networks = []string{"ip4"}
	case clusterv3.Cluster_V6_ONLY:
		cfg.networks = []string{"ip6"}
	case clusterv3.Cluster_V4_PREFERRED:
		cfg.networks = []string{"ip4", "ip6"}
	case clusterv3.Cluster_ALL:
		cfg.networks = []string{"ip"}
	default:
		return cfg, fmt.Errorf("dns_lookup_family: %s is unsupported", c.GetDnsLookupFamily())
	}
	if r := c.GetDnsRefreshRate(); r != nil {
		if err := r.CheckValid(); err != nil || r.AsDuration() < time.Millisecond {
			return cfg, fmt.Errorf("dns_refresh_rate: must be at least 1ms")
		}
		cfg.refresh = r.AsDuration()
	}
	if f := c.GetDnsFailureRefreshRate(); f != nil {
		base, maxI := f.GetBaseInterval(), f.GetMaxInterval()
		if base.CheckValid() != nil || base.AsDuration() < time.Millisecond {
			return cfg, fmt.Errorf("dns_failure_refresh_rate.base_interval: must be at least 1ms")
		}
		cfg.failBase, cfg.failMax = base.AsDuration(), 10*base.AsDuration()
		if maxI != nil {
			if maxI.CheckValid() != nil || maxI.AsDuration() < cfg.failBase {
				return cfg, fmt.Errorf("dns_failure_refresh_rate.max_interval: must be at least base_interval")
			}
			cfg.failMax = maxI.AsDuration()
		}
	}
	// Resolvers per cluster would need a DNS client per cluster; the
	// proxy has one (SystemResolver, or --dns-server), as Envoy's
	// bootstrap default resolver.
	if len(c.GetDnsResolvers()) > 0 || len(c.GetDnsResolutionConfig().GetResolvers()) > 0 { //nolint:staticcheck // deprecated, still rejected
		return cfg, fmt.Errorf("dns_resolvers: per-cluster DNS servers are unsupported; the proxy's resolver (--dns-server) is used")
	}
	if c.GetTypedDnsResolverConfig() != nil {
		return cfg, fmt.Errorf("typed_dns_resolver_config: unsupported; the proxy's resolver (--dns-server) is used")
	}
	return cfg, nil
}

// dnsStats are Envoy's update_* counters, per name lookup.
type dnsStats struct {
	attempt, success, failure, noRebuild interface{ Inc() }
}

// dnsHosts is the host set of a STRICT_DNS or LOGICAL_DNS cluster. It
// lives in the cluster's state. The current picker is read lock-free;
// the rest is guarded by mu.
type dnsHosts struct {
	name     string // the cluster's, for logs
	cfg      dnsConfig
	resolver Resolver
	log      *slog.Logger
	stats    dnsStats
	template *endpointv3.ClusterLoadAssignment
	names    []string // the names to resolve, sorted
	// build makes the picker of an assignment with addresses only, wiring
	// connections, outlier detection and slow start (Builder.Build's).
	build func(*endpointv3.ClusterLoadAssignment) (*picker, error)
	// retain closes the pooled connections of endpoints that left.
	retain func(*picker)

	cur atomic.Pointer[picker]

	mu       sync.Mutex
	last     map[string][]netip.Addr // last good answer of each name
	failing  map[string]bool         // names whose last lookup failed (logged once)
	fails    int                     // consecutive rounds with a failure (backoff)
	next     time.Duration           // until the next round
	warmed   bool
	running  bool
	stopped  bool
	cancel   context.CancelFunc
	done     chan struct{}
	resolved *endpointv3.ClusterLoadAssignment // cur's, for the config dump
}

// newDNSHosts prepares the host set of cluster c (its load_assignment
// cla); nothing is resolved yet.
func newDNSHosts(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, r Resolver, log *slog.Logger, st dnsStats) (*dnsHosts, error) {
	cfg, err := parseDNSConfig(c)
	if err != nil {
		return nil, err
	}
	if cfg.logical {
		if len(cla.GetEndpoints()) != 1 || len(cla.GetEndpoints()[0].GetLbEndpoints()) != 1 {
			return nil, fmt.Errorf("load_assignment: a LOGICAL_DNS cluster takes exactly one locality with one endpoint")
		}
	}
	d := &dnsHosts{name: c.GetName(), cfg: cfg, resolver: r, log: log, stats: st, template: cla,
		last: map[string][]netip.Addr{}, failing: map[string]bool{}, next: cfg.refresh}
	seen := map[string]bool{}
	for _, loc := range cla.GetEndpoints() {
		for _, lbe := range loc.GetLbEndpoints() {
			a := lbe.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
			if _, err := netip.ParseAddr(a); err != nil && a != "" && !seen[a] {
				seen[a] = true
				d.names = append(d.names, a)
			}
		}
	}
	slices.Sort(d.names)
	return d, nil
}

// seed starts from prev's last good addresses for the names both have:
// a cluster replaced by a changed resource keeps its hosts while its
// own lookups are made.
func (d *dnsHosts) seed(prev *dnsHosts) {
	if prev == nil {
		return
	}
	prev.mu.Lock()
	defer prev.mu.Unlock()
	for _, n := range d.names {
		if a, ok := prev.last[n]; ok {
			d.last[n] = a
		}
	}
}

// rebuild makes the picker of the current answers the current one.
// d.mu is held.
func (d *dnsHosts) rebuild() error {
	cla := d.assignment()
	p, err := d.build(cla)
	if err != nil {
		return err
	}
	d.resolved = cla
	old := d.cur.Swap(p)
	if old != nil && d.running {
		d.retain(p)
	}
	return nil
}

// assignment is the template with every name replaced by its addresses
// (all of them, or the first for LOGICAL_DNS); a name without an answer
// has no host. d.mu is held.
func (d *dnsHosts) assignment() *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: d.template.GetClusterName(), Policy: d.template.GetPolicy()}
	for _, loc := range d.template.GetEndpoints() {
		nl := &endpointv3.LocalityLbEndpoints{Locality: loc.GetLocality(), LoadBalancingWeight: loc.GetLoadBalancingWeight(),
			Priority: loc.GetPriority()}
		for _, lbe := range loc.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if _, err := netip.ParseAddr(sa.GetAddress()); err == nil {
				nl.LbEndpoints = append(nl.LbEndpoints, lbe)
				continue
			}
			addrs := d.last[sa.GetAddress()]
			if d.cfg.logical && len(addrs) > 1 {
				addrs = addrs[:1]
			}
			for _, a := range addrs {
				e := xdswire.Clone(lbe)
				e.GetEndpoint().Hostname = sa.GetAddress()
				e.GetEndpoint().Address = &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address: a.String(), PortSpecifier: &core.SocketAddress_PortValue{PortValue: sa.GetPortValue()}}}}
				nl.LbEndpoints = append(nl.LbEndpoints, e)
			}
		}
		out.Endpoints = append(out.Endpoints, nl)
	}
	return out
}

// resolve looks every name up once (in parallel), keeps what answered,
// rebuilds the picker when an answer changed, and sets when the next
// round is due. Called by Warm and by the refresh goroutine, one at a
// time per dnsHosts (mu serializes the results, not the lookups).
func (d *dnsHosts) resolve(ctx context.Context) {
	type result struct {
		addrs []netip.Addr
		ttl   time.Duration
		err   error
	}
	results := make([]result, len(d.names))
	var wg sync.WaitGroup
	for i, n := range d.names {
		wg.Go(func() {
			d.stats.attempt.Inc()
			addrs, ttl, err := d.lookup(ctx, n)
			results[i] = result{addrs, ttl, err}
		})
	}
	wg.Wait()

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	changed, failed := false, false
	next := time.Duration(0)
	for i, n := range d.names {
		r := results[i]
		if r.err == nil && len(r.addrs) == 0 {
			r.err = fmt.Errorf("no address")
		}
		if r.err != nil {
			failed = true
			d.stats.failure.Inc()
			if !d.failing[n] && ctx.Err() == nil {
				d.failing[n] = true
				d.log.Warn("DNS lookup failed: the cluster keeps the name's last addresses", "cluster", d.name, "name", n,
					"last", d.last[n], "err", r.err)
			}
			continue
		}
		d.stats.success.Inc()
		if d.failing[n] {
			delete(d.failing, n)
			d.log.Info("DNS lookup succeeds again", "cluster", d.name, "name", n, "addresses", r.addrs)
		}
		addrs := slices.Clone(r.addrs)
		if !d.cfg.logical {
			slices.SortFunc(addrs, netip.Addr.Compare) // an answer in another order is the same set
		}
		if !slices.Equal(d.last[n], addrs) {
			d.last[n] = addrs
			changed = true
		}
		wait := d.cfg.refresh
		if d.cfg.respectTTL && r.ttl > 0 {
			wait = max(r.ttl, minDNSRefresh)
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	if failed {
		d.fails++
		wait := d.cfg.refresh
		if d.cfg.failBase > 0 {
			wait = d.cfg.failBase << min(d.fails-1, 20)
			wait = min(max(wait, d.cfg.failBase), d.cfg.failMax)
		}
		if next == 0 || wait < next {
			next = wait
		}
	} else {
		d.fails = 0
	}
	if next == 0 {
		next = d.cfg.refresh
	}
	if ctx.Err() != nil {
		next = minDNSRefresh // Warm ran out of time: go on as soon as the cluster runs
	}
	d.next = next
	if !changed && d.cur.Load() != nil {
		d.stats.noRebuild.Inc()
		return
	}
	if err := d.rebuild(); err != nil {
		// The template built before; an address cannot break it.
		d.log.Error("DNS cluster: cannot build its hosts", "cluster", d.name, "err", err)
	}
}

// lookup resolves one name in the cluster's families, in order, until
// one answers.
func (d *dnsHosts) lookup(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsLookupTimeout)
	defer cancel()
	var err error
	for _, nw := range d.cfg.networks {
		var addrs []netip.Addr
		var ttl time.Duration
		addrs, ttl, err = d.resolver.LookupIP(ctx, nw, name)
		if err == nil && len(addrs) > 0 {
			return addrs, ttl, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, err
}

// warm makes the first lookups, once.
func (d *dnsHosts) warm(ctx context.Context) {
	d.mu.Lock()
	done := d.warmed || d.stopped || len(d.names) == 0
	d.warmed = true
	d.mu.Unlock()
	if !done {
		d.resolve(ctx)
	}
}

// start starts the refresh goroutine, once, unless stopped or there is
// nothing to resolve.
func (d *dnsHosts) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running || d.stopped || len(d.names) == 0 {
		return
	}
	d.running = true
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	first := d.next
	if !d.warmed {
		first = 0 // never warmed (a caller without Warm): resolve now
		d.warmed = true
	}
	go d.run(ctx, first)
}

// run resolves every round until ctx ends.
func (d *dnsHosts) run(ctx context.Context, first time.Duration) {
	defer close(d.done)
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.resolve(ctx)
		d.mu.Lock()
		next := d.next
		d.mu.Unlock()
		t.Reset(next)
	}
}

// stop ends the refresh goroutine and waits for it. Idempotent.
func (d *dnsHosts) stop() {
	d.mu.Lock()
	d.stopped = true
	cancel, done := d.cancel, d.done
	d.cancel = nil
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Warm makes the first DNS lookups of the STRICT_DNS and LOGICAL_DNS
// clusters among cs that have not made them, all at once, and returns
// when they are done or ctx ends (a cluster whose lookups did not finish
// starts with the hosts it has and keeps resolving once running). Called
// after Build and before the clusters serve, from the translating
// goroutine; every goroutine it starts has ended when it returns.
func Warm(ctx context.Context, cs map[string]*Cluster) {
	var wg sync.WaitGroup
	for _, c := range cs {
		if st := c.cell.built(); st != nil && st.dns != nil {
			d := st.dns
			wg.Go(func() { d.warm(ctx) })
		}
	}
	wg.Wait()
}

// ResolvedAssignment is the endpoint assignment a STRICT_DNS or
// LOGICAL_DNS cluster runs with now: its load_assignment with the names
// replaced by their addresses (Endpoint.hostname keeps the name), for
// the config dump; nil for other clusters. Safe from any goroutine.
func (c *Cluster) ResolvedAssignment() *endpointv3.ClusterLoadAssignment {
	st := c.cell.built()
	if st == nil || st.dns == nil {
		return nil
	}
	d := st.dns
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resolved
}
