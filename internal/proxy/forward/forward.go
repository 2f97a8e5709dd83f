// Package forward is the proxy's request path, what Envoy's HTTP
// connection manager and router do with one downstream request: run the
// listener's HTTP filters (internal/proxy/filter), route the request
// (internal/proxy/route), forward it to an endpoint of its cluster
// (internal/proxy/cluster, internal/proxy/upstream) — with the route's
// timeout and retries, the cluster's circuit breakers and outlier
// detection, and shadow copies for its mirror policies — stream the
// response back, answer what the proxy answers itself as Envoy's local
// replies, and record the request's metrics (internal/proxy/telemetry).
//
// Threading: a Forwarder serves any number of requests concurrently and
// takes no lock on the request path; everything it reads per request is
// immutable configuration handed to Serve.
package forward

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/tracing"
	"weft.dev/weft/internal/proxy/upstream"
	"weft.dev/weft/internal/proxy/urlpath"
	"weft.dev/weft/internal/xds/contract"
)

// Envoy's local reply bodies.
const (
	bodyNoHealthyUpstream = "no healthy upstream"
	bodyConnectFailure    = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyConnectReset      = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyTimeout           = "upstream request timeout"
	// bodyBadRequest is Envoy's codec error reply body (the status text).
	bodyBadRequest = "Bad Request"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Options configures a Forwarder.
type Options struct {
	Identity     contract.Identity     // this proxy's workload: source labels and the peer metadata it sends
	Metrics      *telemetry.Metrics    // istio_* request metrics
	ClusterStats *cluster.StatVecs     // envoy_cluster_* of mirror clusters
	Registerer   prometheus.Registerer // where the shadow request metrics go
	Logger       *slog.Logger          // required
	// Principal is the proxy's own identity, the SPIFFE ID its workload
	// certificate carries ("" without one): By= of x-forwarded-client-cert
	// and this side's principal in the security metric labels.
	Principal string
}

// Forwarder serves requests. It holds what outlives one configuration:
// metrics, the peer metadata cache, this proxy's own identity headers and
// the shadow requests in flight.
type Forwarder struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	peers   *telemetry.PeerCache
	mirrors *mirrorState
	self    *telemetry.SrcLabels // source labels of requests leaving through outbound listeners
	// peerMetadata and peerID are the metadata exchange header values this
	// proxy adds to outbound requests, computed once.
	peerMetadata, peerID []string
	principal            string // Options.Principal
	// node answers the node attributes of metric label expressions.
	node *telemetry.Node
	// tunnels counts the upgrade requests being served: WaitTunnels.
	tunnels tunnelCount
}

// New returns a Forwarder. Errors come from registering metrics or
// encoding the peer metadata.
func New(o Options) (*Forwarder, error) {
	f := &Forwarder{log: o.Logger, metrics: o.Metrics, peers: telemetry.NewPeerCache(o.Metrics), principal: o.Principal}
	var err error
	if f.mirrors, err = newMirrorState(o.Registerer, o.ClusterStats); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	id := o.Identity
	f.self = o.Metrics.InternSrc(telemetry.IdentitySrc(id))
	f.node = telemetry.NewNode(id)
	md, err := telemetry.EncodePeerMetadata(id)
	if err != nil {
		return nil, fmt.Errorf("peer metadata: %w", err)
	}
	f.peerMetadata, f.peerID = []string{md}, []string{id.ID}
	return f, nil
}

// Close cancels every shadow request and waits for them to end. Requests
// still being served are not affected; Serve must not be called after.
func (f *Forwarder) Close() { f.mirrors.stop() }

// WaitTunnels waits until the upgrade requests being served (open
// WebSockets: their connections are no longer the HTTP server's, which
// does not wait for them) have ended, or ctx is done. They end when
// their listener closes (Downstream.Ctx): call it after.
func (f *Forwarder) WaitTunnels(ctx context.Context) error {
	return f.tunnels.wait(ctx)
}

// tunnelCount counts the upgrade requests being served. Unlike a
// sync.WaitGroup it lets a request start while someone waits (a forced
// shutdown can meet a request that has just begun), and a wait that
// gives up leaves no goroutine behind.
type tunnelCount struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n reaches 0; nil: no one waits
}

func (t *tunnelCount) add() {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
}

func (t *tunnelCount) done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
	t.mu.Unlock()
}

// wait returns nil once no upgrade request is being served, or ctx's
// error if it ends first.
func (t *tunnelCount) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	zero := t.zero
	t.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Listener is what the request path needs to know of one listener.
// Immutable once built; shared by every request on the listener.
type Listener struct {
	// Inbound: traffic_direction INBOUND. The peer metadata headers are
	// read and stripped, metrics are reported as reporter="destination".
	Inbound bool
	// Outbound: traffic_direction OUTBOUND. The proxy's peer metadata is
	// added to requests, metrics say reporter="source".
	Outbound bool
	// Path is how the connection manager treats request paths before
	// routing and the filters (normalize_path, merge_slashes,
	// path_with_escaped_slashes_action; pathnorm.go).
	Path PathOptions
	// UseRemoteAddress and XFFTrustedHops are the connection manager's
	// use_remote_address and xff_num_trusted_hops: where the original
	// client's address (the filters' Stream.RemoteIP, RBAC's remote_ip)
	// comes from (remoteaddr.go).
	UseRemoteAddress bool
	XFFTrustedHops   uint32
	// ForwardClientCert and ClientCertDetails are the connection
	// manager's forward_client_cert_details and
	// set_current_client_cert_details: what x-forwarded-client-cert
	// becomes (downstream.go).
	ForwardClientCert ForwardClientCert
	ClientCertDetails ClientCertDetails
	// Tracing is the connection manager's tracing (nil: off): a span per
	// sampled request, trace context propagated (tracing.go).
	Tracing *tracing.Config

	// AccessLogs are the connection manager's access_log entries, each
	// given every finished request (accesslog.go).
	AccessLogs []*accesslog.Logger

	// Limits are the connection manager's request header limits
	// (max_request_headers_kb, common_http_protocol_options.
	// max_headers_count); the zero value is Envoy's defaults.
	Limits Limits

	// AcceptHTTP10 and DefaultHostHTTP10 are the connection manager's
	// http_protocol_options.accept_http_10 and default_host_for_http_10:
	// without the first an HTTP/1.0 request is answered 426 (Envoy's
	// and Istio's default); with it, one without a Host takes the second
	// (none: 400). See http10.go.
	AcceptHTTP10      bool
	DefaultHostHTTP10 string

	// Upgrades is the connection manager's upgrade_configs: per upgrade
	// type (lower case), whether requests may switch to it (a route's
	// upgrade_configs override it); a type not listed is refused.
	// StreamIdleTimeout is its stream_idle_timeout, which closes an
	// upgraded stream nothing moved on for that long (0: none; upgrade.go).
	Upgrades          map[string]bool
	StreamIdleTimeout time.Duration

	// Stats is the connection manager's istio.stats filter config: the
	// Telemetry API's metric overrides of this side (nil: the standard
	// metrics; statsattrs.go).
	Stats *telemetry.Stats

	filters []httpFilter // http_filters but the router, in order (filters.go)
}

// AddFilter appends a filter to the listener's chain (before the router),
// as http_filters lists it under name. For building a Listener.
func (l *Listener) AddFilter(name string, f filter.Filter) {
	l.filters = append(l.filters, newHTTPFilter(name, f))
}

// request carries what the metrics need about one request. It lives on the
// handler's stack.
type request struct {
	start    time.Time
	inbound  bool
	grpc     bool
	src      *telemetry.SrcLabels
	dst      *telemetry.DstLabels
	sec      *telemetry.SecLabels
	ds       *Downstream
	code     int
	grpcCode string
	flags    string
	reply    replyHeaders // decorates local replies (localreply.go)
	// hostDst: dst names a destination outside the mesh by the request's
	// Host (passthroughDst); the endpoint does not relabel it.
	hostDst bool
	// span is the request's span (nil: not traced); op, cluster and ep
	// are what it is named and tagged with (tracing.go).
	span    *tracing.Span
	op      string
	cluster string
	ep      *cluster.Endpoint
	// alog is what only the access logs need, kept when logging is set
	// (the listener has access logs; accesslog.go). A value, not a
	// pointer: the request stays on the stack, and logging allocates
	// nothing here.
	logging bool
	alog    accessLogState
	// stats is the listener's metric overrides (nil: none); routeName the
	// route that matched, for their xds.route_name.
	stats     *telemetry.Stats
	routeName string
	// The sizes of istio_request_bytes and istio_response_bytes
	// (recordRequest): the request and the response writer, the request
	// body as read (wrapped by Serve when there is one) and the response
	// body bytes written.
	r       *http.Request
	w       http.ResponseWriter
	reqBody *countingBody // nil: no body
	rspBody int64
	// upgrade is the protocol the request switches to ("": none), and
	// tunnelIn the bytes the downstream sent through the tunnel once it
	// did (upgrade.go).
	upgrade  string
	tunnelIn int64
	// ob and scratch are the upstream request's storage and its
	// responses', given back when the request is recorded
	// (releaseOutbound); nil: none taken.
	ob      *outbound
	scratch *upstream.Scratch
}

// countingBody counts the bytes read from a request body. Allocated
// only for a request with a body (the request itself stays on the
// stack).
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64 // an upstream transport may still be sending the body when the request is recorded
	// err is the first error other than io.EOF that reading the
	// downstream body returned (a *bodyError): the downstream's fault,
	// whatever the upstream attempt then reports.
	err atomic.Pointer[bodyError]
}

// bodyError is a read error of the downstream request body.
type bodyError struct{ err error }

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		b.err.CompareAndSwap(nil, &bodyError{err})
	}
	return n, err
}

// readErr is the downstream body's read error, nil if there was none
// (or no body: b nil).
func (b *countingBody) readErr() error {
	if b == nil {
		return nil
	}
	if e := b.err.Load(); e != nil {
		return e.err
	}
	return nil
}

// downstreamTruncated reports whether a downstream body read error means
// the client went away mid-body (EOF before the end, a broken
// connection) rather than sent malformed framing.
func downstreamTruncated(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

func (b *countingBody) Close() error { return b.rc.Close() }

// InMemory reports whether the downstream body's remaining bytes are all
// in memory (upstream.InMemoryBody).
func (b *countingBody) InMemory() bool {
	m, ok := b.rc.(upstream.InMemoryBody)
	return ok && m.InMemory()
}

// bytes is the body bytes read so far; 0 for no body (b nil).
func (b *countingBody) bytes() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load()
}

// headerBytes is the size of h as Envoy counts a header map's bytes:
// every name and value.
func headerBytes(h http.Header) int64 {
	n := 0
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + len(v)
		}
	}
	return int64(n)
}

// Serve handles one downstream request that arrived on l over the
// connection ds (NewDownstream; nil: plaintext, nothing known), with the
// route table tab (nil: none) and the clusters of the configuration l
// belongs to; it uses that configuration until the request ends,
// whatever is applied meanwhile. Called concurrently by the listener's
// http.Server; it returns once the response is written.
func (f *Forwarder) Serve(w http.ResponseWriter, r *http.Request, l *Listener, ds *Downstream, tab *route.Table, clusters map[string]*cluster.Cluster) {
	f.serve(w, r, l, ds, tab, clusters, nil)
}

// Resume serves a request the byte path sent upstream (ServeBytes
// returned BytesResumed and rs), from its first attempt's outcome on, as
// Serve would have served it: r is the request parsed from the same
// head, and everything Serve decides before the first attempt comes out
// the same for it (bytepath.go).
func (f *Forwarder) Resume(w http.ResponseWriter, r *http.Request, l *Listener, ds *Downstream, tab *route.Table, clusters map[string]*cluster.Cluster, rs *Resumed) {
	f.serve(w, r, l, ds, tab, clusters, rs)
}

// serve is Serve, resuming rs when it is not nil.
func (f *Forwarder) serve(w http.ResponseWriter, r *http.Request, l *Listener, ds *Downstream, tab *route.Table, clusters map[string]*cluster.Cluster, rs *Resumed) {
	if ds == nil {
		ds = plaintextDownstream
	}
	tooLarge := l.Limits.exceeded(r) // as received, peer metadata included
	q := f.newRequest(w, r, l, ds)
	if rs != nil {
		q.start = rs.start
		defer rs.Abandon()
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		q.reqBody = &countingBody{rc: r.Body}
		r.Body = q.reqBody
	}
	var tunnel bool // counted in f.tunnels until recorded
	defer func() {
		if tunnel {
			f.tunnels.done()
		}
	}()
	defer releaseOutbound(&q) // after the record: the access logs read the upstream request's id
	defer f.recordRequest(&q)
	if l.Tracing != nil {
		if q.span = l.Tracing.Start(r.Header, q.start, newRequestID); q.span != nil {
			defer endSpan(r, l, &q)
		}
	}
	if tooLarge {
		// Envoy's codec refuses the request before any filter or route
		// sees it, and closes the connection.
		w.Header()["Connection"] = connectionClose
		localReply(w, &q, http.StatusRequestHeaderFieldsTooLarge, bodyHeadersTooLarge, "DPE")
		return
	}
	if !validHTTP1RequestLine(r) {
		w.Header()["Connection"] = connectionClose
		localReply(w, &q, http.StatusBadRequest, bodyBadRequest, "DPE")
		return
	}
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 && !l.http10(w, r, &q) {
		return // refused (http10.go)
	}
	if !hasHost(w, r, &q) {
		return
	}
	f.mutateXFCC(r.Header, l, ds)

	if !normalizeRequestPath(w, r, &l.Path, &q) {
		return // refused (400) or redirected (307)
	}
	var re *route.Entry
	switch {
	case rs != nil:
		re = rs.re // what Route returns for r
	case tab != nil:
		re = tab.Route(r)
	}
	if re != nil {
		q.op, q.routeName = re.Operation, re.Name
	}
	if q.logging && re != nil {
		q.alog.route = re.Name
	}
	if switchesProtocols(r) {
		// Unless it switches, this is the connection's last request
		// (upgrade.go).
		w.Header()["Connection"] = connectionClose
		if q.upgrade = upgradeType(r); q.upgrade != "" && !l.upgradeEnabled(re, q.upgrade) {
			if q.logging {
				q.alog.details = detailsUpgradeFailed
			}
			localReply(w, &q, http.StatusForbidden, "", "")
			return
		}
		if q.upgrade != "" {
			f.tunnels.add()
			tunnel = true
		}
	}
	if re == nil {
		localReply(w, &q, http.StatusNotFound, "", "NR")
		return
	}
	if !l.Inbound {
		switch re.Name {
		case contract.RouteBlockAll:
			f.passthroughDst(&q, contract.ClusterBlackHole, r)
		case contract.RouteAllowAny:
			f.passthroughDst(&q, contract.ClusterPassthrough, r)
		}
	}
	// As Envoy, the route's cluster is chosen when the route is, before
	// the filters run.
	forwarded := re.Direct == nil && !re.IsRedirect()
	var name string
	if forwarded {
		if rs != nil {
			name = rs.cluster // a weighted pick is not made twice
		} else {
			name = re.PickCluster(r)
		}
		q.cluster = name
	}
	if len(l.filters) > 0 {
		if c := clusters[name]; c != nil && l.Inbound {
			// A request an RBAC or JWT filter refuses is still counted
			// against the workload and service it was for.
			q.dst = c.DstInbound()
		}
		if runFilters(w, r, l, re, &q, clusters) {
			return // a filter answered (or the client left)
		}
	}
	if !forwarded {
		routeReply(w, r, re, &q) // routereply.go
		return
	}
	q.reply.routed(re, name) // the router's local replies carry the route's response headers (localreply.go)
	c := clusters[name]
	if c == nil {
		localReply(w, &q, http.StatusServiceUnavailable, "", "NC")
		return
	}
	switch {
	case l.Inbound:
		q.dst = c.DstInbound()
	case c.Passthrough():
		f.passthroughDst(&q, c.Name(), r)
	case !q.hostDst:
		q.dst = c.DstNoEndpoint()
	}
	f.forward(w, r, l, re, c, clusters, &q, rs)
}

// passthroughDst labels an outbound request to a destination outside the
// mesh as Istio's stats filter does: destination_service_name is the
// cluster or catch-all route that handled it (PassthroughCluster,
// BlackHoleCluster), destination_service the request's Host.
func (f *Forwarder) passthroughDst(q *request, name string, r *http.Request) {
	if !q.hostDst {
		q.dst, q.hostDst = f.metrics.HostDst(name, r.Host), true
	}
}

func (f *Forwarder) recordRequest(q *request) {
	flags := q.flags
	if fs := q.reply.fs; fs != nil && len(fs.ResponseFlags()) > 0 {
		flags = joinFlags(append(strings.Split(flags, ","), fs.ResponseFlags()...)...) // DI
	}
	d := time.Since(q.start)
	// Sizes as Istio's stats filter counts them: headers (the request's
	// pseudo-headers too) and body bytes.
	r := q.r
	reqBytes := headerBytes(r.Header) + int64(len(r.Method)+len(r.Host)+len(r.RequestURI))
	reqBytes += q.tunnelIn
	if q.reqBody != nil {
		// Give the server its own body back: net/http decides by its type
		// whether the rest of an unread body can be skipped to reuse the
		// connection.
		r.Body = q.reqBody.rc
		reqBytes += q.reqBody.n.Load()
	}
	rspBytes := headerBytes(q.w.Header()) + q.rspBody
	k := telemetry.Key{
		Src: q.src, Dst: q.dst, Sec: q.sec, Inbound: q.inbound, GRPC: q.grpc,
		Code: q.code, GRPCCode: q.grpcCode, Flags: flags,
	}
	if q.stats != nil {
		// A copy for the label expressions: the attributes go into an
		// interface, and q itself would then be moved to the heap for
		// every request, overrides or not.
		qc := *q
		f.metrics.RecordWith(q.stats, k, requestAttrs{q: &qc, node: f.node}, float64(d.Microseconds())/1000, reqBytes, rspBytes)
	} else {
		f.metrics.Record(k, float64(d.Microseconds())/1000, reqBytes, rspBytes)
	}
	if q.logging {
		q.alog.log(q, flags, d)
	}
}

// pickEndpoint chooses the endpoint of one attempt. tried lists the
// endpoints earlier attempts used; with the previous_hosts retry predicate a
// retry avoids them while another endpoint is available, as Envoy does;
// with the previous_priorities retry priority it leaves the priorities
// already attempted out of the priority load (cluster.PrevPriorities).
// An ORIGINAL_DST cluster's endpoint is local, the connection's (restored)
// destination.
func pickEndpoint(c *cluster.Cluster, local, socket netip.AddrPort, k cluster.HashKey, rp *route.RetryPolicy, tried []*cluster.Endpoint, pp *cluster.PrevPriorities) *cluster.Endpoint {
	if c.IsOriginalDst() {
		// ORIGINAL_DST: where the client dialled (the listener restored
		// it with use_original_dst); retries go there too. A request
		// that came to the listener's own address is not sent back to
		// it (UH).
		if local == socket {
			return nil
		}
		return c.PickOriginal(local)
	}
	if len(tried) == 0 || rp == nil || (!rp.OtherHosts && rp.PriorityUpdateFrequency == 0) {
		return c.Pick(k)
	}
	var skip uint64
	if rp.PriorityUpdateFrequency > 0 {
		skip = pp.Update(c, tried, rp.PriorityUpdateFrequency)
	}
	if !rp.OtherHosts {
		return c.PickExcept(k, skip, nil)
	}
	return c.PickExcept(k, skip, tried) // avoids tried endpoints while others are available
}

func noCancel() {}

// outbound is forward's upstream request with what it is made of: the
// request and its header map, its X-Request-Id value when the proxy makes
// one, the first attempt's URL and the endpoints tried. It is taken from
// outboundPool for each request and given back by releaseOutbound once
// the request is recorded, unless a transport may still hold the request
// (an HTTP/2 stream still sending its body): a busy HTTP/1.1 proxy then
// allocates none of it per request.
type outbound struct {
	req    http.Request
	header http.Header // req's, cleared for the next request
	id     [1]string
	url    url.URL
	tried  [4]*cluster.Endpoint // the endpoints tried, while they fit
}

var (
	outboundPool = sync.Pool{New: func() any { return new(outbound) }}
	// scratchPool lends the synchronous HTTP/1.1 path the storage of the
	// upstream's response (upstream.Scratch). No transport keeps it past
	// its round trip: it always goes back.
	scratchPool = sync.Pool{New: func() any { return new(upstream.Scratch) }}
)

// maxReusedHeader is the most fields an upstream request's header map
// kept for the next request may have held.
const maxReusedHeader = 32

// getOutbound takes an outbound, and the storage of the upstream's
// responses, for q's upstream request.
func getOutbound(q *request, rs *Resumed) (*outbound, *upstream.Scratch) {
	q.ob = outboundPool.Get().(*outbound)
	if rs != nil && rs.s != nil {
		q.scratch, rs.s = rs.s, nil // it holds the first attempt's response
	} else {
		q.scratch = scratchPool.Get().(*upstream.Scratch)
	}
	return q.ob, q.scratch
}

// releaseOutbound gives q's outbound and response storage back for
// another request, when nothing can use them any more: the request is
// recorded (the access logs and the span have read what they need). The
// outbound goes back only when no transport may still use the request
// (upstream.Scratch.Held: the synchronous HTTP/1.1 path and an HTTP/2
// stream whose body went out with its round trip hold nothing of it once
// the round trip returns) and the request was not upgraded (the tunnel
// may outlive the handler). Deferred by Serve.
func releaseOutbound(q *request) {
	held := true
	if s := q.scratch; s != nil {
		held = s.Held()
		s.Reset()
		scratchPool.Put(s)
		q.scratch = nil
	}
	ob := q.ob
	if ob == nil || held || q.upgrade != "" {
		return
	}
	q.ob = nil
	h := ob.header
	if len(h) > maxReusedHeader {
		h = nil
	}
	clear(h)
	*ob = outbound{header: h}
	outboundPool.Put(ob)
}

// newRequest starts the record of a request on listener l: who sent it
// (on an inbound listener, the peer metadata headers, taken from r), over
// what, and whether the access logs want it.
func (f *Forwarder) newRequest(w http.ResponseWriter, r *http.Request, l *Listener, ds *Downstream) request {
	q := request{start: time.Now(), inbound: l.Inbound, grpc: route.IsGRPC(r), dst: f.metrics.UnknownDst(), ds: ds, r: r, w: w, stats: l.Stats}
	if l.Inbound {
		q.src = f.peers.Take(r.Header)
		q.sec = ds.sec
	} else {
		q.src = f.self
	}
	if len(l.AccessLogs) > 0 {
		q.logging, q.alog = true, accessLogState{w: w, r: r, l: l}
	}
	return q
}

// attemptResult is the outcome of one upstream attempt.
type attemptResult struct {
	resp   *http.Response   // nil on error
	stream *upstream.Stream // an upgrade's connection after a 101; else nil
	err    error
	out    outcome
	cancel context.CancelFunc // ends the attempt; the response body is tied to it
}

// attempt sends one try of the request to ep. ctx carries the route's global
// timeout; perTry (0 = none) bounds the wait for the response headers only:
// once they arrive the response streams under the global timeout, as
// Envoy's per_try_timeout.
func (f *Forwarder) attempt(ctx context.Context, r *http.Request, re *route.Entry, out *http.Request, s *upstream.Scratch, c *cluster.Cluster, ep *cluster.Endpoint, perTry time.Duration) attemptResult {
	// Only a per-try timeout needs a context of its own: a retried response
	// is ended by closing its body.
	actx, cancel := ctx, context.CancelFunc(noCancel)
	var timer *time.Timer
	var fired *atomic.Bool
	if perTry > 0 {
		actx, cancel = context.WithCancel(ctx)
		f, stop := new(atomic.Bool), cancel
		fired, timer = f, time.AfterFunc(perTry, func() { f.Store(true); stop() })
	}
	resp, err := c.Upstream().RoundTrip(actx, ep.Conns(), r, out, s)
	if timer != nil && !timer.Stop() && err == nil {
		// The per-try timeout fired as the headers arrived: it wins.
		resp.Body.Close()
		resp, err = nil, context.DeadlineExceeded
	}
	if err != nil {
		return attemptResult{err: err, out: classify(err, fired != nil && fired.Load()), cancel: cancel}
	}
	return attemptResult{resp: resp, out: outcomeResponse, cancel: cancel}
}

// forward sends r upstream and streams the response back. It makes one
// attempt, and more when the route's retry policy says the outcome is worth
// retrying, the request body can be replayed, and nothing has been sent
// downstream yet; each retry waits a jittered backoff and prefers an
// endpoint not tried before.
// rs, when not nil, is the first attempt, which the byte path made.
func (f *Forwarder) forward(w http.ResponseWriter, r *http.Request, l *Listener, re *route.Entry, c *cluster.Cluster, clusters map[string]*cluster.Cluster, q *request, rs *Resumed) {
	ctx := r.Context()
	if re.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, re.Timeout)
		defer cancel()
	}
	rp := re.Retry
	upgrade := r.Method == http.MethodConnect || r.Header["Upgrade"] != nil
	if upgrade {
		rp = nil // upgraded streams are never retried
	}
	ob, scratch := getOutbound(q, rs)
	if ob.header == nil {
		ob.header = make(http.Header, len(r.Header)+4)
	}
	out := &ob.req
	*out = http.Request{
		Method:        r.Method,
		URL:           r.URL, // per attempt: upstreamURL
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        ob.header,
		Body:          r.Body,
		ContentLength: r.ContentLength,
		Trailer:       r.Trailer,
		Host:          r.Host,
	}
	var body *replayBody
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		out.Body = nil
	} else {
		if r.ProtoMajor == 1 {
			// Let request and response bodies stream at the same time (bidi).
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
		if rp != nil && rp.NumRetries > 0 {
			body = newReplayBody(r.Body)
			out.Body = body.attempt()
		}
	}
	out.Host = re.UpstreamHost(r, c.Name())
	copyRequestHeaders(out.Header, r.Header)
	if q.upgrade != "" {
		upgradeHeaders(out.Header, r.Header)
	}
	if _, ok := out.Header["X-Forwarded-Proto"]; !ok {
		if q.ds.Conn.TLS != nil {
			out.Header["X-Forwarded-Proto"] = schemeHTTPS
		} else {
			out.Header["X-Forwarded-Proto"] = schemeHTTP
		}
	}
	if _, ok := out.Header["X-Request-Id"]; !ok {
		var id []string
		if rs != nil && rs.id != "" {
			ob.id[0] = rs.id // the one the first attempt sent
			id = ob.id[:]
		} else if q.logging {
			// The access log shows the id the upstream got, as Envoy's;
			// it puts it in the downstream request's header, which
			// outlives ob.
			id = []string{newRequestID()}
			q.alog.requestID = id
		} else {
			ob.id[0] = newRequestID()
			id = ob.id[:]
		}
		out.Header["X-Request-Id"] = id
	}
	if l.Outbound {
		out.Header[telemetry.HeaderPeerMetadata] = f.peerMetadata
		out.Header[telemetry.HeaderPeerMetadataID] = f.peerID
	}
	re.ApplyRequestHeaders(out.Header, c.Name())
	var perTry time.Duration
	if rp != nil {
		perTry = rp.PerTry
	}

	// hook: mirror
	defer f.mirror(re, r, out, clusters)() // mirror.go: shadows start now; the deferred call cuts off unfinished bodies

	tried := ob.tried[:0]
	firstURL := &ob.url
	begun := 0 // tried[:begun] are in flight (LEAST_REQUEST) until forward returns
	defer func() {
		for _, e := range tried[:begun] {
			e.EndRequest()
		}
	}()
	var prio cluster.PrevPriorities      // retry_priority state
	stats := c.Stats()                   // envoy_cluster_* counters
	hash, hashed := re.RequestHash(r, w) // the route's lb hash policy, once for every attempt
	k := cluster.HashKey{Hash: hash, OK: hashed}
	retries := 0
	var res attemptResult
	var ep *cluster.Endpoint
	var attemptStart time.Time   // of the current attempt: upstream_rq_time
	var adm cluster.Admission    // circuit breaker admission of the current attempt
	var rtok cluster.RetryTokens // max_retries held by this request
	defer adm.Release()
	defer rtok.Release()
	var next *cluster.Endpoint
	if rs != nil {
		next = rs.ep
	} else {
		next = pickEndpoint(c, q.ds.Conn.LocalAddr, q.ds.Socket, k, rp, tried, &prio)
	}
	if next == nil {
		stats.CxNoneHealthy.Inc() // as Envoy's router
		localReply(w, q, http.StatusServiceUnavailable, bodyNoHealthyUpstream, "UH")
		return
	}
	for {
		if res.cancel != nil {
			res.cancel() // the retried attempt is over
		}
		ep = next
		q.ep = ep
		tried = append(tried, ep)
		if q.logging {
			q.alog.upstream(c, ep)
		}
		if !l.Inbound && !q.hostDst {
			q.dst = ep.Dst()
		}
		if rs != nil {
			// The byte path's attempt: admitted, in flight, made; or
			// refused by the circuit breaker.
			rs.taken = true
			if rs.admitErr != nil {
				if admitFailed(rs.admitErr, w, q, &res) {
					return // 503 UO
				}
				break // ctx ended while queued
			}
			adm, attemptStart, res = rs.adm, rs.attemptStart, rs.res
			begun++
			out.URL = upstreamURL(firstURL, r, re, ep)
			firstURL, rs = nil, nil
		} else {
			// hook: admission (circuit breaker), least-request accounting
			if ok, answered := admitAttempt(ctx, c, w, q, &adm, &res); !ok {
				if answered {
					return // 503 UO
				}
				break // ctx ended while queued
			}
			ep.BeginRequest() // LEAST_REQUEST: in flight until forward returns (no defer in the loop: a heap-allocated one)
			begun++
			attemptStart = time.Now()
			out.URL = upstreamURL(firstURL, r, re, ep) // attempts run one after another
			firstURL = nil                             // a retry's URL is its own: the last try's may still be read
			if q.upgrade != "" {
				res = attemptUpgrade(ctx, r, re, out, c, ep) // upgrade.go
			} else {
				res = f.attempt(ctx, r, re, out, scratch, c, ep, perTry)
			}
		}
		if !l.Inbound {
			q.sec = f.sourceSec(ep)
		}
		if res.err != nil && q.reqBody.readErr() != nil {
			// The downstream's body broke the attempt (malformed
			// chunked framing, or the client left mid-body): not the
			// endpoint's failure, never retried (Envoy resets the
			// upstream request on a downstream codec error).
			c.Stats().RqTotal.Inc()
			break
		}
		// hook: outcome (outlier detection, stats)
		observeAttempt(r.Context(), c, ep, &res)

		if res.err != nil && ctx.Err() != nil && res.out != outcomePerTryTimeout {
			break // client gone or global timeout: never retried
		}
		if res.out == outcomePerTryTimeout {
			stats.RqPerTryTimeout.Inc()
		}
		if rp == nil {
			break
		}
		var retriable bool
		if res.err != nil {
			retriable = retriableError(rp, res.out)
		} else {
			retriable = rp.RetriableResponse(res.resp.StatusCode, grpcStatusHeader(res.resp.Header), res.resp.Header.Get("X-Envoy-Ratelimited") != "")
		}
		if !retriable {
			if retries > 0 && res.err == nil {
				stats.RqRetrySuccess.Inc()
			}
			break
		}
		if retries >= rp.NumRetries {
			q.flags = "URX"
			break
		}
		if !rtok.Take(c.Breaker()) {
			break // max_retries reached: answer with this attempt's outcome
		}
		if next = pickEndpoint(c, q.ds.Conn.LocalAddr, q.ds.Socket, k, rp, tried, &prio); next == nil {
			break // nowhere to retry: answer with this attempt's outcome
		}
		if body != nil {
			v := body.attempt()
			if v == nil {
				break // the body could not be kept: it cannot be sent again
			}
			out.Body = v
		}
		if res.resp != nil {
			res.resp.Body.Close()
			stats.RqTime.Observe(msSince(attemptStart)) // a response, not used
		}
		retries++
		stats.RqRetry.Inc()
		f.log.Debug("retrying upstream request", "cluster", c.Name(), "endpoint", ep.Addr(), "retry", retries, "err", res.err)
		if !sleepCtx(ctx, rp.Backoff(retries)) {
			res = attemptResult{err: ctx.Err(), out: outcomeReset, cancel: res.cancel}
			break
		}
	}
	if res.cancel != nil { // nil when no attempt was made (queued for a connection until ctx ended)
		defer res.cancel()
	}

	if res.err != nil {
		urx := q.flags // "URX" when the retry limit was reached
		berr := q.reqBody.readErr()
		switch {
		case r.Context().Err() != nil, berr != nil && downstreamTruncated(berr):
			// The downstream went away (or stopped sending mid-body and
			// half-closed): as Envoy, a downstream disconnect, and
			// nothing is answered — returning would make net/http send
			// an empty 200 to a client that may still read.
			q.flags = "DC"
			f.log.Debug("downstream went away before the response", "cluster", c.Name(), "err", res.err, "body_err", berr)
			panic(http.ErrAbortHandler) // recordRequest still runs (deferred)
		case berr != nil:
			// Malformed request body framing (bad chunk size, chunk
			// line): Envoy's codec answers 400 as a downstream protocol
			// error, and the connection closes.
			if q.logging {
				q.alog.failure = berr.Error()
			}
			w.Header()["Connection"] = connectionClose
			localReply(w, q, http.StatusBadRequest, bodyBadRequest, "DPE")
			f.log.Debug("malformed downstream request body", "cluster", c.Name(), "err", berr)
			return
		case ctx.Err() != nil:
			stats.RqTimeout.Inc()
			localReply(w, q, http.StatusGatewayTimeout, bodyTimeout, joinFlags("UT", urx))
		case res.out == outcomePerTryTimeout:
			localReply(w, q, http.StatusGatewayTimeout, bodyTimeout, joinFlags("UT", urx))
		case res.out == outcomeConnectFailure:
			if q.logging {
				q.alog.failure = res.err.Error()
			}
			localReply(w, q, http.StatusServiceUnavailable, bodyConnectFailure, joinFlags("UF", urx))
		default:
			localReply(w, q, http.StatusServiceUnavailable, bodyConnectReset, joinFlags("UC", urx))
		}
		f.log.Debug("upstream request failed", "cluster", c.Name(), "endpoint", ep.Addr(), "err", res.err)
		return
	}
	re.ApplyResponseHeaders(res.resp.Header, c.Name())
	q.reply.encode(res.resp.Header) // the filters' response headers
	if res.stream != nil {
		stats.RqTime.Observe(msSince(attemptStart)) // until the switch, as Envoy's upstream_rq_time
		tctx := q.ds.Ctx
		if tctx == nil {
			tctx = context.WithoutCancel(r.Context())
		}
		f.tunnel(tctx, w, q, res.resp, res.stream, l.streamIdleTimeout(re)) // upgrade.go
		return
	}
	f.stream(w, r, q, res.resp)
	stats.RqTime.Observe(msSince(attemptStart))
}

// msSince is the time since t in milliseconds, to the microsecond.
func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// stream copies the upstream response to the client.
func (f *Forwarder) stream(w http.ResponseWriter, r *http.Request, q *request, resp *http.Response) {
	defer resp.Body.Close()

	h := w.Header()
	copyResponseHeaders(h, resp.Header)
	q.code = resp.StatusCode
	if q.logging {
		q.alog.viaUpstream = true
	}
	w.WriteHeader(resp.StatusCode)

	streaming := resp.ContentLength < 0 || q.grpc
	flusher, _ := w.(http.Flusher)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				q.flags = "DC"
				return
			}
			q.rspBody += int64(n)
			// The body's last bytes wait for the handler's return,
			// which writes them with the trailers or the end of stream.
			if streaming && flusher != nil && rerr != io.EOF {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.Context().Err() != nil {
				q.flags = "DC"
				return
			}
			// Upstream reset after the headers were sent: reset downstream too.
			// ServeHTTP's deferred recordRequest still runs.
			q.flags = "UR"
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range resp.Trailer {
		h[trailerKey(k)] = vv
	}
	if q.grpc {
		if v := resp.Trailer["Grpc-Status"]; len(v) > 0 {
			q.grpcCode = v[0]
		} else if v := resp.Header["Grpc-Status"]; len(v) > 0 {
			q.grpcCode = v[0]
		}
	}
}

var connectionClose = []string{"close"} // shared, never modified

var teTrailers = []string{"trailers"} // shared, never modified

// trailerKey is http.TrailerPrefix+k, made without an allocation for
// gRPC's trailers, which end every gRPC response.
func trailerKey(k string) string {
	switch k {
	case "Grpc-Status":
		return http.TrailerPrefix + "Grpc-Status"
	case "Grpc-Message":
		return http.TrailerPrefix + "Grpc-Message"
	case "Grpc-Status-Details-Bin":
		return http.TrailerPrefix + "Grpc-Status-Details-Bin"
	}
	return http.TrailerPrefix + k
}

var schemeHTTP, schemeHTTPS = []string{"http"}, []string{"https"} // shared, never modified

// sourceSec is the security labels of a request this proxy sent to ep:
// its own and the endpoint's principal over mutual TLS, unknown
// otherwise.
func (f *Forwarder) sourceSec(ep *cluster.Endpoint) *telemetry.SecLabels {
	conns := ep.Conns()
	if conns == nil || !conns.TLS() {
		return nil // all unknown
	}
	return ep.SecCache().Source(f.metrics, f.principal, conns.Peer())
}

// upstreamURL is the request target sent to the endpoint, written to u
// (nil: a new one).
func upstreamURL(u *url.URL, r *http.Request, re *route.Entry, ep *cluster.Endpoint) *url.URL {
	if u == nil {
		u = new(url.URL)
	}
	*u = url.URL{Scheme: "http", Host: ep.Addr(), Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	re.RewritePath(u)
	urlpath.Pin(u)
	return u
}

// hopByHop headers are per connection and never forwarded.
var hopByHop = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Te":                true,
	"Trailer":           true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
}

func isHopByHop(k string) bool {
	return hopByHop[k] || strings.HasPrefix(k, "Proxy-")
}

func copyRequestHeaders(dst, src http.Header) {
	for k, vv := range src {
		if !isHopByHop(k) {
			dst[k] = vv // values are never modified in place
		}
	}
	removeConnectionHeaders(dst, src)
	for _, v := range src["Te"] {
		if httpTokenListContains(v, "trailers") {
			dst["Te"] = teTrailers
			break
		}
	}
}

func copyResponseHeaders(dst, src http.Header) {
	for k, vv := range src {
		if k == "Set-Cookie" && len(dst[k]) > 0 { // keep a generated lb cookie
			dst[k] = append(dst[k], vv...)
		} else if !isHopByHop(k) {
			dst[k] = vv
		}
	}
	removeConnectionHeaders(dst, src)
}

// removeConnectionHeaders drops the headers src's Connection header names.
func removeConnectionHeaders(dst, src http.Header) {
	for _, v := range src["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			switch f = textproto.TrimString(f); {
			case f == "":
			case strings.EqualFold(f, "keep-alive"):
				// Nearly every HTTP/1.1 peer's, lower case: canonicalizing
				// it would allocate.
				delete(dst, "Keep-Alive")
			case strings.EqualFold(f, "close"):
				delete(dst, "Close")
			default:
				delete(dst, http.CanonicalHeaderKey(f))
			}
		}
	}
}

func httpTokenListContains(v, token string) bool {
	for f := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(textproto.TrimString(f), token) {
			return true
		}
	}
	return false
}

// localReply answers the request from the proxy itself, as Envoy's local
// replies do: gRPC requests get a trailers-only response with the mapped
// grpc-status. q.reply adds the route's response headers and CORS headers
// where Envoy would.
func localReply(w http.ResponseWriter, q *request, code int, body, flags string) {
	localReplyGRPC(w, q, code, "", body, flags)
}

// localReplyGRPC is localReply with the grpc-status of a gRPC request
// given (grpcStatus; "" maps code).
func localReplyGRPC(w http.ResponseWriter, q *request, code int, grpcStatus, body, flags string) {
	q.flags = flags
	h := w.Header()
	if q.grpc {
		if grpcStatus == "" {
			grpcStatus = grpcStatusFor(code)
		}
		q.code, q.grpcCode = http.StatusOK, grpcStatus
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{q.grpcCode}
		if body != "" {
			h["Grpc-Message"] = []string{body}
		}
		q.reply.apply(h)
		w.WriteHeader(http.StatusOK)
		return
	}
	q.code = code
	if body != "" {
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	q.reply.apply(h)
	w.WriteHeader(code)
	n, _ := io.WriteString(w, body)
	q.rspBody += int64(n)
}

// grpcStatusFor maps an HTTP status to a gRPC code as Envoy does.
func grpcStatusFor(code int) string {
	switch code {
	case 400:
		return "13" // INTERNAL
	case 401:
		return "16" // UNAUTHENTICATED
	case 403:
		return "7" // PERMISSION_DENIED
	case 404:
		return "12" // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return "14" // UNAVAILABLE
	}
	return "2" // UNKNOWN
}

// newRequestID returns a random UUIDv4 string.
func newRequestID() string {
	var s [36]byte
	return string(appendRequestID(s[:0]))
}

// appendRequestID appends a random UUIDv4.
func appendRequestID(dst []byte) []byte {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexd[x>>4], hexd[x&0xf])
	}
	return dst
}
