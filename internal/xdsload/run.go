package xdsload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Run.
type Options struct {
	// Mesh is the generated mesh the control plane watches.
	Mesh *Mesh
	// CP is the control plane serving it.
	CP *ControlPlane
	// Fleet sizes the simulated proxies; Address defaults to
	// CP.XDSAddress, or CP.SecureAddress with ClientTLS.
	Fleet FleetOptions
	// Changes is how many config changes and how many endpoint changes are
	// each measured one after the other (default 3).
	Changes int
	// StormRate and StormDuration shape the storm of endpoint changes
	// (default 100/s; a zero duration skips the storm).
	StormRate     int
	StormDuration time.Duration
	// Timeout bounds the wait for every proxy to connect or to ACK one
	// change (default 5 minutes).
	Timeout time.Duration
	// Settle is how long after the last ACK pushes are still counted to a
	// change (default 500ms).
	Settle time.Duration
	// ProfileDir, when set, receives the control plane's CPU profiles
	// taken from the first config change on for ChangeProfile
	// (cpu-changes.pprof) and during the storm (cpu-storm.pprof), and
	// profiles of its live heap (after a forced collection) once the fleet
	// is connected (heap-connect.pprof) and after the changes
	// (heap.pprof).
	ProfileDir string
	// ChangeProfile is the length of cpu-changes.pprof (default 30s).
	ChangeProfile time.Duration
	// SimProfile, with ProfileDir, also profiles the simulator itself:
	// its CPU from the first config change to the end of the endpoint
	// changes (sim-cpu-changes.pprof) and its heap once the fleet is
	// connected (sim-heap-connect.pprof), to tell its costs from the
	// control plane's.
	SimProfile bool
	// EndpointProfile, with ProfileDir, also profiles the control plane
	// for this long from the first endpoint change on
	// (cpu-endpoint.pprof); 0 skips it. It fails (a warning) while
	// cpu-changes.pprof is still being taken: shorten ChangeProfile.
	EndpointProfile time.Duration
	// Rest, when set, keeps the fleet connected and the mesh unchanged
	// this long after the last change and samples the control plane's
	// RSS meanwhile: what a quiet control plane gives back.
	Rest time.Duration
	// MaxRSS, when set, stops the run once the control plane's resident
	// memory exceeds it (bytes): the machine is shared, and a control
	// plane that cannot fit is a result, not a reason to swap.
	MaxRSS int64
	// Scope is what the control plane sends a proxy (its
	// --default-egress-scope): ScopeMesh (every service, the default) or
	// ScopeNamespace (the services of its namespace). With ScopeNamespace
	// a change is waited for on the proxies of the service's namespace
	// only, the ones it is sent to.
	Scope Scope
	// Logger reports progress; nil discards it.
	Logger *slog.Logger
}

// Scope is the egress scope the control plane gives proxies without a
// Sidecar resource.
type Scope string

// The scopes of Options.Scope.
const (
	ScopeMesh      Scope = "mesh"
	ScopeNamespace Scope = "namespace"
)

// ParseScope checks a scope name.
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case ScopeMesh, ScopeNamespace:
		return Scope(s), nil
	}
	return "", fmt.Errorf("unknown scope %q: want mesh or namespace", s)
}

// ServeArgs are the `weft serve` arguments the scope needs.
func (s Scope) ServeArgs() []string {
	if s == ScopeNamespace {
		return []string{"--default-egress-scope", "namespace"}
	}
	return nil
}

// Report is what Run measured. Durations are in nanoseconds in JSON.
type Report struct {
	Proxies   int  `json:"proxies"`
	Conns     int  `json:"conns"`
	Services  int  `json:"services"`
	Endpoints int  `json:"endpoints_per_service"`
	Spare     int  `json:"spare_endpoints_per_service"`
	Captured  bool `json:"captured"`
	// TLS is set when the proxies connected to the secure port with
	// workload certificates (FleetOptions.ClientTLS).
	TLS bool `json:"tls"`
	// Scope is the proxies' egress scope (Options.Scope).
	Scope Scope `json:"scope"`
	// Protocol is the ADS variant the proxies spoke: "delta" or "sotw".
	Protocol Protocol `json:"protocol"`
	// VHDS is set when the proxies took their route configurations'
	// virtual hosts by VHDS (FleetOptions.VHDS, delta only): config
	// changes then reach them as VirtualHost responses.
	VHDS bool `json:"vhds"`
	// Decode is how much of each response a simulated proxy decoded:
	// "envelope" or "full" (FleetOptions.Decode).
	Decode Decode `json:"decode"`
	// EndpointSource is where the endpoints that changes move lived:
	// "file" (WorkloadEntries) or "consul" (a Consul catalog).
	EndpointSource EndpointSource `json:"endpoint_source"`

	Connect  Connect  `json:"connect"`
	Config   Change   `json:"config_change"`
	Endpoint Change   `json:"endpoint_change"`
	Storm    *Storm   `json:"storm,omitempty"`
	Rest     *Rest    `json:"rest,omitempty"`
	Final    CPSample `json:"final"`
	Profiles []string `json:"profiles,omitempty"`
	// Reconnects counts streams opened after each proxy's first: a
	// control plane that drops streams under load shows here.
	Reconnects uint64 `json:"reconnects"`
	// Aborted says why the run stopped early (empty when it did not); the
	// phases not reached are zero.
	Aborted string `json:"aborted,omitempty"`
}

// CPSample is the control plane's resource use at one moment, with the
// machine's load average then.
type CPSample struct {
	CPUSeconds float64 `json:"cpu_seconds"` // cumulative
	RSSMiB     float64 `json:"rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	Load1      float64 `json:"load1"`
	// SimCPUSeconds is the simulator's own CPU time so far (cumulative),
	// to tell whether it, not the control plane, was the bottleneck.
	SimCPUSeconds float64 `json:"sim_cpu_seconds"`
	// SimRSSMiB and SimPeakRSSMiB are the simulator's own resident memory
	// now and at most so far.
	SimRSSMiB     float64 `json:"sim_rss_mib"`
	SimPeakRSSMiB float64 `json:"sim_peak_rss_mib"`
}

// Connect is the initial connection of the fleet.
type Connect struct {
	Duration time.Duration `json:"duration"` // until every proxy ACKed a complete config
	// Synced is how many proxies had a complete config at the end of the
	// phase: all of them unless the run was aborted.
	Synced int `json:"synced"`
	// CPUSeconds is the control plane's CPU time over Duration.
	CPUSeconds float64  `json:"cpu_seconds"`
	PerProxy   Pushed   `json:"per_proxy"`
	After      CPSample `json:"after"`
}

// Pushed is what proxies received, averaged over proxies (and changes), and
// the maximum of a single proxy.
type Pushed struct {
	Responses    float64 `json:"responses"`
	Resources    float64 `json:"resources"`
	KiB          float64 `json:"kib"`
	MaxResponses uint64  `json:"max_responses"`
	MaxKiB       float64 `json:"max_kib"`
	// ByType is the mean responses per type: CDS, LDS, EDS, RDS, VHDS.
	ByType [numTypes]float64 `json:"responses_by_type"`
}

// Change is a series of single changes of one kind.
type Change struct {
	Kind    string `json:"kind"`
	Changes int    `json:"changes"`
	// Type is the type of the responses a change was timed in, the one
	// that carries it: "RDS" or "VHDS" (Fleet.RouteType) for a config
	// change, "EDS" for an endpoint change.
	Type    string      `json:"type"`
	Latency Percentiles `json:"ack_latency"` // over every proxy watched of every change
	// Received is from the change until each proxy received the first
	// response carrying it, over the same proxies: the control plane's
	// part, before the simulator read the rest of the set and ACKed.
	Received Percentiles `json:"receive_latency"`
	// Watched is the mean number of proxies a change was waited for: every
	// proxy, or with ScopeNamespace those of the service's namespace.
	Watched float64 `json:"watched_proxies"`
	// PerChange is each change's slowest proxy.
	PerChangeMax []time.Duration `json:"per_change_max"`
	PerProxy     Pushed          `json:"per_proxy_per_change"`
	// CPUSeconds is the control plane's CPU time per change (from the
	// change until settled).
	CPUSeconds float64 `json:"cpu_seconds_per_change"`
	// SimCPUSeconds is the simulator's own CPU time per change, over the
	// same span: it receives and ACKs on its own cores, and a last ACK
	// can come no sooner than it has handled every proxy's response.
	SimCPUSeconds float64  `json:"sim_cpu_seconds_per_change"`
	After         CPSample `json:"after"`
}

// Rest is a quiet time after the changes, every proxy connected.
type Rest struct {
	Duration time.Duration `json:"duration"`
	// RSSMiB samples the control plane's RSS every RestSample.
	RSSMiB     []float64 `json:"rss_mib_samples"`
	CPUSeconds float64   `json:"cpu_seconds"`
	Before     CPSample  `json:"before"`
	After      CPSample  `json:"after"`
}

// RestSample is the interval of Rest.RSSMiB.
const RestSample = 5 * time.Second

// Storm is a sustained rate of endpoint changes.
type Storm struct {
	Rate     int           `json:"rate_per_second"`
	Duration time.Duration `json:"duration"`
	Changes  int           `json:"changes"`
	// Converge is from the last change until each proxy ACKed it;
	// ConvergeReceived until each received it.
	Converge         Percentiles `json:"converge_after_last"`
	ConvergeReceived Percentiles `json:"converge_received_after_last"`
	PerProxy         Pushed      `json:"per_proxy"`
	CPUSeconds       float64     `json:"cpu_seconds"`
	// RSSMiB samples the control plane's RSS once per second-ish over the
	// storm (at most 60 samples kept), MaxRSSMiB the largest seen.
	RSSMiB    []float64 `json:"rss_mib_samples"`
	MaxRSSMiB float64   `json:"max_rss_mib"`
	Before    CPSample  `json:"before"`
	After     CPSample  `json:"after"`

	profile string // the CPU profile's file, once written
}

func (o *Options) defaults() error {
	if o.Mesh == nil || o.CP == nil {
		return errors.New("xdsload: Mesh and CP are required")
	}
	if o.Fleet.Address == "" {
		o.Fleet.Address = o.CP.XDSAddress
		if o.Fleet.ClientTLS != nil {
			o.Fleet.Address = o.CP.SecureAddress
		}
	}
	if o.Changes <= 0 {
		o.Changes = 3
	}
	if o.StormRate <= 0 {
		o.StormRate = 100
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Settle <= 0 {
		o.Settle = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ChangeProfile <= 0 {
		o.ChangeProfile = 30 * time.Second
	}
	if o.Scope == "" {
		o.Scope = ScopeMesh
	}
	if _, err := ParseScope(string(o.Scope)); err != nil {
		return fmt.Errorf("xdsload: %w", err)
	}
	return nil
}

// Run connects the fleet to the control plane, waits until every proxy has
// a complete config, then measures config changes, endpoint changes and
// the storm, one after the other. It stops the fleet before returning.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	log := o.Logger
	f, err := NewFleet(o.Fleet, o.Mesh.Workloads())
	if err != nil {
		return nil, err
	}
	var simProfStop func() // ends the simulator's CPU profile, if taken
	spec := o.Mesh.Spec()
	rep := &Report{Proxies: o.Fleet.Proxies, Conns: f.opts.Conns, Services: spec.Services, Endpoints: spec.Endpoints, Spare: spec.Spare, Captured: o.Fleet.Captured, TLS: o.Fleet.ClientTLS != nil, Protocol: f.Protocol(), VHDS: f.VHDS(), Decode: f.Decode(), Scope: o.Scope, EndpointSource: o.Mesh.Source()}
	r := runner{o: o, f: f, log: log}

	before, err := r.sample()
	if err != nil {
		return nil, err
	}
	r.before = before
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	if o.MaxRSS > 0 {
		wctx, wstop := context.WithCancel(ctx)
		defer wstop()
		go r.watchRSS(wctx, abort)
	}
	fctx, stop := context.WithCancel(ctx)
	start := time.Now()
	if err := f.Start(fctx); err != nil {
		stop()
		return nil, err
	}
	defer func() { stop(); f.Wait() }()
	err = r.waitSynced(ctx, start)
	rep.Connect.Duration = time.Since(start)
	rep.Connect.Synced = f.Synced()
	if err != nil {
		return rep, r.aborted(ctx, rep, err)
	}
	if rep.Connect.After, err = r.sample(); err != nil {
		return rep, err
	}
	rep.Connect.CPUSeconds = rep.Connect.After.CPUSeconds - before.CPUSeconds
	rep.Connect.PerProxy = perProxy(f.Counters(), nil, 1)
	log.Info("fleet connected", "proxies", len(f.proxies), "took", rep.Connect.Duration)
	if o.ProfileDir != "" { // what the connected fleet costs the control plane
		file := filepath.Join(o.ProfileDir, "heap-connect.pprof")
		if err := o.CP.FetchProfile(ctx, "heap", "gc=1", file); err != nil {
			log.Warn("heap profile", "error", err)
		} else {
			rep.Profiles = append(rep.Profiles, file)
		}
	}
	if o.ProfileDir != "" && o.SimProfile {
		file := filepath.Join(o.ProfileDir, "sim-heap-connect.pprof")
		if err := writeHeapProfile(file); err != nil {
			log.Warn("simulator heap profile", "error", err)
		} else {
			rep.Profiles = append(rep.Profiles, file)
		}
		file = filepath.Join(o.ProfileDir, "sim-cpu-changes.pprof")
		if stop, err := startCPUProfile(file); err != nil {
			log.Warn("simulator cpu profile", "error", err)
		} else {
			simProfStop = stop
			rep.Profiles = append(rep.Profiles, file)
		}
	}
	defer func() { // a run that stops early
		if simProfStop != nil {
			simProfStop()
		}
	}()

	var profWG sync.WaitGroup
	if o.ProfileDir != "" {
		file := filepath.Join(o.ProfileDir, "cpu-changes.pprof")
		secs := max(1, int(o.ChangeProfile/time.Second))
		var ok atomic.Bool
		profWG.Go(func() {
			if err := o.CP.FetchProfile(ctx, "profile", fmt.Sprintf("seconds=%d", secs), file); err != nil {
				log.Warn("cpu profile", "error", err)
				return
			}
			ok.Store(true)
		})
		defer func() { // before the report is returned
			profWG.Wait()
			if ok.Load() {
				rep.Profiles = append(rep.Profiles, file)
			}
		}()
	}
	if rep.Config, err = r.changes(ctx, "config (VirtualService)", f.RouteType(), func(i int) int { return i * 7 }, func(i, svc int, before func(string)) error {
		_, err := o.Mesh.ChangeRoute(svc, before)
		return err
	}); err != nil {
		return rep, r.aborted(ctx, rep, err)
	}
	if o.ProfileDir != "" && o.EndpointProfile > 0 {
		file := filepath.Join(o.ProfileDir, "cpu-endpoint.pprof")
		secs := max(1, int(o.EndpointProfile/time.Second))
		var ok atomic.Bool
		profWG.Go(func() {
			if err := o.CP.FetchProfile(ctx, "profile", fmt.Sprintf("seconds=%d", secs), file); err != nil {
				log.Warn("cpu profile", "error", err)
				return
			}
			ok.Store(true)
		})
		defer func() {
			profWG.Wait()
			if ok.Load() {
				rep.Profiles = append(rep.Profiles, file)
			}
		}()
	}
	epKind := "endpoint (WorkloadEntry address)"
	if o.Mesh.Source() == SourceConsul {
		epKind = "endpoint (Consul catalog address)"
	}
	if rep.Endpoint, err = r.changes(ctx, epKind, "EDS", func(i int) int { return i*13 + 1 }, func(i, svc int, before func(string)) error {
		_, err := o.Mesh.ChangeEndpoint(svc, i, before)
		return err
	}); err != nil {
		return rep, r.aborted(ctx, rep, err)
	}
	if simProfStop != nil {
		simProfStop()
		simProfStop = nil
	}
	if o.ProfileDir != "" {
		// After a forced collection, as heap-connect.pprof: the live
		// heap once the changes are done (without it, the profile is of
		// the last collection, which may predate the last push).
		file := filepath.Join(o.ProfileDir, "heap.pprof")
		if err := o.CP.FetchProfile(ctx, "heap", "gc=1", file); err != nil {
			log.Warn("heap profile", "error", err)
		} else {
			rep.Profiles = append(rep.Profiles, file)
		}
	}
	if o.StormDuration > 0 {
		if rep.Storm, err = r.storm(ctx); err != nil {
			return rep, r.aborted(ctx, rep, err)
		}
		if rep.Storm.profile != "" {
			rep.Profiles = append(rep.Profiles, rep.Storm.profile)
		}
	}
	if o.Rest > 0 {
		if rep.Rest, err = r.rest(ctx); err != nil {
			return rep, r.aborted(ctx, rep, err)
		}
	}
	if rep.Final, err = r.sample(); err != nil {
		return rep, err
	}
	for _, c := range f.Counters() {
		rep.Reconnects += c.Streams - 1
	}
	return rep, nil
}

// rest waits Options.Rest with nothing changing, sampling the control
// plane's RSS.
func (r *runner) rest(ctx context.Context) (*Rest, error) {
	rs := &Rest{Duration: r.o.Rest}
	var err error
	if rs.Before, err = r.sample(); err != nil {
		return nil, err
	}
	r.log.Info("resting", "for", r.o.Rest)
	end := time.Now().Add(r.o.Rest)
	t := time.NewTicker(RestSample)
	defer t.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-t.C:
		}
		if s, err := ReadProc(r.o.CP.PID); err == nil {
			rs.RSSMiB = append(rs.RSSMiB, mib(s.RSS))
		}
	}
	if rs.After, err = r.sample(); err != nil {
		return nil, err
	}
	rs.CPUSeconds = rs.After.CPUSeconds - rs.Before.CPUSeconds
	return rs, nil
}

// watchRSS aborts the run when the control plane's RSS exceeds MaxRSS.
func (r *runner) watchRSS(ctx context.Context, abort context.CancelCauseFunc) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s, err := ReadProc(r.o.CP.PID); err == nil && s.RSS > r.o.MaxRSS {
			abort(fmt.Errorf("xdsload: control plane RSS %.0f MiB exceeds the limit of %.0f MiB with %d of %d proxies synced",
				mib(s.RSS), mib(r.o.MaxRSS), r.f.Synced(), len(r.f.proxies)))
			return
		}
	}
}

// aborted fills in the report of a run that stopped early and returns
// the reason.
func (r *runner) aborted(ctx context.Context, rep *Report, err error) error {
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
		err = cause
	}
	rep.Aborted = err.Error()
	if s, serr := r.sample(); serr == nil {
		rep.Final = s
		if rep.Connect.After == (CPSample{}) { // stopped while connecting
			rep.Connect.After = s
			rep.Connect.CPUSeconds = s.CPUSeconds - r.before.CPUSeconds
			rep.Connect.PerProxy = perProxy(r.f.Counters(), nil, 1)
		}
	}
	if r.o.ProfileDir != "" { // what filled the memory, while it still holds it
		file := filepath.Join(r.o.ProfileDir, "heap-aborted.pprof")
		pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if perr := r.o.CP.FetchProfile(pctx, "heap", "", file); perr == nil {
			rep.Profiles = append(rep.Profiles, file)
		}
	}
	return err
}

type runner struct {
	o      Options
	f      *Fleet
	log    *slog.Logger
	before CPSample // before the fleet connected
}

func (r *runner) sample() (CPSample, error) {
	s, err := ReadProc(r.o.CP.PID)
	if err != nil {
		return CPSample{}, err
	}
	out := CPSample{CPUSeconds: s.CPU.Seconds(), RSSMiB: mib(s.RSS), PeakRSSMiB: mib(s.PeakRSS), Load1: LoadAvg()}
	if self, err := ReadProc(os.Getpid()); err == nil {
		out.SimCPUSeconds = self.CPU.Seconds()
		out.SimRSSMiB, out.SimPeakRSSMiB = mib(self.RSS), mib(self.PeakRSS)
	}
	return out, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func (r *runner) waitSynced(ctx context.Context, start time.Time) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		n := r.f.Synced()
		if n == len(r.f.proxies) {
			return nil
		}
		if time.Since(start) > r.o.Timeout {
			return fmt.Errorf("xdsload: only %d of %d proxies had a complete config after %v", n, len(r.f.proxies), r.o.Timeout)
		}
		if time.Since(last) > 5*time.Second {
			r.log.Info("connecting", "synced", n, "of", len(r.f.proxies))
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// quiet waits until no proxy has received anything for d (at most limit).
func (r *runner) quiet(ctx context.Context, d, limit time.Duration) {
	total := func() uint64 {
		var n uint64
		for _, c := range r.f.Counters() {
			n += c.Responses
		}
		return n
	}
	deadline := time.Now().Add(limit)
	prev, since := total(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		if n := total(); n != prev {
			prev, since = n, time.Now()
		} else if time.Since(since) >= d {
			return
		}
	}
}

// watch watches for marker on the proxies that are sent a change of
// service svc: all of them, or with ScopeNamespace those of its namespace.
func (r *runner) watch(typ, marker string, svc int) *Probe {
	ns := ""
	if r.o.Scope == ScopeNamespace {
		ns = r.o.Mesh.Namespace(svc)
	}
	return r.f.WatchNamespace(typ, marker, time.Now(), ns)
}

// changes makes o.Changes changes with change, one at a time, each
// measured until every proxy ACKed a response of type typ carrying its
// marker.
func (r *runner) changes(ctx context.Context, kind, typ string, svcOf func(i int) int, change func(i, svc int, before func(string)) error) (Change, error) {
	res := Change{Kind: kind, Type: typ, Changes: r.o.Changes}
	var all, recv []time.Duration
	var sum Pushed
	var cpu, simCPU float64
	for i := range r.o.Changes {
		r.quiet(ctx, time.Second, 10*time.Second)
		c0 := r.f.Counters()
		s0, err := r.sample()
		if err != nil {
			return res, err
		}
		var pr *Probe
		svc := svcOf(i)
		if err := change(i, svc, func(marker string) { pr = r.watch(typ, marker, svc) }); err != nil {
			return res, err
		}
		wctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		lat := pr.Wait(wctx)
		cancel()
		recv = append(recv, pr.Received()...)
		res.Watched += float64(len(lat)) / float64(r.o.Changes)
		p := percentiles(lat)
		r.log.Info("change acked", "kind", kind, "type", typ, "i", i, "p50", p.P50, "p99", p.P99, "max", p.Max, "missing", p.Missing)
		r.quiet(ctx, r.o.Settle, 10*time.Second)
		s1, err := r.sample()
		if err != nil {
			return res, err
		}
		cpu += s1.CPUSeconds - s0.CPUSeconds
		simCPU += s1.SimCPUSeconds - s0.SimCPUSeconds
		pp := perProxy(r.f.Counters(), c0, 1)
		sum.add(pp)
		all = append(all, lat...)
		res.PerChangeMax = append(res.PerChangeMax, p.Max)
		res.After = s1
	}
	res.Latency = percentiles(all)
	res.Received = percentiles(recv)
	res.PerProxy = sum.div(float64(r.o.Changes))
	res.CPUSeconds = cpu / float64(r.o.Changes)
	res.SimCPUSeconds = simCPU / float64(r.o.Changes)
	return res, nil
}

// storm changes endpoints at StormRate for StormDuration, round robin over
// services, then measures convergence on the last change.
func (r *runner) storm(ctx context.Context) (*Storm, error) {
	o := r.o
	r.quiet(ctx, time.Second, 10*time.Second)
	st := &Storm{Rate: o.StormRate, Duration: o.StormDuration}
	c0 := r.f.Counters()
	var err error
	if st.Before, err = r.sample(); err != nil {
		return nil, err
	}
	var profWG sync.WaitGroup
	if o.ProfileDir != "" {
		file := filepath.Join(o.ProfileDir, "cpu-storm.pprof")
		secs := max(1, int(o.StormDuration.Round(time.Second)/time.Second))
		profWG.Go(func() {
			if err := o.CP.FetchProfile(ctx, "profile", fmt.Sprintf("seconds=%d", secs), file); err != nil {
				r.log.Warn("cpu profile", "error", err)
				return
			}
			st.profile = file
		})
		defer func() { profWG.Wait() }()
	}
	total := int(o.StormDuration.Seconds() * float64(o.StormRate))
	total = max(total, 1)
	interval := time.Second / time.Duration(o.StormRate)
	begin := time.Now()
	var pr *Probe
	var samples []float64
	nextSample := begin
	spec := o.Mesh.Spec()
	for i := range total {
		if at := begin.Add(time.Duration(i) * interval); time.Until(at) > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Until(at)):
			}
		}
		var before func(string)
		if i == total-1 {
			before = func(m string) { pr = r.watch("EDS", m, i) }
		}
		if _, err := o.Mesh.ChangeEndpoint(i, i/spec.Services, before); err != nil {
			return nil, err
		}
		st.Changes++
		if time.Now().After(nextSample) {
			if s, err := ReadProc(o.CP.PID); err == nil {
				samples = append(samples, mib(s.RSS))
				st.MaxRSSMiB = max(st.MaxRSSMiB, mib(s.RSS))
			}
			nextSample = nextSample.Add(time.Second)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	st.Converge = percentiles(pr.Wait(wctx))
	cancel()
	st.ConvergeReceived = percentiles(pr.Received())
	r.log.Info("storm converged", "changes", st.Changes, "p99", st.Converge.P99, "max", st.Converge.Max, "missing", st.Converge.Missing)
	r.quiet(ctx, o.Settle, 10*time.Second)
	if st.After, err = r.sample(); err != nil {
		return nil, err
	}
	st.MaxRSSMiB = max(st.MaxRSSMiB, st.After.RSSMiB)
	st.CPUSeconds = st.After.CPUSeconds - st.Before.CPUSeconds
	st.PerProxy = perProxy(r.f.Counters(), c0, 1)
	// Keep at most 60 samples, evenly spread.
	if n := len(samples); n > 60 {
		kept := make([]float64, 0, 60)
		for i := range 60 {
			kept = append(kept, samples[i*n/60])
		}
		samples = kept
	}
	st.RSSMiB = samples
	return st, nil
}

// perProxy averages the counters' growth since before (nil: since zero)
// over the proxies, divided by n.
func perProxy(now, before []Counters, n float64) Pushed {
	var p Pushed
	for i, c := range now {
		if before != nil {
			c = c.sub(before[i])
		}
		p.Responses += float64(c.Responses)
		p.Resources += float64(c.Resources)
		p.KiB += float64(c.Bytes) / 1024
		for t := range p.ByType {
			p.ByType[t] += float64(c.ByType[t])
		}
		p.MaxResponses = max(p.MaxResponses, c.Responses)
		p.MaxKiB = max(p.MaxKiB, float64(c.Bytes)/1024)
	}
	return p.div(float64(len(now)) * n)
}

func (p *Pushed) add(q Pushed) {
	p.Responses += q.Responses
	p.Resources += q.Resources
	p.KiB += q.KiB
	p.MaxResponses = max(p.MaxResponses, q.MaxResponses)
	p.MaxKiB = max(p.MaxKiB, q.MaxKiB)
	for t := range p.ByType {
		p.ByType[t] += q.ByType[t]
	}
}

// div divides the means (not the maxima) by n.
func (p Pushed) div(n float64) Pushed {
	if n == 0 {
		return p
	}
	p.Responses /= n
	p.Resources /= n
	p.KiB /= n
	for t := range p.ByType {
		p.ByType[t] /= n
	}
	return p
}

// writeHeapProfile writes the simulator's live heap (after a collection)
// to file.
func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startCPUProfile profiles the simulator's CPU into file until the
// returned function is called.
func startCPUProfile(file string) (func(), error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
