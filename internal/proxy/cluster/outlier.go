package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Outlier detection: Cluster.outlier_detection, the consecutive-error
// detectors of Envoy (consecutive_5xx, consecutive_gateway_failure,
// consecutive_local_origin_failure with split_external_local_origin_errors).
//
// Every upstream attempt reports its result for its endpoint. When an
// endpoint reaches a detector's threshold it is ejected — unless
// max_ejection_percent of the cluster's endpoints already are — for
// base_ejection_time × the number of times it has been ejected (capped at
// max(base_ejection_time, max_ejection_time)). Every balancer skips ejected
// endpoints (endpoint.available). A sweep every interval brings back the
// endpoints whose time is up and, for endpoints healthy for a
// base_ejection_time, lowers the multiplier again — Envoy's
// onIntervalTimer. While fewer than healthy_panic_threshold percent of the
// endpoints are left, the cluster is in panic mode and nothing counts as
// ejected (Envoy balances over every host then); Istio sets the threshold
// from minHealthPercent, 0 by default, which disables panic mode.
//
// Failure-percentage detection (failure_percentage_threshold, enforced
// when enforcing_failure_percentage is set — Istio 1.32's
// failurePercentageThreshold) counts each endpoint's attempts and failures
// (5xx answers, and local-origin failures unless split) over an interval;
// at the sweep, if at least failure_percentage_minimum_hosts endpoints
// had failure_percentage_request_volume attempts, those whose failure
// percentage reached the threshold are ejected, as Envoy's interval timer
// does. Its ejections count in the totals only (ejections_total,
// ejections_enforced_total, ejections_active). Success-rate detection is
// not implemented; Istio turns it off.
//
// The detector and each endpoint's state live in the cluster's state, so they
// survive updates that leave the Cluster unchanged; when only the endpoints
// change, the endpoints that remain keep their state. The request path
// takes no lock: counters are atomics; the detector's mutex is taken only to
// eject, by the sweep, and when translating.

// Envoy's defaults.
const (
	odDefaultConsecutive   = 5
	odDefaultInterval      = 10 * time.Second
	odDefaultBaseEjection  = 30 * time.Second
	odDefaultMaxEjection   = 300 * time.Second
	odDefaultMaxEjectPct   = 10
	defaultPanicThreshold  = 50.0
	odDefaultEnforcing5xx  = 100
	odDefaultEnforcingGw   = 0
	odDefaultEnforcingLoco = 100
	odDefaultFPThreshold   = 85
	odDefaultFPMinHosts    = 5
	odDefaultFPVolume      = 50
)

type odKind uint8

const (
	odKind5xx odKind = iota
	odKindGateway
	odKindLocalOrigin
)

type outlierConfig struct {
	threshold                           [3]uint32 // by odKind; 0 disables the detector
	enforcing                           [3]uint32 // percent
	split                               bool
	interval, baseEjection, maxEjection time.Duration
	maxEjectionPercent                  float64
	panicThreshold                      float64
	// Failure percentage: on when fpEnforcing > 0.
	fpThreshold, fpEnforcing, fpMinHosts, fpVolume uint32
}

// fpOn reports whether failure-percentage ejection is enforced.
func (c *outlierConfig) fpOn() bool { return c.fpEnforcing > 0 }

func parseOutlierDetection(c *clusterv3.Cluster) (*outlierConfig, error) {
	od := c.GetOutlierDetection()
	if od == nil {
		return nil, nil
	}
	u32 := func(v interface{ GetValue() uint32 }, isNil bool, def uint32) uint32 {
		if isNil {
			return def
		}
		return v.GetValue()
	}
	dur := func(field string, d interface {
		AsDuration() time.Duration
		CheckValid() error
	}, isNil bool, def time.Duration) (time.Duration, error) {
		if isNil {
			return def, nil
		}
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return 0, fmt.Errorf("outlier_detection.%s: must be a positive duration", field)
		}
		return d.AsDuration(), nil
	}
	cfg := &outlierConfig{split: od.GetSplitExternalLocalOriginErrors()}
	cfg.threshold[odKind5xx] = u32(od.GetConsecutive_5Xx(), od.GetConsecutive_5Xx() == nil, odDefaultConsecutive)
	cfg.threshold[odKindGateway] = u32(od.GetConsecutiveGatewayFailure(), od.GetConsecutiveGatewayFailure() == nil, odDefaultConsecutive)
	cfg.threshold[odKindLocalOrigin] = u32(od.GetConsecutiveLocalOriginFailure(), od.GetConsecutiveLocalOriginFailure() == nil, odDefaultConsecutive)
	cfg.enforcing[odKind5xx] = u32(od.GetEnforcingConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx() == nil, odDefaultEnforcing5xx)
	cfg.enforcing[odKindGateway] = u32(od.GetEnforcingConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure() == nil, odDefaultEnforcingGw)
	cfg.enforcing[odKindLocalOrigin] = u32(od.GetEnforcingConsecutiveLocalOriginFailure(), od.GetEnforcingConsecutiveLocalOriginFailure() == nil, odDefaultEnforcingLoco)
	for k, e := range cfg.enforcing {
		if e > 100 {
			return nil, fmt.Errorf("outlier_detection: enforcing percentage %d of detector %d is over 100", e, k)
		}
	}
	cfg.fpThreshold = u32(od.GetFailurePercentageThreshold(), od.GetFailurePercentageThreshold() == nil, odDefaultFPThreshold)
	cfg.fpEnforcing = u32(od.GetEnforcingFailurePercentage(), od.GetEnforcingFailurePercentage() == nil, 0)
	cfg.fpMinHosts = u32(od.GetFailurePercentageMinimumHosts(), od.GetFailurePercentageMinimumHosts() == nil, odDefaultFPMinHosts)
	cfg.fpVolume = u32(od.GetFailurePercentageRequestVolume(), od.GetFailurePercentageRequestVolume() == nil, odDefaultFPVolume)
	if cfg.fpThreshold > 100 || cfg.fpEnforcing > 100 {
		return nil, fmt.Errorf("outlier_detection: failure_percentage_threshold %d or enforcing_failure_percentage %d is over 100", cfg.fpThreshold, cfg.fpEnforcing)
	}
	var err error
	if cfg.interval, err = dur("interval", od.GetInterval(), od.GetInterval() == nil, odDefaultInterval); err != nil {
		return nil, err
	}
	if cfg.baseEjection, err = dur("base_ejection_time", od.GetBaseEjectionTime(), od.GetBaseEjectionTime() == nil, odDefaultBaseEjection); err != nil {
		return nil, err
	}
	if cfg.maxEjection, err = dur("max_ejection_time", od.GetMaxEjectionTime(), od.GetMaxEjectionTime() == nil, odDefaultMaxEjection); err != nil {
		return nil, err
	}
	cfg.maxEjection = max(cfg.maxEjection, cfg.baseEjection)
	cfg.maxEjectionPercent = float64(u32(od.GetMaxEjectionPercent(), od.GetMaxEjectionPercent() == nil, odDefaultMaxEjectPct))
	if cfg.maxEjectionPercent > 100 {
		return nil, fmt.Errorf("outlier_detection.max_ejection_percent: %v is over 100", cfg.maxEjectionPercent)
	}
	cfg.panicThreshold = defaultPanicThreshold
	if p := c.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		if p.GetValue() < 0 || p.GetValue() > 100 {
			return nil, fmt.Errorf("common_lb_config.healthy_panic_threshold: %v is not a percentage", p.GetValue())
		}
		cfg.panicThreshold = p.GetValue()
	}
	return cfg, nil
}

// hostHealth is the outlier state of one endpoint address. The counters are
// written by request goroutines; the rest is guarded by the detector's mu.
type hostHealth struct {
	addr        string
	det         *outlierDetector
	ejectedFlag atomic.Bool
	consecutive [3]atomic.Uint32 // by odKind
	// Attempts and failures since the last sweep, for failure-percentage
	// detection (counted only while it is on).
	fpAttempts, fpFailures atomic.Uint32

	// Guarded by det.mu.
	ejections     uint32 // the multiplier of base_ejection_time
	ejectedAt     time.Time
	ejectedUntil  time.Time
	lastUnejected time.Time
}

// ejected reports whether the endpoint is ejected now (never in panic
// mode). Lock-free; this is what the balancers ask, via endpoint.available.
func (h *hostHealth) ejected() bool {
	return h != nil && h.ejectedFlag.Load() && !h.det.panic.Load()
}

// outlierDetector holds a cluster's outlier state.
type outlierDetector struct {
	cfg   *outlierConfig
	stats *statRef // allocated at the first ejection
	panic atomic.Bool

	mu       sync.Mutex
	hosts    map[string]*hostHealth
	nEjected int
	stopped  bool
	cancel   context.CancelFunc // the sweep, while one runs
	now      func() time.Time   // tests
}

func newOutlierDetector(cfg *outlierConfig, stats *statRef) *outlierDetector {
	return &outlierDetector{cfg: cfg, stats: stats, hosts: map[string]*hostHealth{}, now: time.Now}
}

// sync makes the detector track exactly addrs and returns their states:
// addresses it knew keep theirs (ejections included). Called while
// translating.
func (d *outlierDetector) sync(addrs []string) []*hostHealth {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*hostHealth, len(addrs))
	keep := make(map[string]*hostHealth, len(addrs))
	for i, a := range addrs {
		h := d.hosts[a]
		if h == nil {
			h = &hostHealth{addr: a, det: d}
		}
		keep[a], out[i] = h, h
	}
	for a, h := range d.hosts {
		if keep[a] == nil && h.ejectedFlag.Load() {
			h.ejectedFlag.Store(false)
			d.nEjected--
			d.stats.get().OdEjectionsActive.Dec()
		}
	}
	d.hosts = keep
	d.updatePanic()
	if d.cfg.fpOn() && len(keep) > 0 {
		d.startSweep() // failure percentages are judged at every interval
	}
	return out
}

// startSweep starts the sweep goroutine unless it runs. d.mu held.
func (d *outlierDetector) startSweep() {
	if d.cancel != nil || d.stopped {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go d.run(ctx)
}

// updatePanic recomputes panic mode. d.mu held.
func (d *outlierDetector) updatePanic() {
	n := len(d.hosts)
	d.panic.Store(n > 0 && float64(n-d.nEjected)*100/float64(n) < d.cfg.panicThreshold)
}

// stop ends the sweep and forgets the ejections (their gauge included):
// the cluster was removed or replaced. Idempotent.
func (d *outlierDetector) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	d.stopped = true
	if d.cancel != nil {
		d.cancel()
		d.cancel = nil
	}
	if d.nEjected > 0 {
		d.stats.get().OdEjectionsActive.Sub(float64(d.nEjected))
	}
	d.nEjected = 0
}

// success records a result that resets the given counters. Lock-free; a
// counter already at zero is not written (no cache-line traffic).
func (h *hostHealth) reset(kinds ...odKind) {
	for _, k := range kinds {
		if h.consecutive[k].Load() != 0 {
			h.consecutive[k].Store(0)
		}
	}
}

func (h *hostHealth) failure(k odKind) {
	n := h.consecutive[k].Add(1)
	if t := h.det.cfg.threshold[k]; t > 0 && n == t {
		h.det.eject(h, k)
	}
}

// reportStatus records an upstream response (external origin) with its
// HTTP status (gRPC trailers-only answers mapped to HTTP, as Envoy does).
func (h *hostHealth) reportStatus(code int) {
	if h == nil {
		return
	}
	if h.det.cfg.fpOn() {
		h.fpAttempts.Add(1)
		if code >= 500 {
			h.fpFailures.Add(1)
		}
	}
	switch {
	case code >= 500:
		h.failure(odKind5xx)
		if code == 502 || code == 503 || code == 504 {
			h.failure(odKindGateway)
		} else {
			h.reset(odKindGateway)
		}
	default:
		h.reset(odKind5xx, odKindGateway)
	}
	if h.det.cfg.split {
		h.reset(odKindLocalOrigin) // the connection worked
	}
}

// LocalOrigin is a failure the proxy itself saw (Envoy's local-origin
// errors), as opposed to an error status from the upstream.
type LocalOrigin uint8

// The local-origin failures of an upstream attempt.
const (
	LocalConnectFailed LocalOrigin = iota // connection refused, unreachable, connect timeout
	LocalTimeout                          // no response in time
	LocalReset                            // reset or closed before a response
)

// ObserveResponse feeds the status of an upstream response from e to
// outlier detection (a trailers-only gRPC answer's grpc-status in h mapped
// to HTTP, as Envoy does). Called on the request goroutine after every
// attempt that got a response; lock-free unless it ejects; a no-op
// without outlier detection.
func (e *Endpoint) ObserveResponse(code int, h http.Header) {
	od := e.od
	if od == nil {
		return
	}
	if v := h["Grpc-Status"]; len(v) > 0 && code == http.StatusOK {
		code = grpcToHTTP(v[0]) // trailers-only gRPC answer
	}
	od.reportStatus(code)
}

// ObserveLocalFailure feeds a failed attempt to e to outlier detection.
// As ObserveResponse.
func (e *Endpoint) ObserveLocalFailure(o LocalOrigin) { e.od.reportLocal(o) }

// reportLocal records a local-origin failure. Without
// split_external_local_origin_errors Envoy folds them into the 5xx and
// gateway detectors (connect failure and reset as 503, timeout as 504);
// with it they count only towards consecutive_local_origin_failure.
func (h *hostHealth) reportLocal(o LocalOrigin) {
	if h == nil {
		return
	}
	if h.det.cfg.split {
		h.failure(odKindLocalOrigin)
		return
	}
	if h.det.cfg.fpOn() {
		h.fpAttempts.Add(1)
		h.fpFailures.Add(1)
	}
	h.failure(odKind5xx)
	h.failure(odKindGateway)
	_ = o
}

// eject ejects h if the detector enforces k and max_ejection_percent
// allows it.
func (d *outlierDetector) eject(h *hostHealth, k odKind) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.hosts[h.addr] != h || h.ejectedFlag.Load() {
		return
	}
	h.consecutive[k].Store(0)
	switch k {
	case odKind5xx:
		d.stats.get().OdDetected5xx.Inc()
	case odKindGateway:
		d.stats.get().OdDetectedGateway.Inc()
	case odKindLocalOrigin:
		d.stats.get().OdDetectedLocalOrigin.Inc()
	}
	if e := d.cfg.enforcing[k]; e == 0 || (e < 100 && rand.Uint32N(100) >= e) {
		return
	}
	if d.ejectLocked(h) {
		switch k {
		case odKind5xx:
			d.stats.get().OdEnforced5xx.Inc()
		case odKindGateway:
			d.stats.get().OdEnforcedGateway.Inc()
		case odKindLocalOrigin:
			d.stats.get().OdEnforcedLocalOrigin.Inc()
		}
	}
}

// ejectLocked ejects h unless max_ejection_percent forbids it, and reports
// whether it did. d.mu held; h tracked and not ejected.
func (d *outlierDetector) ejectLocked(h *hostHealth) bool {
	if n := len(d.hosts); n == 0 || float64(d.nEjected)*100/float64(n) >= d.cfg.maxEjectionPercent {
		d.stats.get().OdEjectionsOverflow.Inc()
		return false
	}
	now := d.now()
	h.ejections++
	h.ejectedAt = now
	h.ejectedUntil = now.Add(min(d.cfg.baseEjection*time.Duration(h.ejections), d.cfg.maxEjection))
	h.ejectedFlag.Store(true)
	d.nEjected++
	d.updatePanic()
	d.stats.get().OdEjectionsActive.Inc()
	d.stats.get().OdEjectionsTotal.Inc()
	d.stats.get().OdEjectionsEnforcedTotal.Inc()
	// The sweep runs only while there is something to bring back, a
	// multiplier to lower or failure percentages to judge, so an idle
	// detector has no goroutine.
	d.startSweep()
	return true
}

// run sweeps every interval until ctx ends or nothing is left to do.
func (d *outlierDetector) run(ctx context.Context) {
	t := time.NewTicker(d.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !d.sweep() {
				return
			}
		}
	}
}

// sweep is Envoy's interval timer: unejects endpoints whose time is up and
// lowers the multiplier of endpoints healthy for a base ejection time. It
// reports whether another sweep is needed; when not, it ends the run.
func (d *outlierDetector) sweep() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return false
	}
	now := d.now()
	busy := false
	for _, h := range d.hosts {
		if h.ejectedFlag.Load() {
			if !now.Before(h.ejectedUntil) {
				h.ejectedFlag.Store(false)
				h.lastUnejected = now
				h.reset(odKind5xx, odKindGateway, odKindLocalOrigin)
				d.nEjected--
				d.stats.get().OdEjectionsActive.Dec()
			}
			busy = true
			continue
		}
		if h.ejections > 0 {
			if now.Sub(h.lastUnejected) >= d.cfg.baseEjection {
				h.ejections--
				h.lastUnejected = now
			}
			busy = busy || h.ejections > 0
		}
	}
	if d.cfg.fpOn() {
		d.judgeFailurePercentages()
		busy = true
	}
	d.updatePanic()
	if !busy && d.cancel != nil {
		d.cancel()
		d.cancel = nil
	}
	return busy
}

// judgeFailurePercentages is Envoy's failure-percentage pass of the
// interval timer (external origin): when at least fpMinHosts endpoints
// had fpVolume attempts since the last sweep, each of those whose failure
// percentage reached fpThreshold is ejected (enforcing_failure_percentage
// of the time, within max_ejection_percent). The counts start again.
// d.mu held.
func (d *outlierDetector) judgeFailurePercentages() {
	type tally struct {
		h                  *hostHealth
		attempts, failures uint32
	}
	var loaded []tally
	for _, h := range d.hosts {
		a, f := h.fpAttempts.Swap(0), h.fpFailures.Swap(0)
		if !h.ejectedFlag.Load() && a >= d.cfg.fpVolume && a > 0 {
			loaded = append(loaded, tally{h, a, f})
		}
	}
	if uint32(len(loaded)) < d.cfg.fpMinHosts {
		return
	}
	for _, t := range loaded {
		if uint64(t.failures)*100 < uint64(d.cfg.fpThreshold)*uint64(t.attempts) {
			continue
		}
		if e := d.cfg.fpEnforcing; e < 100 && rand.Uint32N(100) >= e {
			continue
		}
		d.ejectLocked(t.h)
	}
}

// hostStatus is the outlier state of one endpoint for /config_dump.
type hostStatus struct {
	ejected      bool
	ejectedUntil time.Time
	ejections    uint32
}

func (d *outlierDetector) status(addr string) (hostStatus, bool) {
	if d == nil {
		return hostStatus{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.hosts[addr]
	if h == nil {
		return hostStatus{}, false
	}
	return hostStatus{ejected: h.ejectedFlag.Load(), ejectedUntil: h.ejectedUntil, ejections: h.ejections}, true
}

// grpcToHTTP maps a gRPC status to the HTTP status Envoy uses for it in
// outlier detection (Grpc::Utility::grpcToHttpStatus).
func grpcToHTTP(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return http.StatusInternalServerError
	}
	switch n {
	case 0:
		return 200
	case 1:
		return 499
	case 3, 9, 11:
		return 400
	case 4:
		return 504
	case 5:
		return 404
	case 6, 10:
		return 409
	case 7:
		return 403
	case 8:
		return 429
	case 12:
		return 501
	case 14:
		return 503
	case 16:
		return 401
	}
	return 500 // UNKNOWN, INTERNAL, DATA_LOSS
}

// attach gives each endpoint its outlier state, keeping the state of
// addresses the detector already tracks. No-op on a nil detector.
func (d *outlierDetector) attach(eps []*Endpoint) {
	if d == nil {
		return
	}
	addrs := make([]string, len(eps))
	for i, e := range eps {
		addrs[i] = e.addr
	}
	for i, h := range d.sync(addrs) {
		eps[i].od = h
	}
}
