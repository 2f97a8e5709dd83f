package forward

// Request mirroring (RouteAction.request_mirror_policies), as Envoy's
// router shadows requests: for every policy whose runtime_fraction samples
// the request in, a copy of the request as it goes upstream is sent to the
// policy's cluster with the Host/:authority suffixed "-shadow", and the
// response is read and thrown away. Nothing the shadow does can reach the
// client: it runs on its own goroutine with its own context and timeout,
// and a request body is teed to it through a bounded buffer that the
// primary never waits on — a shadow that falls too far behind is dropped.
//
// Resources are bounded: at most maxShadowsPerCluster shadows are in flight
// per mirror cluster (more are dropped and counted), each shadow buffers at
// most shadowBodyLimit bytes of request body, and each ends after
// shadowTimeout. Forwarder.Close cancels every shadow at once.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/upstream"
)

const (
	shadowHostSuffix = "-shadow"
	// maxShadowsPerCluster bounds the shadow requests in flight to one
	// mirror cluster; beyond it a shadow is not sent (result "overflow").
	maxShadowsPerCluster = 128
	// shadowBodyLimit bounds the request body a shadow may have buffered but
	// not yet sent; a shadow that lags more is dropped (result
	// "body_overflow"). 1 MiB is Envoy's default request buffer limit;
	// with maxShadowsPerCluster it bounds the memory per mirror cluster.
	shadowBodyLimit = 1 << 20
	// defaultShadowTimeout ends shadows of routes without a timeout (Istio's
	// default). A route timeout, when set, applies to its shadows too, as in
	// Envoy.
	defaultShadowTimeout = 10 * time.Second
)

// Results of a shadow request, the "result" label of
// weft_shadow_requests_total.
const (
	shadowCompleted    = "completed"           // the mirror target answered (any status)
	shadowFailed       = "failed"              // connect failure, reset or timeout
	shadowOverflow     = "overflow"            // maxShadowsPerCluster in flight: not sent
	shadowBodyOverflow = "body_overflow"       // the shadow fell behind the request body: cut off
	shadowNoHealthy    = "no_healthy_upstream" // the mirror cluster has no healthy endpoint
	shadowNoCluster    = "no_cluster"          // the mirror cluster does not exist
)

// shadowHost is the Host/:authority of a shadow request: Envoy's
// "-shadow" suffix on the host part, the port kept.
func shadowHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i] + shadowHostSuffix + host[i:]
	}
	return host + shadowHostSuffix
}

// mirrorState is the Forwarder's shadow bookkeeping: per-cluster in-flight
// counts (kept by cluster name, so they survive config updates), counters,
// and the context every shadow runs under. Safe for concurrent use.
type mirrorState struct {
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closed against wg.Add: shadows start under RLock (shared,
	// never waits except during stop), stop takes the write lock once.
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup

	clusters sync.Map // cluster name -> *shadowCluster
	results  *prometheus.CounterVec
	active   *prometheus.GaugeVec
	envoy    *cluster.StatVecs // envoy_cluster_* of the mirror clusters; may be nil
}

// shadowCluster is the shadow state of one mirror cluster.
type shadowCluster struct {
	inFlight atomic.Int64
	active   prometheus.Gauge
	results  map[string]prometheus.Counter
	envoy    *cluster.Stats // nil without cluster stats
}

func newMirrorState(reg prometheus.Registerer, envoy *cluster.StatVecs) (*mirrorState, error) {
	m := &mirrorState{envoy: envoy}
	var err error
	if m.results, err = telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_shadow_requests_total",
		Help: "Mirrored (shadow) requests by mirror cluster and result: completed, failed, overflow, body_overflow, no_healthy_upstream, no_cluster.",
	}, []string{cluster.NameLabel, "result"})); err != nil {
		return nil, err
	}
	if m.active, err = telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_shadow_requests_active",
		Help: "Shadow requests in flight by mirror cluster.",
	}, []string{cluster.NameLabel})); err != nil {
		return nil, err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

func (m *mirrorState) cluster(name string) *shadowCluster {
	if sc, ok := m.clusters.Load(name); ok {
		return sc.(*shadowCluster)
	}
	sc := &shadowCluster{active: m.active.WithLabelValues(name), results: map[string]prometheus.Counter{}}
	for _, r := range []string{shadowCompleted, shadowFailed, shadowOverflow, shadowBodyOverflow, shadowNoHealthy, shadowNoCluster} {
		sc.results[r] = m.results.WithLabelValues(name, r)
	}
	if m.envoy != nil {
		sc.envoy = m.envoy.For(name)
	}
	got, _ := m.clusters.LoadOrStore(name, sc)
	return got.(*shadowCluster)
}

// begin registers one shadow goroutine; false once stop has begun.
func (m *mirrorState) begin() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// stop cancels every shadow and waits for their goroutines to end. Called
// by Forwarder.Close; shadows never hold up a shutdown.
func (m *mirrorState) stop() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

var noMirror = func() {}

// mirror starts the shadows of out, the request about to go upstream on
// route re, and returns the function to call (deferred) once the primary is
// done with the request body. It never blocks: shadows run on their own
// goroutines. If out has a body, mirror makes the primary's reads of it
// feed the shadows (called before the first attempt, so no byte has been
// read yet). Called on the request goroutine.
func (f *Forwarder) mirror(re *route.Entry, r *http.Request, out *http.Request, clusters map[string]*cluster.Cluster) func() {
	if len(re.Mirrors) == 0 || f.mirrors == nil {
		return noMirror
	}
	if r.Method == http.MethodConnect || r.Header["Upgrade"] != nil {
		return noMirror // upgraded streams are not mirrored
	}
	var tee *teeReader
	for i := range re.Mirrors {
		mp := &re.Mirrors[i]
		if !mp.Sampled() {
			continue
		}
		name := mp.Cluster
		if mp.ClusterHeader != "" {
			if name = r.Header.Get(mp.ClusterHeader); name == "" {
				continue // Envoy: no header, no shadow
			}
		}
		sc := f.mirrors.cluster(name)
		c := clusters[name]
		if c == nil {
			sc.results[shadowNoCluster].Inc()
			continue
		}
		ep := c.Pick(cluster.HashKey{})
		if ep == nil {
			sc.results[shadowNoHealthy].Inc()
			continue
		}
		if sc.inFlight.Add(1) > maxShadowsPerCluster {
			sc.inFlight.Add(-1)
			sc.results[shadowOverflow].Inc()
			continue
		}
		if !f.mirrors.begin() {
			sc.inFlight.Add(-1)
			continue
		}
		timeout := defaultShadowTimeout
		if re.Timeout > 0 {
			timeout = re.Timeout
		}
		ctx, cancel := context.WithTimeout(f.mirrors.ctx, timeout)
		sr := shadowRequest(r, re, out, mp, ep)
		var sb *shadowBody
		if out.Body != nil {
			if tee == nil {
				tee = &teeReader{trailer: r.Trailer}
			}
			sb = newShadowBody(ctx, cancel, r.Trailer)
			sr.Body, sr.Trailer = sb, sb.trailer
			tee.shadows = append(tee.shadows, sb)
		}
		sc.active.Inc()
		go f.runShadow(ctx, cancel, sc, c, ep, sr, sb)
	}
	if tee == nil {
		return noMirror
	}
	switch b := out.Body.(type) {
	case *bodyView:
		// A replayable body (retries): tee its source, so each byte of the
		// downstream body reaches the shadows once however often it is replayed.
		tee.src = b.rb.src
		b.rb.src = tee
	default:
		tee.src = out.Body
		out.Body = tee
	}
	return tee.finish
}

// shadowRequest builds the shadow copy of out for endpoint ep: same method,
// (rewritten) path, headers and body, Host suffixed "-shadow".
func shadowRequest(r *http.Request, re *route.Entry, out *http.Request, mp *route.MirrorPolicy, ep *cluster.Endpoint) *http.Request {
	host := out.Host
	switch {
	case mp.HostRewrite != "":
		host = mp.HostRewrite // implies no suffix, as in Envoy
	case !mp.NoSuffix:
		host = shadowHost(host)
	}
	return &http.Request{
		Method:        out.Method,
		URL:           upstreamURL(nil, r, re, ep),
		Proto:         r.Proto, // the downstream version: use_downstream_protocol clusters follow it (upstream.Pool.TransportFor)
		ProtoMajor:    r.ProtoMajor,
		ProtoMinor:    r.ProtoMinor,
		Header:        out.Header.Clone(), // attempts may still change out's headers
		ContentLength: out.ContentLength,
		Host:          host,
	}
}

// runShadow sends one shadow request and discards the response. It runs on
// its own goroutine and ends with ctx at the latest.
func (f *Forwarder) runShadow(ctx context.Context, cancel context.CancelFunc, sc *shadowCluster, c *cluster.Cluster, ep *cluster.Endpoint, sr *http.Request, sb *shadowBody) {
	defer f.mirrors.wg.Done()
	defer sc.inFlight.Add(-1)
	defer sc.active.Dec()
	defer cancel()
	// Shadows are admitted by the mirror cluster's circuit breaker, as in
	// Envoy; waiting in its pending queue happens here, off the primary's path.
	if b := c.Breaker(); b != nil {
		adm, err := b.Admit(ctx)
		if err != nil {
			if errors.Is(err, cluster.ErrOverflow) {
				sc.results[shadowOverflow].Inc()
			} else {
				sc.results[shadowFailed].Inc()
			}
			if sb != nil {
				sb.abort(err) // stop buffering for it
			}
			return
		}
		defer adm.Release()
	}
	if sc.envoy != nil {
		sc.envoy.RqTotal.Inc()
	}
	resp, err := c.Upstream().RoundTrip(ctx, ep.Conns(), sr, sr, nil)
	if err != nil {
		if sb != nil && sb.lagged() {
			sc.results[shadowBodyOverflow].Inc()
		} else {
			sc.results[shadowFailed].Inc()
			if sc.envoy != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				sc.envoy.RqTimeout.Inc()
			}
		}
		f.log.Debug("shadow request failed", "cluster", c.Name(), "endpoint", ep.Addr(), "err", err)
		return
	}
	if sc.envoy != nil {
		sc.envoy.RqCompleted.Inc()
	}
	sc.results[shadowCompleted].Inc()
	// Drain so the connection can be reused; bounded by ctx.
	bp := bufPool.Get().(*[]byte)
	_, _ = io.CopyBuffer(io.Discard, onlyReader{resp.Body}, *bp)
	bufPool.Put(bp)
	resp.Body.Close()
}

// onlyReader hides io.WriterTo so CopyBuffer uses the pooled buffer.
type onlyReader struct{ io.Reader }

// errShadowLagging cuts off a shadow whose unsent body outgrew
// shadowBodyLimit; errShadowIncomplete one whose primary stopped reading
// the body before its end.
var (
	errShadowLagging    = errors.New("shadow request: fell more than the body buffer limit behind the primary")
	errShadowIncomplete = errors.New("shadow request: the primary did not read the whole request body")
	errShadowClosed     = errors.New("shadow request: body closed")
)

// teeReader is the primary's view of the request body: every byte read is
// also queued for each shadow. It never blocks on a shadow. Reads come from
// one goroutine at a time (the attempt that owns the body); finish may run
// concurrently with them.
type teeReader struct {
	src     io.Reader
	trailer http.Header // the downstream request's trailers, complete at EOF
	shadows []*shadowBody
}

func (t *teeReader) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	if n > 0 {
		for _, s := range t.shadows {
			s.push(p[:n])
		}
	}
	if err == io.EOF {
		for _, s := range t.shadows {
			s.end(t.trailer)
		}
	} else if err != nil {
		for _, s := range t.shadows {
			s.abort(err)
		}
	}
	return n, err
}

// InMemory reports whether the rest of the source is in memory
// (upstream.InMemoryBody).
func (t *teeReader) InMemory() bool {
	m, ok := t.src.(upstream.InMemoryBody)
	return ok && m.InMemory()
}

func (t *teeReader) Close() error {
	if c, ok := t.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// finish cuts off the shadows whose body did not reach its end: the primary
// is done with the request, so no more of it will come.
func (t *teeReader) finish() {
	for _, s := range t.shadows {
		s.abort(errShadowIncomplete)
	}
}

// shadowBody is a shadow request's body: a bounded queue the tee fills and
// the shadow's transport drains.
type shadowBody struct {
	ctx    context.Context
	cancel context.CancelFunc
	// trailer is the shadow request's Trailer (the declared keys). Only the
	// shadow's transport goroutine touches it: Read fills in the values
	// before it returns EOF, as the transport reads them only after EOF.
	trailer http.Header
	wake    chan struct{}

	mu         sync.Mutex
	chunks     [][]byte
	queued     int
	eof        bool
	srcTrailer http.Header // the downstream trailers, complete once eof
	err        error
	lag        bool // cut off by errShadowLagging
}

func newShadowBody(ctx context.Context, cancel context.CancelFunc, declared http.Header) *shadowBody {
	b := &shadowBody{ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
	if declared != nil {
		b.trailer = make(http.Header, len(declared))
		for k := range declared {
			b.trailer[k] = nil
		}
	}
	return b
}

func (b *shadowBody) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// push queues a copy of p, or cuts the shadow off if that would exceed
// shadowBodyLimit. Never blocks.
func (b *shadowBody) push(p []byte) {
	b.mu.Lock()
	if b.err != nil || b.eof {
		b.mu.Unlock()
		return
	}
	if b.queued+len(p) > shadowBodyLimit {
		b.err, b.lag = errShadowLagging, true
		b.chunks, b.queued = nil, 0
		b.mu.Unlock()
		b.cancel()
		b.signal()
		return
	}
	b.chunks = append(b.chunks, append([]byte(nil), p...))
	b.queued += len(p)
	b.mu.Unlock()
	b.signal()
}

// end marks the body complete; Read hands the trailers to the transport.
func (b *shadowBody) end(trailer http.Header) {
	b.mu.Lock()
	if b.err == nil && !b.eof {
		b.eof, b.srcTrailer = true, trailer
	}
	b.mu.Unlock()
	b.signal()
}

// abort cuts the shadow off unless its body is complete.
func (b *shadowBody) abort(err error) {
	b.mu.Lock()
	if b.err != nil || b.eof {
		b.mu.Unlock()
		return
	}
	b.err = err
	b.chunks, b.queued = nil, 0
	b.mu.Unlock()
	b.cancel()
	b.signal()
}

func (b *shadowBody) lagged() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lag
}

// Read is called by the shadow's transport.
func (b *shadowBody) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return 0, err
		}
		if len(b.chunks) > 0 {
			n := copy(p, b.chunks[0])
			if n == len(b.chunks[0]) {
				b.chunks[0] = nil
				b.chunks = b.chunks[1:]
			} else {
				b.chunks[0] = b.chunks[0][n:]
			}
			b.queued -= n
			b.mu.Unlock()
			return n, nil
		}
		if b.eof {
			src := b.srcTrailer
			b.mu.Unlock()
			for k := range b.trailer {
				b.trailer[k] = src[k]
			}
			return 0, io.EOF
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
}

// Close is called by the shadow's transport when it no longer reads: stop
// buffering for it.
func (b *shadowBody) Close() error {
	b.mu.Lock()
	if b.err == nil && !b.eof {
		b.err = errShadowClosed
	}
	b.chunks, b.queued = nil, 0
	b.mu.Unlock()
	return nil
}
