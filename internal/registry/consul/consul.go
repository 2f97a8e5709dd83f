// Package consul is a registry.Source that reads services, instances and
// their health from a Consul catalog with blocking queries.
//
// One goroutine watches the service list (/v1/catalog/services); for every
// service it starts one goroutine that watches the service's instances and
// checks (/v1/health/service/<name>), and stops it when the service leaves
// the catalog. Every query blocks on Consul's index until something changes
// (or WaitTime passes), so a change arrives as soon as Consul knows it and
// an idle catalog costs one open request per service. Errors are retried
// with bounded, jittered backoff; while Consul cannot be reached the last
// known snapshot keeps serving and Status reports Connected=false. When it
// answers again, what it says is published after Options.Settle, so an
// agent that restarted empty and is re-registering its services does not
// empty the mesh for a moment.
//
// # Mapping
//
// Each Consul service name becomes the mesh host <name>.<domain> (domain
// default "service.consul", as Consul DNS), whose short alias is the bare
// name <name> (registry.Service.Aliases: a domain of the host's virtual
// hosts, so clients calling http://order:8080 get the routing rules of
// order.service.consul; Options.DisableShortAlias turns it off). Every host the
// instances list in meta `weft-host` (comma-separated; also accepted as a
// tag `weft-host=<host>`) is a host too, with the same ports and
// endpoints: that is how a Consul service and a Kubernetes
// Service become one host. Several services on one node (one process with
// order on 8080 and payment on 8081) are independent services whose
// endpoints share the node's address.
//
// Ports: every distinct instance port is a service port; an endpoint serves
// the service port equal to its own port. The protocol is meta `protocol`
// (or tag `protocol=<p>`), TCP when absent, as Istio's Consul adapter did.
// Labels come from node meta, then tags (`key=value`, Istio's `key|value`,
// or a bare tag as a presence label `tag: ""`), then service meta, later
// overriding earlier (see Labels). Health: passing and warning → Healthy
// (weights from Consul's Weights), critical, maintenance → Unhealthy.
// Locality: Consul's locality region, else the datacenter; zone from
// Consul's locality, else node meta `zone`. The servers' own "consul"
// service and Connect proxies/gateways are left out.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"weft.dev/weft/internal/registry"
)

// Name is the source's name in Service.Source, /status and logs.
const Name = "consul"

// Defaults of Options.
const (
	DefaultDomain     = "service.consul"
	DefaultNamespace  = "default"
	DefaultWaitTime   = 5 * time.Minute
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultSettle     = 5 * time.Second
)

// Options configure a Source. Only Address is required.
type Options struct {
	// Address is the Consul agent's HTTP API: host:port, or a URL
	// (http://host:port, https://host:port).
	Address string
	// Token is the ACL token sent with every query; empty means
	// CONSUL_HTTP_TOKEN from the environment, else none (the agent's
	// default token applies). TLS settings come from the environment as
	// for the consul CLI (CONSUL_CACERT, CONSUL_CLIENT_CERT, …).
	Token string
	// Datacenter to read; empty means the agent's own.
	Datacenter string
	// Domain is appended to a service name to form its mesh host
	// (<name>.<Domain>); default DefaultDomain.
	Domain string
	// Namespace is the mesh namespace of Consul services and endpoints
	// (Consul Enterprise namespaces other than "default" are used as they
	// are); default DefaultNamespace, as Istio's Consul adapter.
	Namespace string
	// DisableShortAlias stops publishing the bare service name as a
	// second host.
	DisableShortAlias bool
	// WaitTime is how long one blocking query may wait for a change
	// before Consul answers unchanged; default DefaultWaitTime (Consul
	// caps it at 10 minutes).
	WaitTime time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// after a failed query; defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Settle is how long, after Consul answers again following an outage,
	// the last snapshot keeps serving while Weft reads the catalog anew; what
	// it reads then is published at once. A restarted agent re-registers its
	// services and re-runs its checks in that time instead of emptying the
	// mesh for a moment. Default DefaultSettle; negative publishes at once.
	Settle time.Duration
	// HTTPClient talks to Consul (TLS settings, proxies); nil builds one
	// without connection pooling whose timeout outlasts a blocking query.
	HTTPClient *http.Client
	// Logger receives warnings and outage reports; default slog.Default().
	Logger *slog.Logger
}

// Source is the Consul registry. Create it with New, start it with Run;
// Snapshot, Changed and Status are safe from any goroutine.
type Source struct {
	opts   Options
	client *api.Client
	conv   converter
	log    *slog.Logger

	changed chan struct{}
	settle  chan struct{} // a publish waits for the settle time to end

	mu   sync.Mutex
	snap *registry.Snapshot // nil: contents is published and not built yet
	// contents is what the last publish published, until Snapshot
	// builds it. A storm of changes in Consul publishes once per service
	// answer, and building a snapshot of the whole catalog for each was
	// most of what the source cost (1.7 ms each at 1,000 services, 18 %
	// of the control plane's CPU at 100 changes a second); built when
	// asked for, it is built once per snapshot the control plane takes.
	contents  registry.Contents
	results   map[string]result // by Consul service name: the last converted health answer
	pending   map[string]bool   // services listed by the catalog whose first health answer is still due
	catalog   bool              // the catalog list has been read once
	failing   map[string]error  // by watcher ("catalog", "service <name>"): its last query failed
	lastErr   error
	errTime   time.Time
	update    time.Time
	warned    map[string]bool    // warnings already logged
	outage    bool               // Consul was unreachable and the service list has not been read since
	outageSeq uint64             // incremented when an outage begins
	kick      context.CancelFunc // cancels the catalog query in flight
	until     time.Time          // publishing waits until then (settling after an outage)
	dirty     bool               // a publish is waiting for until
	synced    bool
	counting  struct{ services, endpoints int }
}

var _ registry.Source = (*Source)(nil)

// New validates opts and builds a Source; it does not contact Consul.
func New(opts Options) (*Source, error) {
	if opts.Address == "" {
		return nil, errors.New("consul registry: no address: set the Consul agent's HTTP address (host:port)")
	}
	if err := checkAddress(opts.Address); err != nil {
		return nil, fmt.Errorf("consul registry: address %q: %w", opts.Address, err)
	}
	opts.Domain = strings.ToLower(strings.Trim(opts.Domain, "."))
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.WaitTime <= 0 {
		opts.WaitTime = DefaultWaitTime
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.Settle == 0 {
		opts.Settle = DefaultSettle
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = opts.Address
	if opts.Token != "" {
		cfg.Token = opts.Token
	}
	if opts.Datacenter != "" {
		cfg.Datacenter = opts.Datacenter
	}
	cfg.HttpClient = opts.HTTPClient
	if cfg.HttpClient == nil {
		// TLS as the Consul CLI configures it (CONSUL_CACERT, …).
		hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
		if err != nil {
			return nil, fmt.Errorf("consul registry: TLS settings for %q: %w", opts.Address, err)
		}
		// A blocking query lasts up to WaitTime plus Consul's jitter
		// (WaitTime/16); a connection silent for longer than that is dead.
		hc.Timeout = opts.WaitTime + opts.WaitTime/16 + 15*time.Second
		cfg.HttpClient = hc
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul registry: address %q: %w", opts.Address, err)
	}
	return &Source{
		opts:    opts,
		client:  client,
		conv:    converter{source: Name, domain: opts.Domain, namespace: opts.Namespace, alias: !opts.DisableShortAlias},
		log:     opts.Logger.With("component", "registry/consul", "address", opts.Address),
		changed: make(chan struct{}, 1),
		settle:  make(chan struct{}, 1),
		snap:    registry.New(registry.Contents{}),
		results: map[string]result{},
		pending: map[string]bool{},
		failing: map[string]error{},
		warned:  map[string]bool{},
	}, nil
}

// Name returns "consul".
func (s *Source) Name() string { return Name }

// Snapshot returns the latest snapshot; never nil.
func (s *Source) Snapshot() *registry.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil {
		s.snap, s.contents = registry.New(s.contents), registry.Contents{}
	}
	return s.snap
}

// Changed has a value after each new snapshot (capacity 1, coalescing).
func (s *Source) Changed() <-chan struct{} { return s.changed }

// Status reports whether the catalog has been read, whether Consul answers
// and the last error, for /status.
func (s *Source) Status() registry.SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := registry.SourceStatus{
		Name:          Name,
		Synced:        s.synced,
		Connected:     s.catalog && len(s.failing) == 0,
		LastErrorTime: s.errTime,
		LastUpdate:    s.update,
		Services:      s.counting.services,
		Endpoints:     s.counting.endpoints,
	}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}

// Run watches the catalog until ctx is done and returns nil once every
// watcher goroutine has ended. It never fails: an unreachable agent is
// retried with backoff and reported by Status.
func (s *Source) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	watchers := map[string]context.CancelFunc{}
	defer func() {
		for _, cancel := range watchers {
			cancel()
		}
		wg.Wait()
	}()
	wg.Go(func() { s.settler(ctx) })
	bo := s.backoff()
	var index, last uint64 // the next query's WaitIndex; the last index Consul answered
	for ctx.Err() == nil {
		// A watcher that finds Consul gone cancels this query (kick), so
		// the list is read again at once rather than after WaitTime.
		qctx, kick := context.WithCancel(ctx)
		seq, outage := s.startCatalogQuery(kick)
		if outage {
			index = 0 // the agent answering now may not be the one whose index we hold
		}
		began := time.Now()
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: s.opts.WaitTime}).WithContext(qctx)
		names, meta, err := s.client.Catalog().Services(q)
		kick()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if qctx.Err() != nil {
				continue // kicked: read the list again now
			}
			s.fail("catalog", fmt.Errorf("consul registry: listing services at %s: %w", s.opts.Address, err))
			index = 0
			sleep(ctx, bo.next())
			continue
		}
		bo.reset()
		if meta.LastIndex < last {
			// The list's index only goes backwards when the server's state
			// was reset (a dev agent restarted, a snapshot restored): handle
			// it as an outage, then read the list anew.
			s.stateReset(last, meta.LastIndex)
			last, index = meta.LastIndex, 0
			continue
		}
		last = meta.LastIndex
		unchanged := meta.LastIndex == index
		early := unchanged && time.Since(began) < s.opts.WaitTime/2
		index = nextIndex(index, meta.LastIndex)

		want := map[string]bool{}
		for name := range names {
			if name != consulService {
				want[name] = true
			}
		}
		var started, stopped []string
		for name := range want {
			if _, ok := watchers[name]; !ok {
				started = append(started, name)
			}
		}
		for name, cancel := range watchers {
			if !want[name] {
				cancel()
				delete(watchers, name)
				stopped = append(stopped, name)
			}
		}
		outage = s.catalogRead(seq, started, stopped)
		// Watchers start once catalogRead has counted their services as
		// waiting for a first answer: an answer read before that would
		// be forgotten, and the source would not be synced until the
		// service next changed.
		for _, name := range started {
			wctx, cancel := context.WithCancel(ctx)
			watchers[name] = cancel
			wg.Go(func() { s.watchService(wctx, name) })
		}
		if outage {
			// The answer may come from an agent on its way down: ask again
			// without blocking on its index.
			index = 0
			sleep(ctx, s.opts.MinBackoff)
			continue
		}
		index = s.nextWait(ctx, index, unchanged, early)
	}
	return nil
}

// nextWait pauses after an answer without a change, so a misbehaving
// agent cannot make a watch a busy loop, and returns the next WaitIndex:
// 0 after an unchanged answer that came long before WaitTime (an agent
// shutting down answers its blocking queries; the agent answering next may
// be a restarted one, on whose lower index a blocking query would wait for
// WaitTime), else index.
func (s *Source) nextWait(ctx context.Context, index uint64, unchanged, early bool) uint64 {
	if !unchanged {
		return index
	}
	sleep(ctx, s.opts.MinBackoff)
	if early {
		return 0
	}
	return index
}

// watchService follows one service's instances and checks until ctx ends
// (Run stopped, or the service left the catalog).
func (s *Source) watchService(ctx context.Context, name string) {
	key := "service " + name
	defer s.forget(key)
	bo := s.backoff()
	var index uint64
	for ctx.Err() == nil {
		seq, outage := s.outageState()
		if outage {
			index = 0
		}
		began := time.Now()
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: s.opts.WaitTime}).WithContext(ctx)
		entries, meta, err := s.client.Health().Service(name, "", false, q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.fail(key, fmt.Errorf("consul registry: reading service %q at %s: %w", name, s.opts.Address, err))
			index = 0 // a restarted agent's index may be lower: blocking on ours would wait WaitTime
			sleep(ctx, bo.next())
			continue
		}
		bo.reset()
		unchanged := meta.LastIndex == index
		early := unchanged && time.Since(began) < s.opts.WaitTime/2
		index = nextIndex(index, meta.LastIndex)
		s.serviceRead(ctx, key, name, entries)
		if now, outage := s.outageState(); outage || now != seq {
			// Consul went away while this query ran, or is still away: the
			// index may be another agent's; ask again without blocking.
			index = 0
			sleep(ctx, s.opts.MinBackoff)
			continue
		}
		index = s.nextWait(ctx, index, unchanged, early)
	}
}

// nextIndex is the WaitIndex for the next blocking query: Consul's answer,
// reset to 0 when it went backwards (a restarted or replaced server) and at
// least 1 otherwise, as Consul's documentation asks of clients.
func nextIndex(prev, got uint64) uint64 {
	if got < prev {
		return 0
	}
	return max(got, 1)
}

// startCatalogQuery records how to kick the catalog query about to start
// and returns the outage sequence number it starts in and whether Consul
// is in an outage.
func (s *Source) startCatalogQuery(kick context.CancelFunc) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kick = kick
	return s.outageSeq, s.outage
}

// stateReset starts an outage without an error: the catalog's index went
// from prev back to now.
func (s *Source) stateReset(prev, now uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.outage {
		s.outage = true
		s.outageSeq++
		s.log.Info("consul's catalog index went backwards (a restarted or restored server): reading it anew", "from", prev, "to", now)
	}
}

// outageState returns the outage sequence number (incremented when an
// outage begins) and whether Consul is unreachable now.
func (s *Source) outageState() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outageSeq, s.outage
}

// catalogRead records a successful catalog answer to a query started in
// outage seq: services that appeared wait for their first health answer,
// services that left are removed. An answer to a query started before the
// current outage does not end it. It returns whether the outage goes on.
func (s *Source) catalogRead(seq uint64, started, stopped []string) (outage bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.succeed("catalog")
	if s.outage && seq == s.outageSeq {
		s.outage = false
		if s.opts.Settle > 0 && s.synced {
			// Only a mesh that had Consul's services needs protecting; a
			// first read is published as soon as it is complete.
			s.until = time.Now().Add(s.opts.Settle)
			s.log.Info("consul answers again; reading its catalog before applying it", "settle", s.opts.Settle)
		}
		if s.dirty {
			s.publish() // now, or at the end of the settle time
		}
	}
	s.catalog = true
	for _, name := range started {
		s.pending[name] = true
	}
	removed := false
	for _, name := range stopped {
		delete(s.pending, name)
		if _, ok := s.results[name]; ok {
			delete(s.results, name)
			removed = true
		}
	}
	if len(started)+len(stopped) > 0 {
		s.log.Debug("consul services changed", "added", len(started), "removed", len(stopped))
	}
	s.maybeSynced()
	if removed {
		s.publish()
	}
	return s.outage
}

// serviceRead records a successful health answer for one service. An
// answer from a watcher already stopped (its service left) is dropped.
func (s *Source) serviceRead(ctx context.Context, key, name string, entries []*api.ServiceEntry) {
	r := s.conv.convert(name, entries)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	s.succeed(key)
	for _, w := range r.warnings {
		if !s.warned[w] {
			s.warned[w] = true
			s.log.Warn(w)
		}
	}
	r.warnings = nil
	delete(s.pending, name)
	s.maybeSynced()
	if old, ok := s.results[name]; ok && reflect.DeepEqual(old, r) {
		return // only something unmapped changed (a check's output, an index)
	}
	s.results[name] = r
	s.publish()
}

// publish builds a new snapshot from every service's result and signals
// Changed. During an outage (the service list cannot be read) it only
// notes that a publish is due: another service's answer, from an agent
// that restarted empty, must not empty the mesh. While settling after an
// outage it leaves the publish to the settler. s.mu is held.
func (s *Source) publish() {
	if s.outage {
		s.dirty = true
		return
	}
	if time.Now().Before(s.until) {
		s.dirty = true
		select {
		case s.settle <- struct{}{}:
		default:
		}
		return
	}
	s.dirty = false
	var c registry.Contents
	for _, name := range sortedNames(s.results) {
		r := s.results[name]
		c.Services = append(c.Services, r.services...)
		c.Endpoints = append(c.Endpoints, r.endpoints...)
	}
	s.snap, s.contents = nil, c
	s.update = time.Now()
	s.counting.services, s.counting.endpoints = len(c.Services), len(c.Endpoints)
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// settler publishes what was read while settling once the settle time
// is over; it ends with ctx.
func (s *Source) settler(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.settle:
		}
		s.mu.Lock()
		wait := time.Until(s.until)
		s.mu.Unlock()
		sleep(ctx, wait)
		s.mu.Lock()
		if s.dirty && ctx.Err() == nil {
			s.publish()
		}
		s.mu.Unlock()
	}
}

// maybeSynced marks the source synced once the catalog and the first
// answer of every service listed in it have been read. s.mu is held.
func (s *Source) maybeSynced() {
	if !s.synced && s.catalog && len(s.pending) == 0 {
		s.synced = true
		s.log.Info("consul registry synced", "services", len(s.results))
		if len(s.results) == 0 {
			// An empty catalog: still tell the reader the source is ready.
			s.publish()
		}
	}
}

// fail records a failed query of watcher key.
func (s *Source) fail(key string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failing) == 0 {
		s.log.Warn("consul unreachable; the last known services keep serving", "error", err)
	}
	s.failing[key] = err
	s.lastErr, s.errTime = err, time.Now()
	if unreachable(err) && !s.outage {
		// Hold what is published until the service list has been read
		// again, from whichever agent answers then; read it now.
		s.outage = true
		s.outageSeq++
		if s.kick != nil {
			s.kick()
		}
	}
}

// unreachable reports whether err means Consul cannot answer (no
// connection, a timeout, a 5xx such as "No cluster leader"), rather than
// refusing one query (an ACL's 403).
func unreachable(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code >= 500
	}
	return true
}

// succeed clears watcher key's failure. s.mu is held.
func (s *Source) succeed(key string) {
	if _, ok := s.failing[key]; !ok {
		return
	}
	delete(s.failing, key)
	if len(s.failing) == 0 {
		s.lastErr = nil
		s.log.Info("consul reachable again")
	}
}

// forget drops the failure of a watcher that ended.
func (s *Source) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.succeed(key)
}

func sortedNames(m map[string]result) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// backoff is a bounded exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (s *Source) backoff() *backoff { return &backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff} }

// next returns the next pause: the current step (doubling from min up to
// max) with its upper half jittered, so watchers that failed together do
// not retry together.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// checkAddress accepts what the Consul client does: host:port, or an
// http(s) URL with a host.
func checkAddress(addr string) error {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return err
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("scheme %q: want http or https", u.Scheme)
		}
		if u.Host == "" {
			return errors.New("no host")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("want host:port or an http(s) URL: %w", err)
	}
	return nil
}
