package cluster

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"weft.dev/weft/internal/proxy/upstream"
)

// defaultCleanupInterval is Envoy's cleanup_interval of an ORIGINAL_DST
// cluster: how long a destination no connection used keeps its host.
const defaultCleanupInterval = 5 * time.Second

// originalDst is the host set of an ORIGINAL_DST cluster (Envoy's
// OriginalDstCluster): one Endpoint per original destination, created on
// first use and kept, with its pooled connections, while it is used; a
// host unused for a cleanup interval is dropped and its idle connections
// closed. It lives in the cluster's state, so updates that leave the
// Cluster unchanged keep it. Safe for concurrent use.
type originalDst struct {
	interval time.Duration

	mu        sync.Mutex
	hosts     map[netip.AddrPort]*origHost
	nextSweep time.Time
}

type origHost struct {
	ep   *Endpoint
	used time.Time
}

func newOriginalDst(c *clusterv3.Cluster) (*originalDst, error) {
	o := &originalDst{interval: defaultCleanupInterval, hosts: map[netip.AddrPort]*origHost{}}
	if t := c.GetCleanupInterval(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			return nil, fmt.Errorf("cleanup_interval: must be a positive duration")
		}
		o.interval = t.AsDuration()
	}
	if c.GetOriginalDstLbConfig().GetUseHttpHeader() {
		return nil, fmt.Errorf("original_dst_lb_config.use_http_header: unsupported")
	}
	return o, nil
}

// IsOriginalDst reports whether the cluster is ORIGINAL_DST: its endpoint
// is the connection's original destination (PickOriginal), not one of a
// list (Pick).
func (c *Cluster) IsOriginalDst() bool {
	st := c.cell.built() // an ORIGINAL_DST cluster's is built with it
	return st != nil && st.orig != nil
}

// PickOriginal returns the endpoint for original destination dst of an
// ORIGINAL_DST cluster: the same *Endpoint (and connections) for dst
// while it keeps being used. It returns nil for another kind of cluster
// or an invalid dst. Safe for concurrent use; called per request or
// connection.
func (c *Cluster) PickOriginal(dst netip.AddrPort) *Endpoint {
	st := c.cell.built()
	if st == nil || st.orig == nil || !dst.IsValid() || dst.Port() == 0 {
		return nil
	}
	o := st.orig
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if now.After(o.nextSweep) {
		o.sweep(st.up.Pool(), now)
	}
	h := o.hosts[dst]
	if h == nil {
		addr := dst.String()
		ep := &Endpoint{addr: addr, weight: 1, healthy: true}
		ep.dst.Store(c.DstNoEndpoint())
		h = &origHost{ep: ep}
		h.ep.conns.Store(st.up.Pool().Endpoint(addr, nil))
		o.hosts[dst] = h
	}
	h.used = now
	return h.ep
}

// sweep drops the hosts not used for an interval and closes their idle
// connections (requests in flight on them finish). o.mu is held.
func (o *originalDst) sweep(up *upstream.Pool, now time.Time) {
	o.nextSweep = now.Add(o.interval)
	dropped := false
	for k, h := range o.hosts {
		if now.Sub(h.used) >= o.interval {
			delete(o.hosts, k)
			dropped = true
		}
	}
	if dropped {
		up.Retain(o.connsLocked())
	}
}

// conns lists the connections of the current hosts.
func (o *originalDst) conns() []*upstream.Conns {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.connsLocked()
}

func (o *originalDst) connsLocked() []*upstream.Conns {
	out := make([]*upstream.Conns, 0, len(o.hosts))
	for _, h := range o.hosts {
		out = append(out, h.ep.conns.Load())
	}
	return out
}
