// Package tcpproxy is the proxy's envoy.filters.network.tcp_proxy: a
// connection a filter chain hands to it is relayed as bytes to an
// endpoint of the chain's cluster (or of one of its weighted clusters) —
// for an ORIGINAL_DST cluster, the connection's original destination —
// over the cluster's transport socket (mutual TLS when its
// transport_socket_matches say so), both ways, with half-close, until
// both sides are done or the connection has been idle for idle_timeout.
// Each connection is counted in Istio's TCP metrics.
//
// A cluster with no endpoint (Istio's BlackHoleCluster) or none at all
// closes the connection at once, as Envoy does (UH, NC), and so does one
// whose circuit breaker's max_connections are all in use (UO).
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	"github.com/cespare/xxhash/v2"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/celexpr"
	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/telemetry"
)

// FilterName is the network filter's name.
const FilterName = "envoy.filters.network.tcp_proxy"

// DefaultIdleTimeout is Envoy's idle_timeout when the config has none.
const DefaultIdleTimeout = time.Hour

// Config is a translated TcpProxy. Immutable.
type Config struct {
	StatPrefix  string
	Clusters    []WeightedCluster // one, weight 1, for cluster
	IdleTimeout time.Duration     // 0: none
	// MaxDuration is max_downstream_connection_duration: a connection
	// is closed that long after it was accepted. 0: no limit.
	MaxDuration time.Duration
	// HashSourceIP is hash_policy source_ip: a consistent-hash cluster
	// (ring hash, Maglev) picks the endpoint by the client's IP address,
	// so one client's connections go to the same endpoint.
	HashSourceIP bool
	// Stats is the chain's istio.stats filter config, the Telemetry
	// API's metric overrides (nil: the standard metrics).
	Stats *telemetry.Stats
	// AccessLogs are the tcp_proxy's access_log entries, each given every
	// connection when it ends.
	AccessLogs []*accesslog.Logger
	total      uint64
}

// WeightedCluster is one cluster of weighted_clusters.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// Parse translates a tcp_proxy typed_config. Its access logs open their
// files in sinks. Errors name the field.
func Parse(a *anypb.Any, sinks *accesslog.Sinks) (*Config, error) {
	var m tcpv3.TcpProxy
	if a == nil {
		return nil, errors.New("typed_config missing")
	}
	if err := xdswire.UnmarshalAny(a, &m); err != nil {
		return nil, fmt.Errorf("want %s: %w", FilterName, err)
	}
	c := &Config{StatPrefix: m.GetStatPrefix(), IdleTimeout: DefaultIdleTimeout}
	if c.StatPrefix == "" {
		return nil, errors.New("stat_prefix: empty")
	}
	switch cs := m.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, errors.New("cluster: empty")
		}
		c.Clusters = []WeightedCluster{{Name: cs.Cluster, Weight: 1}}
	case *tcpv3.TcpProxy_WeightedClusters:
		for i, w := range cs.WeightedClusters.GetClusters() {
			if w.GetName() == "" {
				return nil, fmt.Errorf("weighted_clusters.clusters[%d].name: empty", i)
			}
			if w.GetMetadataMatch() != nil {
				return nil, fmt.Errorf("weighted_clusters.clusters[%d].metadata_match: unsupported", i)
			}
			c.Clusters = append(c.Clusters, WeightedCluster{Name: w.GetName(), Weight: w.GetWeight()})
		}
		if len(c.Clusters) == 0 {
			return nil, errors.New("weighted_clusters.clusters: empty")
		}
	default:
		return nil, errors.New("cluster or weighted_clusters required")
	}
	for _, w := range c.Clusters {
		c.total += uint64(w.Weight)
	}
	if c.total == 0 {
		return nil, errors.New("weighted_clusters: the weights sum to 0")
	}
	if t := m.GetIdleTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, errors.New("idle_timeout: invalid")
		}
		c.IdleTimeout = t.AsDuration() // 0 disables it, as in Envoy
	}
	if t := m.GetMaxDownstreamConnectionDuration(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, errors.New("max_downstream_connection_duration: invalid")
		}
		c.MaxDuration = t.AsDuration()
	}
	switch {
	case m.GetMetadataMatch() != nil:
		return nil, errors.New("metadata_match: unsupported")
	case m.GetTunnelingConfig() != nil:
		return nil, errors.New("tunneling_config: unsupported")
	case m.GetOnDemand() != nil:
		return nil, errors.New("on_demand: unsupported")
	}
	for i, hp := range m.GetHashPolicy() {
		if hp.GetSourceIp() == nil {
			return nil, fmt.Errorf("hash_policy[%d]: only source_ip is supported", i)
		}
		c.HashSourceIP = true
	}
	for i, al := range m.GetAccessLog() {
		lg, err := accesslog.Parse(al, sinks)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d] (%s).%w", i, al.GetName(), err)
		}
		c.AccessLogs = append(c.AccessLogs, lg)
	}
	return c, nil
}

// pickCluster chooses a cluster by weight.
func (c *Config) pickCluster() string {
	if len(c.Clusters) == 1 {
		return c.Clusters[0].Name
	}
	n := rand.Uint64N(c.total)
	for _, w := range c.Clusters {
		if n < uint64(w.Weight) {
			return w.Name
		}
		n -= uint64(w.Weight)
	}
	return c.Clusters[len(c.Clusters)-1].Name
}

// Proxy relays connections. Its fields are set before the first Serve.
type Proxy struct {
	Metrics *telemetry.TCPMetrics
	Self    *telemetry.SrcLabels // source labels of outbound connections
	Peer    *telemetry.SrcLabels // source labels of inbound connections (no metadata exchange for TCP: unknown)
	Logger  *slog.Logger         // nil: discard
	// Node answers the node attributes of metric override expressions.
	Node *telemetry.Node
}

// Conn is one downstream connection and what the listener knows of it.
type Conn struct {
	net.Conn
	// Dst is its (restored) destination: the endpoint an ORIGINAL_DST
	// cluster dials.
	Dst     netip.AddrPort
	Inbound bool                 // accepted on an inbound listener
	Sec     *telemetry.SecLabels // its security labels; nil: unknown
}

// Serve relays c with cfg over clusters until both directions are done,
// the connection idles for cfg.IdleTimeout, it has lasted
// cfg.MaxDuration, or ctx ends (the listener drained or the proxy
// closed). It closes c. Called on the connection's
// own goroutine; blocks.
func (p *Proxy) Serve(ctx context.Context, c Conn, cfg *Config, clusters map[string]*cluster.Cluster) {
	defer c.Close()
	if cfg.MaxDuration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.MaxDuration)
		defer cancel()
	}
	var al *connLog
	if len(cfg.AccessLogs) > 0 {
		al = &connLog{start: time.Now(), c: &c, cfg: cfg}
		defer al.log()
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	src := p.Self
	if c.Inbound {
		src = p.Peer
	}
	name := cfg.pickCluster()
	cl := clusters[name]
	if al != nil {
		al.cluster = name
	}
	if cl == nil {
		if al != nil {
			al.flags = "NC"
		}
		log.Debug("tcp_proxy: no such cluster; connection closed", "stat_prefix", cfg.StatPrefix, "cluster", name)
		return // NC
	}
	var ep *cluster.Endpoint
	if cl.IsOriginalDst() {
		// A connection that was not redirected (it came to the listener's
		// own address) would be relayed back to the listener, and so on:
		// refused, as no endpoint.
		if !sameAddr(c.Dst, c.LocalAddr()) {
			ep = cl.PickOriginal(c.Dst)
		}
	} else {
		var k cluster.HashKey
		if cfg.HashSourceIP {
			if ra := addrPort(c.RemoteAddr()); ra.IsValid() {
				k = cluster.HashKey{Hash: xxhash.Sum64String(ra.Addr().Unmap().String()), OK: true} // as the HTTP router hashes source_ip
			}
		}
		ep = cl.Pick(k)
	}
	if ep == nil {
		// BlackHoleCluster: counted, so REGISTRY_ONLY refusals show, as
		// Envoy and Istio count them: upstream_cx_none_healthy, and a
		// connection opened and closed with UH.
		cl.Stats().CxNoneHealthy.Inc()
		s := p.series(cfg, &c, name, telemetry.TCPKey{Src: src, Dst: cl.DstNoEndpoint(), Sec: c.Sec, Inbound: c.Inbound, Flags: "UH"})
		s.Opened.Inc()
		s.Closed.Inc()
		if al != nil {
			al.flags = "UH"
		}
		log.Debug("tcp_proxy: no endpoint; connection closed", "stat_prefix", cfg.StatPrefix, "cluster", name, "dst", c.Dst)
		return
	}
	dst := ep.Dst()
	if c.Inbound {
		dst = cl.DstInbound()
	}
	release, ok := cl.Breaker().AdmitConn()
	if !ok {
		// max_connections reached: Envoy's tcp_proxy closes the
		// connection (upstream_cx_overflow, UO) rather than queue it.
		s := p.series(cfg, &c, name, telemetry.TCPKey{Src: src, Dst: dst, Sec: c.Sec, Inbound: c.Inbound, Flags: "UO"})
		s.Opened.Inc()
		s.Closed.Inc()
		if al != nil {
			al.flags = "UO"
		}
		log.Debug("tcp_proxy: the cluster's max_connections is reached; connection closed", "stat_prefix", cfg.StatPrefix, "cluster", name)
		return
	}
	defer release()
	up, err := ep.Conns().DialStream(ctx)
	if err != nil {
		cl.Stats().CxConnectFail.Inc()
		s := p.series(cfg, &c, name, telemetry.TCPKey{Src: src, Dst: dst, Sec: c.Sec, Inbound: c.Inbound, Flags: "UF"})
		s.Opened.Inc()
		s.Closed.Inc()
		if al != nil {
			al.flags, al.upstream, al.failure = "UF", ep.Addr(), err.Error()
		}
		log.Debug("tcp_proxy: upstream connect failed; connection closed", "stat_prefix", cfg.StatPrefix, "cluster", name, "endpoint", ep.Addr(), "err", err)
		return
	}
	defer up.Close()
	s := p.series(cfg, &c, name, telemetry.TCPKey{Src: src, Dst: dst, Sec: c.Sec, Inbound: c.Inbound})
	s.Opened.Inc()
	defer s.Closed.Inc()
	sent, received := relay(ctx, c.Conn, up, cfg.IdleTimeout, s)
	if al != nil {
		al.upstream, al.sent, al.received = ep.Addr(), sent, received
	}
}

// connLog is what a connection's access log line says, filled in as the
// connection goes.
type connLog struct {
	start                    time.Time
	c                        *Conn
	cfg                      *Config
	cluster, upstream, flags string
	failure                  string
	sent, received           int64 // bytes to the upstream, to the downstream
}

// log hands the ended connection to the access logs: as Envoy's tcp_proxy
// logs it, with no request or response (their operators print "-"),
// BYTES_RECEIVED from the downstream and BYTES_SENT to it.
func (l *connLog) log() {
	e := accesslog.Entry{
		Start: l.start, Duration: time.Since(l.start), Flags: l.flags,
		BytesReceived: l.sent, BytesSent: l.received,
		UpstreamHost: l.upstream, UpstreamCluster: l.cluster, UpstreamFailure: l.failure,
		DownstreamRemote: addrPort(l.c.RemoteAddr()), DownstreamLocal: l.c.Dst,
	}
	if !e.DownstreamLocal.IsValid() {
		e.DownstreamLocal = addrPort(l.c.LocalAddr()) // the original destination, when use_original_dst restored one
	}
	for _, lg := range l.cfg.AccessLogs {
		lg.Log(&e)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// relay copies down→up and up→down until both directions have ended,
// either side fails, the connection idles for idle (0: never) or ctx
// ends. An EOF in one direction half-closes the other side's write.
// It returns the bytes relayed each way.
func relay(ctx context.Context, down, up net.Conn, idle time.Duration, s telemetry.TCPSeries) (sent, received int64) {
	r := &relayState{down: down, up: up, idle: idle}
	r.last.Store(time.Now().UnixNano())
	stop := context.AfterFunc(ctx, r.abort)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		received = r.pipe(up, down, s.Received)
	}()
	sent = r.pipe(down, up, s.Sent)
	<-done
	return sent, received
}

// relayState is what the two directions of one relay share.
type relayState struct {
	down, up net.Conn
	idle     time.Duration
	last     atomic.Int64 // unix nanos of the last byte either way
	stopped  atomic.Bool
	once     sync.Once
}

// abort ends both directions: blocked reads and writes return at once.
func (r *relayState) abort() {
	r.once.Do(func() {
		r.stopped.Store(true)
		r.down.SetDeadline(aLongTimeAgo)
		r.up.SetDeadline(aLongTimeAgo)
	})
}

var aLongTimeAgo = time.Unix(1, 0)

// pipe copies from src to dst. At src's EOF it half-closes dst (or, if
// dst cannot half-close, ends the relay); on any other error it ends the
// relay. It returns the bytes copied.
func (r *relayState) pipe(src, dst net.Conn, count interface{ Add(float64) }) (total int64) {
	buf := make([]byte, 32<<10)
	for {
		if r.idle > 0 {
			src.SetReadDeadline(time.Unix(0, r.last.Load()).Add(r.idle))
			if r.stopped.Load() { // abort ran meanwhile: keep its deadline
				src.SetReadDeadline(aLongTimeAgo)
			}
		}
		n, err := src.Read(buf)
		if n > 0 {
			r.last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.abort()
				return total
			}
			count.Add(float64(n))
			total += int64(n)
		}
		if err == nil {
			continue
		}
		if r.stopped.Load() {
			return total
		}
		if r.idle > 0 && isTimeout(err) && time.Since(time.Unix(0, r.last.Load())) < r.idle {
			continue // the other direction was active: not idle yet
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return total
			}
		}
		r.abort()
		return total
	}
}

// sameAddr reports whether a and b are the same IP and port.
func sameAddr(a netip.AddrPort, b net.Addr) bool {
	ta, ok := b.(*net.TCPAddr)
	if !ok {
		return false
	}
	bp := ta.AddrPort()
	return a.Port() == bp.Port() && a.Addr().Unmap() == bp.Addr().Unmap()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// series returns the metric counters of connection c relayed to cluster
// name, with the chain's metric overrides.
func (p *Proxy) series(cfg *Config, c *Conn, name string, k telemetry.TCPKey) telemetry.TCPSeries {
	if cfg.Stats == nil {
		return p.Metrics.Series(k)
	}
	return p.Metrics.SeriesWith(cfg.Stats, k, connAttrs{c: c, cluster: name, k: k, node: p.Node})
}

// connAttrs answers the attributes of one connection for the label
// expressions of metric overrides, as Envoy's attributes name them.
// Request and response attributes are absent on a TCP connection.
type connAttrs struct {
	c       *Conn
	cluster string
	k       telemetry.TCPKey
	node    *telemetry.Node
}

func (a connAttrs) Attr(x celexpr.Attr) (string, bool) {
	local := a.c.Dst // the (restored) destination, as Envoy's destination.*
	if !local.IsValid() {
		local = addrPort(a.c.LocalAddr())
	}
	remote := addrPort(a.c.RemoteAddr())
	switch x.ID {
	case celexpr.SourceAddress:
		return remote.Addr().String(), remote.IsValid()
	case celexpr.SourcePort:
		return strconv.Itoa(int(remote.Port())), remote.IsValid()
	case celexpr.DestinationAddress:
		return local.Addr().String(), local.IsValid()
	case celexpr.DestinationPort:
		return strconv.Itoa(int(local.Port())), local.IsValid()
	case celexpr.ConnectionMTLS:
		return strconv.FormatBool(a.k.Sec != nil && a.k.Sec.Policy == telemetry.PolicyMutualTLS), true
	case celexpr.ClusterName:
		return a.cluster, a.cluster != ""
	case celexpr.UpstreamPeer:
		if a.k.Inbound {
			return "", false
		}
		return telemetry.DstAttr(a.k.Dst, x.Key)
	case celexpr.DownstreamPeer:
		if !a.k.Inbound {
			return "", false
		}
		return telemetry.SrcAttr(a.k.Src, x.Key)
	case celexpr.NodeID, celexpr.NodeMetadata, celexpr.NodeLabel:
		return a.node.Attr(x)
	}
	return "", false
}
