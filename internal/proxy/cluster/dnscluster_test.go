package cluster

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fakeResolver answers from a table a test changes; a name with an error
// fails. It counts lookups.
type fakeResolver struct {
	mu      sync.Mutex
	addrs   map[string][]netip.Addr
	ttl     time.Duration
	err     map[string]error
	lookups int
	// block, when set, makes lookups wait for their context.
	block bool
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{addrs: map[string][]netip.Addr{}, err: map[string]error{}}
}

func (f *fakeResolver) LookupIP(ctx context.Context, network, host string) ([]netip.Addr, time.Duration, error) {
	f.mu.Lock()
	f.lookups++
	block := f.block
	addrs, ttl, err := slices.Clone(f.addrs[host]), f.ttl, f.err[host]
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	if err != nil {
		return nil, 0, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if network == "ip" || (network == "ip4") == a.Is4() {
			out = append(out, a)
		}
	}
	return out, ttl, nil
}

func (f *fakeResolver) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[host] = nil
	for _, a := range addrs {
		f.addrs[host] = append(f.addrs[host], netip.MustParseAddr(a))
	}
}

func (f *fakeResolver) fail(host string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err[host] = err
}

func (f *fakeResolver) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups
}

// dnsCluster is a STRICT_DNS (or LOGICAL_DNS) cluster of the endpoints
// eps ("host:port"), IPv4, refreshed every refresh.
func dnsCluster(t *testing.T, typ clusterv3.Cluster_DiscoveryType, refresh time.Duration, eps ...string) *clusterv3.Cluster {
	c := edsCluster(t, "outbound|80||api.external.test", false, "api.external.test")
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
	c.EdsClusterConfig = nil
	var list []ep
	for _, e := range eps {
		list = append(list, ep{Addr: e})
	}
	c.LoadAssignment = cla(c.GetName(), list...)
	c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	c.DnsRefreshRate = durationpb.New(refresh)
	return c
}

// hosts are the addresses of every endpoint of c, sorted.
func hosts(c *Cluster) []string {
	var out []string
	for _, e := range c.pick().endpoints {
		out = append(out, e.Addr())
	}
	slices.Sort(out)
	return out
}

// waitHosts waits (bounded) until c's hosts are want.
func waitHosts(t *testing.T, c *Cluster, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(hosts(c), want) {
		if time.Now().After(deadline) {
			t.Fatalf("hosts = %v, want %v", hosts(c), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDNSClusterResolves: a STRICT_DNS cluster's hosts are every address
// of every name (IP endpoints as they are), resolved before it serves
// (Warm), and follow the answers once running; a failed lookup keeps the
// last good addresses; retiring the cluster ends its goroutine (goleak).
func TestDNSClusterResolves(t *testing.T) {
	b := testBuilder(t)
	r := newFakeResolver()
	b.Resolver = r
	r.set("api.external.test", "127.0.0.1", "127.0.0.2", "::1")
	r.set("mirror.external.test", "127.0.0.9")
	c := dnsCluster(t, clusterv3.Cluster_STRICT_DNS, 10*time.Millisecond,
		"api.external.test:8080", "mirror.external.test:8081", "10.0.0.1:80")
	ct, err := b.Build(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.CloseIdle()
	if got := hosts(ct); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Errorf("before Warm: hosts %v, want the IP endpoint only", got)
	}
	Warm(t.Context(), map[string]*Cluster{ct.Name(): ct})
	want := []string{"10.0.0.1:80", "127.0.0.1:8080", "127.0.0.2:8080", "127.0.0.9:8081"}
	if got := hosts(ct); !slices.Equal(got, want) {
		t.Fatalf("after Warm: hosts %v, want %v (IPv4 only)", got, want)
	}
	if e := ct.Pick(HashKey{}); e == nil || e.Conns() == nil {
		t.Fatalf("picked %v, want an endpoint with connections", e)
	}
	if total, healthy := ct.Membership(); total != 4 || healthy != 4 {
		t.Errorf("membership %d/%d, want 4/4", healthy, total)
	}
	if ra := ct.ResolvedAssignment(); len(ra.GetEndpoints()[0].GetLbEndpoints()) != 4 {
		t.Errorf("resolved assignment: %v", ra)
	}

	ct.RetainConnections() // running: the refresh goroutine starts
	r.set("api.external.test", "127.0.0.3")
	waitHosts(t, ct, "10.0.0.1:80", "127.0.0.3:8080", "127.0.0.9:8081")

	// Failures keep the last good addresses, while the other name follows.
	r.fail("api.external.test", errors.New("SERVFAIL"))
	r.set("mirror.external.test") // an empty answer is a failure too
	before := r.count()
	for r.count() < before+6 { // a few rounds
		time.Sleep(5 * time.Millisecond)
	}
	if got := hosts(ct); !slices.Equal(got, []string{"10.0.0.1:80", "127.0.0.3:8080", "127.0.0.9:8081"}) {
		t.Errorf("after failed lookups: hosts %v, want the last good ones", got)
	}
	r.fail("api.external.test", nil)
	r.set("api.external.test", "127.0.0.4")
	waitHosts(t, ct, "10.0.0.1:80", "127.0.0.4:8080", "127.0.0.9:8081")

	ct.CloseIdle() // retired: the goroutine ends now (goleak checks at exit)
	n := r.count()
	time.Sleep(50 * time.Millisecond)
	if r.count() != n {
		t.Errorf("lookups went on after CloseIdle")
	}
}

// TestDNSClusterLogical: a LOGICAL_DNS cluster has one host, the first
// address of the latest answer.
func TestDNSClusterLogical(t *testing.T) {
	b := testBuilder(t)
	r := newFakeResolver()
	b.Resolver = r
	r.set("api.external.test", "127.0.0.2", "127.0.0.1")
	ct, err := b.Build(dnsCluster(t, clusterv3.Cluster_LOGICAL_DNS, 10*time.Millisecond, "api.external.test:80"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.CloseIdle()
	Warm(t.Context(), map[string]*Cluster{ct.Name(): ct})
	if got := hosts(ct); !slices.Equal(got, []string{"127.0.0.2:80"}) {
		t.Fatalf("hosts %v, want the first address only", got)
	}
	ct.RetainConnections()
	r.set("api.external.test", "127.0.0.5", "127.0.0.2")
	waitHosts(t, ct, "127.0.0.5:80")

	if _, err := b.Build(dnsCluster(t, clusterv3.Cluster_LOGICAL_DNS, time.Second, "a.test:80", "b.test:80"), nil, nil); err == nil ||
		!strings.Contains(err.Error(), "exactly one") {
		t.Errorf("LOGICAL_DNS with two endpoints: err = %v", err)
	}
}

// TestDNSClusterTTL: with respect_dns_ttl the next lookup is due after
// the answer's TTL, else after dns_refresh_rate; a failure waits
// dns_failure_refresh_rate's backoff.
func TestDNSClusterTTL(t *testing.T) {
	b := testBuilder(t)
	r := newFakeResolver()
	b.Resolver = r
	r.set("api.external.test", "127.0.0.1")
	r.ttl = 3 * time.Second
	build := func(respect bool) *dnsHosts {
		c := dnsCluster(t, clusterv3.Cluster_STRICT_DNS, time.Minute, "api.external.test:80")
		c.RespectDnsTtl = respect
		c.DnsFailureRefreshRate = &clusterv3.Cluster_RefreshRate{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(3 * time.Second)}
		ct, err := b.Build(c, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ct.CloseIdle)
		return ct.cell.get().dns
	}
	d := build(true)
	d.resolve(t.Context())
	if d.next != 3*time.Second {
		t.Errorf("respect_dns_ttl: next lookup in %s, want the TTL 3s", d.next)
	}
	d = build(false)
	d.resolve(t.Context())
	if d.next != time.Minute {
		t.Errorf("no respect_dns_ttl: next lookup in %s, want the refresh rate 1m", d.next)
	}
	r.fail("api.external.test", errors.New("down"))
	var got []time.Duration
	for range 4 {
		d.resolve(t.Context())
		got = append(got, d.next)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("failure backoff %v, want %v", got, want)
	}
}

// TestDNSClusterCarriesAddresses: a changed Cluster resource starts from
// the last good addresses of the one it replaces, so it serves while its
// own lookups fail; an unchanged one shares the running host set.
func TestDNSClusterCarriesAddresses(t *testing.T) {
	b := testBuilder(t)
	r := newFakeResolver()
	b.Resolver = r
	r.set("api.external.test", "127.0.0.1")
	c := dnsCluster(t, clusterv3.Cluster_STRICT_DNS, time.Minute, "api.external.test:80")
	first, err := b.Build(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.CloseIdle()
	Warm(t.Context(), map[string]*Cluster{"c": first})

	same, err := b.Build(dnsCluster(t, clusterv3.Cluster_STRICT_DNS, time.Minute, "api.external.test:80"), nil, first)
	if err != nil {
		t.Fatal(err)
	}
	if !same.SharesState(first) || same.pick() != first.pick() {
		t.Errorf("unchanged cluster did not share the host set")
	}

	r.fail("api.external.test", errors.New("down"))
	changed := dnsCluster(t, clusterv3.Cluster_STRICT_DNS, 2*time.Minute, "api.external.test:80")
	next, err := b.Build(changed, nil, first)
	if err != nil {
		t.Fatal(err)
	}
	defer next.CloseIdle()
	if next.SharesState(first) {
		t.Fatal("changed cluster shared the state")
	}
	Warm(t.Context(), map[string]*Cluster{"c": next})
	if got := hosts(next); !slices.Equal(got, []string{"127.0.0.1:80"}) {
		t.Errorf("changed cluster with DNS down: hosts %v, want the carried 127.0.0.1:80", got)
	}
}

// TestDNSClusterWarmBounded: Warm returns when its context ends even if
// the resolver does not answer, and the cluster starts without hosts.
func TestDNSClusterWarmBounded(t *testing.T) {
	b := testBuilder(t)
	r := newFakeResolver()
	r.block = true
	b.Resolver = r
	ct, err := b.Build(dnsCluster(t, clusterv3.Cluster_STRICT_DNS, time.Minute, "api.external.test:80"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.CloseIdle()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	Warm(ctx, map[string]*Cluster{"c": ct})
	if ct.Pick(HashKey{}) != nil {
		t.Error("picked an endpoint with no answer")
	}
	ct.RetainConnections() // the goroutine runs, blocked in a lookup: CloseIdle must end it
}

// TestDNSClusterConfigErrors: what the proxy cannot do is a clear error.
func TestDNSClusterConfigErrors(t *testing.T) {
	b := testBuilder(t)
	b.Resolver = newFakeResolver()
	for _, tc := range []struct {
		mod  func(*clusterv3.Cluster)
		want string
	}{
		{func(c *clusterv3.Cluster) { c.DnsRefreshRate = durationpb.New(0) }, "dns_refresh_rate"},
		{func(c *clusterv3.Cluster) {
			c.TypedDnsResolverConfig = &core.TypedExtensionConfig{Name: "envoy.network.dns_resolver.cares"}
		}, "typed_dns_resolver_config"},
		{func(c *clusterv3.Cluster) {
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = nil
		}, "port_value"},
	} {
		c := dnsCluster(t, clusterv3.Cluster_STRICT_DNS, time.Second, "api.external.test:80")
		tc.mod(c)
		if _, err := b.Build(c, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want it to name %s", err, tc.want)
		}
	}
}
