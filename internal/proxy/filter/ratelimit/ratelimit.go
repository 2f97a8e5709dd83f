// Package ratelimit is Envoy's envoy.filters.http.local_ratelimit: token
// buckets held in the proxy, per filter config (the http_filters entry)
// or per route (typed_per_filter_config, which replaces the filter's
// config for that route), and per descriptor — the request's
// descriptors come from the config's rate_limits actions (request
// headers, the client's address, a generic key) and each configured
// descriptor that matches one has its own bucket; a descriptor entry
// without a value is a wildcard, one bucket per distinct value (per
// client IP, per user header), the most recently used
// max_dynamic_descriptors of them kept. A request over a limit is
// answered 429 (or the configured status) with body
// "local_rate_limited", flag RL and x-envoy-ratelimited, when
// filter_enforced says so; with enable_x_ratelimit_headers
// DRAFT_VERSION_03 every response the filter saw carries
// x-ratelimit-limit/-remaining/-reset. Counted as Envoy's
// <stat_prefix>.http_local_rate_limit.* (Stats).
//
// Buckets refill continuously (tokens_per_fill every fill_interval,
// spread evenly), as Envoy's atomic token bucket. Taking a token from a
// bucket is lock-free; a wildcard descriptor's lookup takes a short
// mutex.
//
// A config's buckets live as long as a runtime uses the config: a
// config byte-for-byte identical to one compiled before (the same route
// config after an unrelated update, the same config on a port's TLS and
// plaintext filter chains) gets the same buckets, so an xDS push does not
// refill them. This is where Weft differs from Envoy, whose buckets
// belong to one route or filter instance.
package ratelimit

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
	"weak"
	"weft.dev/weft/internal/proxy/xdswire"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/rlaction"
)

// Name is the filter's name in http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.local_ratelimit"

const (
	body             = "local_rate_limited"
	flagRateLimited  = "RL"
	minFillInterval  = 50 * time.Millisecond // Envoy refuses shorter fill intervals
	maxFillTime      = int64(100 * 365 * 24 * time.Hour)
	defaultDynamic   = 20 // Envoy's max_dynamic_descriptors default
	grpcUnavailable  = "14"
	grpcExhausted    = "8"
	headerLimit      = "X-Ratelimit-Limit"
	headerRemaining  = "X-Ratelimit-Remaining"
	headerReset      = "X-Ratelimit-Reset"
	headerRetryAfter = "Retry-After"
	headerLimited    = "X-Envoy-Ratelimited"
)

// Factory makes local rate limit filters. It remembers the configs it
// compiled while some runtime uses them (see the package doc), so make
// one per proxy. Safe for use from one goroutine at a time, as every
// Factory.
type Factory struct {
	stats *Stats
	mu    sync.Mutex
	live  map[[sha256.Size]byte]weak.Pointer[limiter]
}

var _ filter.Factory = (*Factory)(nil)

// NewFactory returns a Factory whose filters count in stats (nil: they
// count nothing).
func NewFactory(stats *Stats) *Factory {
	return &Factory{stats: stats, live: map[[sha256.Size]byte]weak.Pointer[limiter]{}}
}

// Name implements filter.Factory.
func (*Factory) Name() string { return Name }

// New implements filter.Factory: config is a LocalRateLimit, which
// applies to every route without one of its own. A config without a
// token bucket or descriptors limits nothing.
func (f *Factory) New(config *anypb.Any) (filter.Filter, error) {
	if config == nil {
		return httpFilter{}, nil
	}
	l, err := f.limiter(config)
	if err != nil {
		return nil, err
	}
	return httpFilter{def: l}, nil
}

// ParsePerRoute implements filter.Factory: config is a LocalRateLimit
// that replaces the filter's for the route.
func (f *Factory) ParsePerRoute(config *anypb.Any) (any, error) { return f.limiter(config) }

// limiter compiles config, or returns the limiter compiled before from
// the same bytes while it is still in use.
func (f *Factory) limiter(config *anypb.Any) (*limiter, error) {
	h := sha256.New()
	h.Write([]byte(config.GetTypeUrl()))
	h.Write([]byte{0})
	h.Write(config.GetValue())
	var key [sha256.Size]byte
	h.Sum(key[:0])
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.live[key].Value(); l != nil {
		return l, nil
	}
	l, err := compile(config, f.stats)
	if err != nil {
		return nil, err
	}
	f.live[key] = weak.Make(l)
	runtime.AddCleanup(l, f.forget, key)
	return l, nil
}

// forget drops key once its limiter is gone (a cleanup: runs on its own
// goroutine).
func (f *Factory) forget(key [sha256.Size]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if wp, ok := f.live[key]; ok && wp.Value() == nil {
		delete(f.live, key)
	}
}

// limiter is a compiled LocalRateLimit and its buckets. Its config is
// immutable; its buckets are safe for concurrent use.
type limiter struct {
	stats               *counters
	enabled, enforced   fraction
	status              int
	grpcStatus          string
	def                 *bucket // nil: no default token bucket
	defParams           bucketParams
	descriptors         []*descriptor
	actions             [][]rlaction.Action // rate_limits: each yields at most one request descriptor
	alwaysConsumeDef    bool
	xHeaders, retryHdr  bool
	respHeaders         []headerOp
	reqHeadersNotForced []headerOp
}

// descriptor is a configured LocalRateLimitDescriptor.
type descriptor struct {
	entries []entry // value "" is a wildcard
	params  bucketParams
	static  *bucket         // no wildcard entry
	dynamic *dynamicBuckets // some wildcard entry
}

// entry is one entry of a descriptor.
type entry = rlaction.Entry

// headerOp is a HeaderValueOption: set (overwrite) or add.
type headerOp struct {
	name, value string
	add         bool
}

// fraction is a FractionalPercent: num out of den.
type fraction struct{ num, den uint32 }

func (f fraction) hit() bool {
	return f.num > 0 && (f.num >= f.den || rand.Uint32N(f.den) < f.num)
}

// compileFraction reads a RuntimeFractionalPercent's default value (the
// proxy has no runtime); unset is 0%, as Envoy's filter_enabled and
// filter_enforced default.
func compileFraction(p *core.RuntimeFractionalPercent) fraction {
	if p == nil {
		return fraction{0, 100}
	}
	d := p.GetDefaultValue()
	den := uint32(100)
	switch d.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	}
	return fraction{min(d.GetNumerator(), den), den}
}

func compileBucket(tb *typev3.TokenBucket) (bucketParams, error) {
	if tb.GetMaxTokens() == 0 {
		return bucketParams{}, fmt.Errorf("max_tokens: must be at least 1")
	}
	if err := tb.GetFillInterval().CheckValid(); err != nil {
		return bucketParams{}, fmt.Errorf("fill_interval: %w", err)
	}
	fill := tb.GetFillInterval().AsDuration()
	if fill < minFillInterval {
		return bucketParams{}, fmt.Errorf("fill_interval: %v is shorter than %v", fill, minFillInterval)
	}
	per := uint32(1)
	if tb.GetTokensPerFill() != nil {
		per = tb.GetTokensPerFill().GetValue()
		if per == 0 {
			return bucketParams{}, fmt.Errorf("tokens_per_fill: must be at least 1")
		}
	}
	p := bucketParams{max: int64(tb.GetMaxTokens()), perToken: max(int64(fill)/int64(per), 1)}
	if p.max > maxFillTime/p.perToken {
		// The bucket's state is one int64 of nanoseconds: filling it from
		// empty must take less than that can count.
		return bucketParams{}, fmt.Errorf("max_tokens: %d tokens at one per %v take longer than 100 years to fill", p.max, time.Duration(p.perToken))
	}
	return p, nil
}

func compile(a *anypb.Any, stats *Stats) (*limiter, error) {
	var in lrlv3.LocalRateLimit
	if err := xdswire.UnmarshalAny(a, &in); err != nil {
		return nil, fmt.Errorf("want LocalRateLimit: %w", err)
	}
	if in.GetStatPrefix() == "" {
		return nil, fmt.Errorf("stat_prefix: required")
	}
	switch {
	case in.GetLocalRateLimitPerDownstreamConnection():
		return nil, fmt.Errorf("local_rate_limit_per_downstream_connection: unsupported")
	case in.GetLocalClusterRateLimit() != nil:
		return nil, fmt.Errorf("local_cluster_rate_limit: unsupported")
	case in.GetStage() != 0:
		return nil, fmt.Errorf("stage: unsupported (only stage 0)")
	case len(in.GetDescriptors()) > 0 && len(in.GetRateLimits()) == 0:
		// Envoy would take the request's descriptors from the route's
		// rate_limits, which this proxy does not read: refuse rather
		// than never match.
		return nil, fmt.Errorf("descriptors: need rate_limits in this config (the route's rate_limits are not read)")
	}
	at := now()
	l := &limiter{
		stats:            stats.forPrefix(in.GetStatPrefix()),
		enabled:          compileFraction(in.GetFilterEnabled()),
		enforced:         compileFraction(in.GetFilterEnforced()),
		status:           http.StatusTooManyRequests,
		grpcStatus:       grpcUnavailable,
		alwaysConsumeDef: in.GetAlwaysConsumeDefaultTokenBucket() == nil || in.GetAlwaysConsumeDefaultTokenBucket().GetValue(),
		xHeaders:         in.GetEnableXRatelimitHeaders() == rlcommon.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		retryHdr:         in.GetEnableRetryAfterHeader(),
	}
	if in.GetRateLimitedAsResourceExhausted() {
		l.grpcStatus = grpcExhausted
	}
	if st := in.GetStatus(); st != nil {
		l.status = int(st.GetCode())
		if l.status < 400 || l.status > 599 {
			return nil, fmt.Errorf("status.code: %d is not an HTTP error status", l.status)
		}
	}
	if tb := in.GetTokenBucket(); tb != nil {
		p, err := compileBucket(tb)
		if err != nil {
			return nil, fmt.Errorf("token_bucket.%w", err)
		}
		l.defParams, l.def = p, newBucket(p, at)
	}
	maxDynamic := defaultDynamic
	if m := in.GetMaxDynamicDescriptors(); m != nil {
		if m.GetValue() == 0 {
			return nil, fmt.Errorf("max_dynamic_descriptors: must be at least 1")
		}
		maxDynamic = int(m.GetValue())
	}
	for i, d := range in.GetDescriptors() {
		path := fmt.Sprintf("descriptors[%d]", i)
		if len(d.GetEntries()) == 0 {
			return nil, fmt.Errorf("%s.entries: at least one entry is required", path)
		}
		cd := &descriptor{}
		wildcard := false
		for j, e := range d.GetEntries() {
			if e.GetKey() == "" {
				return nil, fmt.Errorf("%s.entries[%d].key: required", path, j)
			}
			wildcard = wildcard || e.GetValue() == ""
			cd.entries = append(cd.entries, entry{Key: e.GetKey(), Value: e.GetValue()})
		}
		if d.GetTokenBucket() == nil {
			return nil, fmt.Errorf("%s.token_bucket: required", path)
		}
		p, err := compileBucket(d.GetTokenBucket())
		if err != nil {
			return nil, fmt.Errorf("%s.token_bucket.%w", path, err)
		}
		cd.params = p
		if wildcard {
			cd.dynamic = newDynamicBuckets(p, maxDynamic)
		} else {
			cd.static = newBucket(p, at)
		}
		l.descriptors = append(l.descriptors, cd)
	}
	// The most restrictive bucket first, as Envoy sorts matched descriptors.
	slices.SortStableFunc(l.descriptors, func(a, b *descriptor) int { return cmp.Compare(a.params.rate(), b.params.rate()) })
	for i, rl := range in.GetRateLimits() {
		acts, err := rlaction.Compile(rl)
		if err != nil {
			return nil, fmt.Errorf("rate_limits[%d].%w", i, err)
		}
		l.actions = append(l.actions, acts)
	}
	var err error
	if l.respHeaders, err = compileHeaders(in.GetResponseHeadersToAdd()); err != nil {
		return nil, fmt.Errorf("response_headers_to_add%w", err)
	}
	if l.reqHeadersNotForced, err = compileHeaders(in.GetRequestHeadersToAddWhenNotEnforced()); err != nil {
		return nil, fmt.Errorf("request_headers_to_add_when_not_enforced%w", err)
	}
	return l, nil
}

func compileHeaders(hs []*core.HeaderValueOption) ([]headerOp, error) {
	var out []headerOp
	for i, h := range hs {
		if h.GetHeader().GetKey() == "" {
			return nil, fmt.Errorf("[%d].header.key: required", i)
		}
		add := h.GetAppendAction() == core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		if h.GetAppend() != nil {
			add = h.GetAppend().GetValue()
		}
		out = append(out, headerOp{name: http.CanonicalHeaderKey(h.GetHeader().GetKey()), value: h.GetHeader().GetValue(), add: add})
	}
	return out, nil
}

func applyHeaders(h http.Header, ops []headerOp) {
	for _, op := range ops {
		if op.add {
			h[op.name] = append(h[op.name], op.value)
		} else {
			h[op.name] = []string{op.value}
		}
	}
}

type httpFilter struct {
	def *limiter // the http_filters entry's config; nil: none
}

var _ filter.Filter = httpFilter{}

// DecodeHeaders is Envoy's local rate limit decodeHeaders: when the
// filter is enabled for the request (filter_enabled), it takes a token
// from each bucket of the descriptors the request matches (the most
// restrictive first) and from the default bucket (always, or only when
// no descriptor matched); over a limit, it answers with the configured
// status when the limit is enforced for the request (filter_enforced),
// and otherwise adds request_headers_to_add_when_not_enforced and lets
// the request through.
func (f httpFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	l, _ := s.PerRoute.(*limiter)
	if l == nil {
		l = f.def
	}
	if l == nil || !l.enabled.hit() {
		return filter.Continue
	}
	l.stats.inc(statEnabled)
	at := now()
	ok, b, remaining := l.allow(s, at)
	if l.xHeaders && b != nil {
		h := s.ResponseHeader()
		h[headerLimit] = []string{strconv.FormatInt(b.max, 10)}
		h[headerRemaining] = []string{strconv.FormatInt(remaining, 10)}
		h[headerReset] = []string{strconv.FormatInt(b.resetSeconds(at), 10)}
	}
	if ok {
		l.stats.inc(statOK)
		return filter.Continue
	}
	l.stats.inc(statRateLimited)
	if !l.enforced.hit() {
		applyHeaders(s.Request.Header, l.reqHeadersNotForced)
		return filter.Continue
	}
	l.stats.inc(statEnforced)
	h := s.ResponseHeader()
	h[headerLimited] = []string{"true"}
	applyHeaders(h, l.respHeaders)
	if l.retryHdr && l.status == http.StatusTooManyRequests && b != nil && h[headerRetryAfter] == nil {
		h[headerRetryAfter] = []string{strconv.FormatInt(max(b.resetSeconds(at), 1), 10)}
	}
	return s.SendLocalReply(filter.LocalReply{Status: l.status, GRPCStatus: l.grpcStatus, Body: body, Flag: flagRateLimited})
}

// allow takes the request's tokens at instant at. b is the bucket the
// x-ratelimit headers describe — the one that refused the request, else
// the first (most restrictive) matched descriptor's, else the default —
// with remaining its tokens left; nil when no bucket applied.
func (l *limiter) allow(s *filter.Stream, at int64) (ok bool, b *bucket, remaining int64) {
	var first *bucket
	var firstRemaining int64
	matched := false
	if len(l.descriptors) > 0 && len(l.actions) > 0 {
		var buf [4]*bucket
		matches := l.matchedBuckets(s, at, buf[:0])
		for _, mb := range matches {
			ok, rem := mb.take(at)
			if !ok {
				return false, mb, 0
			}
			if first == nil {
				first, firstRemaining = mb, rem
			}
		}
		matched = len(matches) > 0
	}
	if l.def != nil && (!matched || l.alwaysConsumeDef) {
		ok, rem := l.def.take(at)
		if !ok {
			return false, l.def, 0
		}
		if first == nil {
			return true, l.def, rem
		}
	}
	return true, first, firstRemaining
}

// matchedBuckets appends to out the buckets of the configured
// descriptors that the request's descriptors match, in the configured
// (most restrictive first) order, each once.
func (l *limiter) matchedBuckets(s *filter.Stream, at int64, out []*bucket) []*bucket {
	var reqs [][]entry
	for _, acts := range l.actions {
		if d, ok := rlaction.Descriptor(s, acts, nil); ok {
			reqs = append(reqs, d)
		}
	}
	for _, cd := range l.descriptors {
		for _, rd := range reqs {
			if !cd.matches(rd) {
				continue
			}
			if cd.static != nil {
				out = append(out, cd.static)
			} else {
				out = append(out, cd.dynamic.get(dynamicKey(cd, rd), at))
			}
			break
		}
	}
	return out
}

// matches is Envoy's verbatim match: the same keys in the same order,
// every value equal or a wildcard.
func (cd *descriptor) matches(rd []entry) bool {
	if len(rd) != len(cd.entries) {
		return false
	}
	for i, e := range cd.entries {
		if e.Key != rd[i].Key || e.Value != "" && e.Value != rd[i].Value {
			return false
		}
	}
	return true
}

// dynamicKey is the values of rd at cd's wildcard entries: what tells
// the dynamic buckets apart.
func dynamicKey(cd *descriptor, rd []entry) string {
	k := ""
	n := 0
	for i, e := range cd.entries {
		if e.Value == "" {
			if n > 0 {
				k += "\x00"
			}
			k += rd[i].Value
			n++
		}
	}
	return k
}
