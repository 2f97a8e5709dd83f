package jwks

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults, as Istio's.
const (
	// DefaultRefresh is how often fetched keys are fetched again (Istio's
	// PILOT_JWT_PUB_KEY_REFRESH_INTERVAL).
	DefaultRefresh = 20 * time.Minute
	// DefaultRetry is the longest wait before trying again a source that
	// failed (Istio's JwtPubKeyRefreshIntervalOnFailure); the first retry
	// comes after DefaultFirstRetry, doubling up to DefaultRetry for a
	// source never fetched, up to the refresh interval for one that has
	// keys.
	DefaultRetry      = time.Minute
	DefaultFirstRetry = time.Second
	// DefaultTimeout bounds one fetch (Istio's default JWT rule timeout).
	DefaultTimeout = 5 * time.Second
	// MaxBody is the largest key set (or discovery document) read.
	MaxBody = 1 << 20
)

// Want is one key source the config uses.
type Want struct {
	Source Source
	// Users name the JWT rules that need it, for status and logs, e.g.
	// "RequestAuthentication bookinfo/jwt spec.jwtRules[0]".
	Users []string
	// Timeout bounds a fetch for this source (the rule's timeout); zero
	// means Options.Timeout.
	Timeout time.Duration
}

// Status is what /status shows about one source.
type Status struct {
	Source Source   `json:"source"`
	Users  []string `json:"users"`
	// Fetched is set once keys were fetched; until then the rules using
	// the source reject every token (FailClosed).
	Fetched     bool      `json:"fetched"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// LastError is the error of the last attempt, "" when it succeeded.
	// With Fetched, the last good keys stay in force meanwhile.
	LastError string    `json:"lastError,omitempty"`
	NextFetch time.Time `json:"nextFetch,omitzero"`
}

// Options configure a Fetcher.
type Options struct {
	// Client fetches; nil means an HTTP client that verifies servers
	// against the system roots (TLS 1.2 at least) and refuses link-local
	// addresses (cloud metadata endpoints), as Istio's resolver does.
	Client *http.Client
	// Refresh, Retry, FirstRetry and Timeout default to DefaultRefresh,
	// DefaultRetry, DefaultFirstRetry and DefaultTimeout.
	Refresh, Retry, FirstRetry, Timeout time.Duration
	// OnChange is called, from Run's goroutine, after a refresh changed
	// the keys of any source (not after Sync, whose caller reads Keys).
	// It must not block for long.
	OnChange func()
	Logger   *slog.Logger
}

// Discovery is what an issuer's OpenID discovery document says besides
// its keys: the endpoints a login at a gateway (OIDCLogin) sends users
// and codes to.
type Discovery struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	// EndSessionEndpoint is "" when the provider has none (OpenID
	// Connect RP-Initiated Logout).
	EndSessionEndpoint string `json:"end_session_endpoint,omitempty"`
}

// entry is the state of one source.
type entry struct {
	want     Want
	keys     string    // last good key set; "" until fetched
	disc     Discovery // with keys, when they came by discovery
	status   Status
	failures int
	next     time.Time
	busy     bool // a fetch is in flight
}

// Fetcher keeps the key sets of the sources the config uses. Sync, Keys,
// Status and Run are safe for concurrent use.
type Fetcher struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	entries map[Source]*entry
	wake    chan struct{}
}

// NewFetcher returns a Fetcher with no sources.
func NewFetcher(opts Options) *Fetcher {
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	if opts.FirstRetry <= 0 {
		opts.FirstRetry = DefaultFirstRetry
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Client == nil {
		opts.Client = DefaultClient()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Fetcher{
		opts: opts, log: log.With("component", "jwks"), now: time.Now,
		entries: map[Source]*entry{}, wake: make(chan struct{}, 1),
	}
}

// DefaultClient is the client a Fetcher uses unless told otherwise.
func DefaultClient() *http.Client {
	dialer := &net.Dialer{Timeout: DefaultTimeout, Control: refuseLinkLocal}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: DefaultTimeout,
			DisableKeepAlives:   true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			return CheckURL(req.URL.String())
		},
	}
}

// refuseLinkLocal refuses to connect to link-local addresses (where cloud
// metadata services answer): a jwksUri must not read them.
func refuseLinkLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err == nil && (ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()) {
		return fmt.Errorf("refusing to fetch keys from link-local address %s", ip)
	}
	return nil
}

// Sync makes want the set of sources: sources no longer wanted are
// forgotten, and new ones are fetched now, concurrently, each within its
// timeout; Sync returns when they are done or ctx is. A failed fetch is
// logged, shown by Status and retried by Run; it never fails the config.
// Sync is called with every config change, from any goroutine.
func (f *Fetcher) Sync(ctx context.Context, want []Want) {
	f.mu.Lock()
	wanted := map[Source]bool{}
	var fresh []*entry
	for _, w := range want {
		wanted[w.Source] = true
		e := f.entries[w.Source]
		if e == nil {
			e = &entry{want: w, status: Status{Source: w.Source}}
			f.entries[w.Source] = e
			fresh = append(fresh, e)
		}
		e.want = w
		e.status.Users = slices.Clone(w.Users)
	}
	for src := range f.entries {
		if !wanted[src] {
			delete(f.entries, src)
		}
	}
	for _, e := range fresh {
		e.busy = true
	}
	f.mu.Unlock()

	var wg sync.WaitGroup
	for _, e := range fresh {
		wg.Go(func() { f.refresh(ctx, e) })
	}
	wg.Wait()
	f.poke()
}

// Keys returns the last good key set of every wanted source fetched at
// least once. The map is new; the caller may keep it.
func (f *Fetcher) Keys() map[Source]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[Source]string, len(f.entries))
	for src, e := range f.entries {
		if e.keys != "" {
			out[src] = e.keys
		}
	}
	return out
}

// Discovered returns, by issuer, the discovery documents of the wanted
// sources fetched by OpenID discovery at least once (the endpoints a
// gateway login needs, with the keys of Keys). The map is new.
func (f *Fetcher) Discovered() map[string]Discovery {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Discovery{}
	for src, e := range f.entries {
		if src.URI == "" && e.keys != "" && e.disc.AuthorizationEndpoint != "" {
			out[src.Issuer] = e.disc
		}
	}
	return out
}

// Status reports every wanted source, sorted.
func (f *Fetcher) Status() []Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Status, 0, len(f.entries))
	for _, e := range f.entries {
		st := e.status
		st.Users = slices.Clone(st.Users)
		st.NextFetch = e.next
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Source.String(), b.Source.String()) })
	return out
}

// Run refreshes the sources when they are due, until ctx is done: every
// Refresh, and sooner after a failure. It calls OnChange when keys
// changed. It returns nil when ctx is done.
func (f *Fetcher) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// A refresh cut short by ctx leaves its source due at once: check
		// ctx first, or this loop would spin (and start goroutines) forever.
		if ctx.Err() != nil {
			return nil
		}
		due, wait := f.due()
		if len(due) > 0 {
			changed := false
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, e := range due {
				wg.Go(func() {
					if f.refresh(ctx, e) {
						mu.Lock()
						changed = true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if changed && f.opts.OnChange != nil && ctx.Err() == nil {
				f.opts.OnChange()
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-timer.C:
		}
	}
}

// due marks and returns the sources whose next fetch has come, or how long
// until the next one does.
func (f *Fetcher) due() ([]*entry, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	wait := time.Hour
	var out []*entry
	for _, e := range f.entries {
		if e.busy {
			continue
		}
		if !e.next.After(now) {
			e.busy = true
			out = append(out, e)
			continue
		}
		wait = min(wait, e.next.Sub(now))
	}
	return out, wait
}

func (f *Fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// refresh fetches one source (marked busy by the caller), records the
// outcome and schedules the next fetch. It reports whether the keys
// changed.
func (f *Fetcher) refresh(ctx context.Context, e *entry) bool {
	f.mu.Lock()
	w := e.want
	f.mu.Unlock()
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = f.opts.Timeout
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	keys, disc, err := f.fetch(fctx, w.Source)
	cancel()

	f.mu.Lock()
	defer f.mu.Unlock()
	e.busy = false
	now := f.now()
	e.status.LastAttempt = now
	if err != nil {
		if ctx.Err() != nil {
			e.next = now // cancelled: nothing learnt
			return false
		}
		e.failures++
		retry := f.opts.FirstRetry << min(e.failures-1, 20)
		limit := f.opts.Retry
		if e.keys != "" {
			limit = f.opts.Refresh
		}
		e.next = now.Add(min(retry, limit))
		msg := err.Error()
		if msg != e.status.LastError {
			users := strings.Join(w.Users, ", ")
			if e.keys != "" {
				f.log.Warn("JWT keys could not be refreshed; the last good keys stay in force",
					"source", w.Source.String(), "users", users, "error", msg, "retry", e.next.Sub(now).String())
			} else {
				f.log.Error("JWT keys could not be fetched; every token of these rules is rejected until they are",
					"source", w.Source.String(), "users", users, "error", msg, "retry", e.next.Sub(now).String())
			}
		}
		e.status.LastError = msg
		return false
	}
	if e.status.LastError != "" {
		f.log.Info("JWT keys fetched again", "source", w.Source.String())
	}
	e.failures = 0
	e.status.LastError = ""
	e.status.LastSuccess = now
	e.status.Fetched = true
	e.next = now.Add(f.opts.Refresh)
	changed := keys != e.keys || disc != e.disc
	if changed && e.keys != "" {
		f.log.Info("JWT keys changed", "source", w.Source.String())
	}
	e.keys, e.disc = keys, disc
	return changed
}

// fetch gets the key set of src: its URI, or the jwks_uri of the issuer's
// OpenID discovery document, with the document's endpoints when it has
// them (only https ones, or http on loopback, are kept).
func (f *Fetcher) fetch(ctx context.Context, src Source) (string, Discovery, error) {
	uri := src.URI
	var disc Discovery
	if uri == "" {
		doc := strings.TrimSuffix(src.Issuer, "/") + "/.well-known/openid-configuration"
		body, err := f.get(ctx, doc)
		if err != nil {
			return "", disc, fmt.Errorf("OpenID discovery: %w", err)
		}
		var d struct {
			Discovery
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &d); err != nil || d.JWKSURI == "" {
			return "", disc, fmt.Errorf("OpenID discovery: %s has no jwks_uri", doc)
		}
		uri = d.JWKSURI
		if CheckURL(d.AuthorizationEndpoint) == nil && CheckURL(d.TokenEndpoint) == nil {
			disc = d.Discovery
			if CheckURL(disc.EndSessionEndpoint) != nil {
				disc.EndSessionEndpoint = ""
			}
		}
	}
	body, err := f.get(ctx, uri)
	if err != nil {
		return "", disc, err
	}
	// Only a key set is inlined into proxies' config: a jwksUri must not
	// make the control plane copy whatever it points at.
	if _, err := Parse(body); err != nil {
		return "", disc, fmt.Errorf("%s: %w", uri, err)
	}
	return string(bytes.TrimSpace(body)), disc, nil
}

func (f *Fetcher) get(ctx context.Context, uri string) ([]byte, error) {
	if err := CheckURL(uri); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.opts.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("GET %s: the response is over %d bytes", uri, MaxBody)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet := strings.TrimSpace(string(body))
		if len(snippet) > 100 {
			snippet = snippet[:100] + "..."
		}
		return nil, fmt.Errorf("GET %s: status %d %q", uri, resp.StatusCode, snippet)
	}
	return body, nil
}
