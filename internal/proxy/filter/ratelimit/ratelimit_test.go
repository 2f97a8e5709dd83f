package ratelimit

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// config packs a LocalRateLimit written in YAML, as Envoy's docs write it.
func config(t testing.TB, src string) *anypb.Any {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var m lrlv3.LocalRateLimit
	if err := protojson.Unmarshal(js, &m); err != nil {
		t.Fatalf("protojson: %v\n%s", err, js)
	}
	a, err := anypb.New(&m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

const enabled = `
filter_enabled: {default_value: {numerator: 100}}
filter_enforced: {default_value: {numerator: 100}}
`

// request runs one request from client through f with per-route config
// cfg (nil: the filter's own) and returns the stream and the status.
func request(f filter.Filter, cfg any, client string, hdr map[string]string) (*filter.Stream, filter.Status) {
	r := httptest.NewRequest("GET", "/", nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	s := filter.NewStream(r, http.Header{})
	s.PerRoute = cfg
	s.Connection = &filter.Connection{RemoteAddr: netip.MustParseAddrPort(client + ":40000")}
	return s, f.DecodeHeaders(s)
}

func TestBucket(t *testing.T) {
	const ms = int64(time.Millisecond)
	b := newBucket(bucketParams{max: 3, perToken: 100 * ms}, 0)
	for i, want := range []int64{2, 1, 0} {
		if ok, rem := b.take(0); !ok || rem != want {
			t.Fatalf("take %d: %v %d, want true %d", i, ok, rem, want)
		}
	}
	if ok, _ := b.take(0); ok {
		t.Fatal("took a 4th token from a bucket of 3")
	}
	if got := b.resetSeconds(50 * ms); got != 1 {
		t.Errorf("reset at 50ms = %d s, want 1 (rounded up)", got)
	}
	if ok, _ := b.take(99 * ms); ok {
		t.Error("a token appeared before perToken elapsed")
	}
	if ok, rem := b.take(100 * ms); !ok || rem != 0 {
		t.Errorf("after 100ms: %v %d, want one token", ok, rem)
	}
	// A long idle time fills the bucket to max, not beyond.
	n := 0
	for {
		if ok, _ := b.take(time.Hour.Nanoseconds()); !ok {
			break
		}
		n++
	}
	if n != 3 {
		t.Errorf("after an hour idle took %d tokens, want max 3", n)
	}
	if got := b.resetSeconds(10 * time.Hour.Nanoseconds()); got != 0 {
		t.Errorf("reset of a full bucket = %d, want 0", got)
	}
}

func TestDynamicBucketsBounded(t *testing.T) {
	d := newDynamicBuckets(bucketParams{max: 1, perToken: int64(time.Hour)}, 2)
	a := d.get("a", 0)
	a.take(0)
	d.get("b", 0)
	d.get("a", 0) // a is now the most recent
	d.get("c", 0) // evicts b
	if d.len() != 2 {
		t.Fatalf("len = %d, want the bound 2", d.len())
	}
	if d.get("a", 0) != a {
		t.Error("a was evicted though recently used")
	}
	if ok, _ := d.get("b", 0).take(0); !ok {
		t.Error("b, evicted and seen again, should start with a full bucket")
	}
}

func TestDefaultBucketHeadersAndStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats, err := NewStats(reg)
	if err != nil {
		t.Fatal(err)
	}
	fac := NewFactory(stats)
	f, err := fac.New(config(t, `stat_prefix: http_local_rate_limiter`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fac.ParsePerRoute(config(t, `
stat_prefix: http_local_rate_limiter
token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 3600s}
enable_x_ratelimit_headers: DRAFT_VERSION_03
response_headers_to_add: [{header: {key: x-local-rate-limit, value: "true"}}]
`+enabled))
	if err != nil {
		t.Fatal(err)
	}
	for i, rem := range []string{"1", "0"} {
		s, st := request(f, cfg, "127.0.0.1", nil)
		h := s.ResponseHeader()
		if st != filter.Continue || h.Get("x-ratelimit-limit") != "2" || h.Get("x-ratelimit-remaining") != rem || h.Get("x-ratelimit-reset") == "" {
			t.Fatalf("request %d: %v %v, want it through with limit 2 remaining %s", i, st, h, rem)
		}
	}
	s, st := request(f, cfg, "127.0.0.1", nil)
	a, reply := s.Answer()
	want := filter.LocalReply{Status: 429, GRPCStatus: "14", Body: "local_rate_limited", Flag: "RL"}
	if st != filter.Stop || a != filter.AnsweredLocalReply || reply != want {
		t.Fatalf("3rd request: %v %v %+v, want %+v", st, a, reply, want)
	}
	h := s.ResponseHeader()
	if h.Get("x-ratelimit-remaining") != "0" || h.Get("x-ratelimit-reset") == "0" || h.Get("x-envoy-ratelimited") != "true" || h.Get("x-local-rate-limit") != "true" {
		t.Errorf("429 headers: %v", h)
	}
	// A route without config of its own takes the filter's, which has no bucket.
	if _, st := request(f, nil, "127.0.0.1", nil); st != filter.Continue {
		t.Error("a route without a limit was limited")
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetType().String() != "COUNTER" || len(mf.GetMetric()) != 1 {
			t.Errorf("%s: type %v, %d series; want one counter", mf.GetName(), mf.GetType(), len(mf.GetMetric()))
			continue
		}
		got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	const p = "envoy_http_local_rate_limiter_http_local_rate_limit_"
	wantStats := map[string]float64{p + "enabled": 3, p + "ok": 2, p + "rate_limited": 1, p + "enforced": 1}
	if !maps.Equal(got, wantStats) {
		t.Errorf("stats %v, want %v", got, wantStats)
	}
}

func TestEnabledAndEnforcedFractions(t *testing.T) {
	fac := NewFactory(nil)
	f, _ := fac.New(nil)
	bucket := "stat_prefix: p\ntoken_bucket: {max_tokens: 1, fill_interval: 3600s}\n"
	// filter_enabled unset is 0%: the filter does nothing.
	off, err := fac.ParsePerRoute(config(t, bucket))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, st := request(f, off, "127.0.0.1", nil); st != filter.Continue {
			t.Fatal("a filter without filter_enabled limited a request")
		}
	}
	// Enabled, not enforced (shadow): counted and marked, let through.
	shadow, err := fac.ParsePerRoute(config(t, bucket+`
filter_enabled: {default_value: {numerator: 100}}
request_headers_to_add_when_not_enforced: [{header: {key: x-rate-limited, value: "yes"}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	request(f, shadow, "127.0.0.1", nil)
	s, st := request(f, shadow, "127.0.0.1", nil)
	if st != filter.Continue || s.Request.Header.Get("x-rate-limited") != "yes" {
		t.Errorf("shadow limit: %v, request header %q; want through, marked", st, s.Request.Header.Get("x-rate-limited"))
	}
}

func TestDescriptors(t *testing.T) {
	fac := NewFactory(nil)
	f, _ := fac.New(nil)
	cfg, err := fac.ParsePerRoute(config(t, `
stat_prefix: p
token_bucket: {max_tokens: 100, fill_interval: 3600s}
enable_x_ratelimit_headers: DRAFT_VERSION_03
max_dynamic_descriptors: 100
rate_limits:
- actions: [{remote_address: {}}]
- actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]
- actions: [{generic_key: {descriptor_value: all}}]
descriptors:
- entries: [{key: remote_address}]          # per client IP
  token_bucket: {max_tokens: 2, fill_interval: 3600s}
- entries: [{key: user, value: alice}]      # one user
  token_bucket: {max_tokens: 1, fill_interval: 3600s}
`+enabled))
	if err != nil {
		t.Fatal(err)
	}
	// Client .1 gets its 2; client .2 still gets its own.
	for i, want := range []filter.Status{filter.Continue, filter.Continue, filter.Stop} {
		if _, st := request(f, cfg, "127.0.0.1", nil); st != want {
			t.Fatalf("client 1 request %d: %v, want %v", i, st, want)
		}
	}
	s, st := request(f, cfg, "127.0.0.2", nil)
	if st != filter.Continue || s.ResponseHeader().Get("x-ratelimit-limit") != "2" {
		t.Fatalf("client 2: %v %v; want through, described by its own bucket of 2", st, s.ResponseHeader())
	}
	// alice matches both her own bucket (1, the most restrictive, first)
	// and her address's.
	if _, st := request(f, cfg, "127.0.0.3", map[string]string{"x-user": "alice"}); st != filter.Continue {
		t.Fatal("alice's first request limited")
	}
	s, st = request(f, cfg, "127.0.0.4", map[string]string{"x-user": "alice"})
	if st != filter.Stop || s.ResponseHeader().Get("x-ratelimit-limit") != "1" {
		t.Errorf("alice's second request: %v %v; want 429 described by her bucket of 1", st, s.ResponseHeader())
	}
	if _, st := request(f, cfg, "127.0.0.5", map[string]string{"x-user": "bob"}); st != filter.Continue {
		t.Error("bob was limited by alice's bucket")
	}
}

func TestSameConfigSameBuckets(t *testing.T) {
	fac := NewFactory(nil)
	src := "stat_prefix: p\ntoken_bucket: {max_tokens: 1, fill_interval: 3600s}\n" + enabled
	a, err := fac.ParsePerRoute(config(t, src))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fac.ParsePerRoute(config(t, src))
	c, _ := fac.ParsePerRoute(config(t, src+"enable_x_ratelimit_headers: DRAFT_VERSION_03\n"))
	if a != b {
		t.Error("the same config compiled twice got new buckets (an xDS push would refill them)")
	}
	if a == c {
		t.Error("different configs share buckets")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`token_bucket: {max_tokens: 1, fill_interval: 1s}`, "stat_prefix: required"},
		{`{stat_prefix: p, token_bucket: {max_tokens: 1, fill_interval: 0.01s}}`, "token_bucket.fill_interval: 10ms is shorter than 50ms"},
		{`{stat_prefix: p, token_bucket: {max_tokens: 0, fill_interval: 1s}}`, "token_bucket.max_tokens: must be at least 1"},
		{`{stat_prefix: p, token_bucket: {max_tokens: 1, tokens_per_fill: 0, fill_interval: 1s}}`, "token_bucket.tokens_per_fill: must be at least 1"},
		{`{stat_prefix: p, descriptors: [{entries: [{key: a}], token_bucket: {max_tokens: 1, fill_interval: 1s}}]}`,
			"descriptors: need rate_limits in this config (the route's rate_limits are not read)"},
		{`{stat_prefix: p, rate_limits: [{actions: [{source_cluster: {}}]}]}`,
			"rate_limits[0].actions[0]: *routev3.RateLimit_Action_SourceCluster_ unsupported (request_headers, remote_address, generic_key and header_value_match are)"},
		{`{stat_prefix: p, status: {code: OK}}`, "status.code: 200 is not an HTTP error status"},
		{`{stat_prefix: p, token_bucket: {max_tokens: 4000000000, fill_interval: 3600s}}`,
			"token_bucket.max_tokens: 4000000000 tokens at one per 1h0m0s take longer than 100 years to fill"},
	} {
		_, err := NewFactory(nil).ParsePerRoute(config(t, tc.src))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

func BenchmarkDefaultBucket(b *testing.B) {
	fac := NewFactory(nil)
	f, _ := fac.New(nil)
	cfg, err := fac.ParsePerRoute(config(b, "stat_prefix: p\ntoken_bucket: {max_tokens: 1000000000, fill_interval: 1s}\n"+enabled))
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	conn := &filter.Connection{RemoteAddr: netip.MustParseAddrPort("127.0.0.1:1")}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := filter.NewStream(r, http.Header{})
			s.PerRoute, s.Connection = cfg, conn
			f.DecodeHeaders(s)
		}
	})
}
