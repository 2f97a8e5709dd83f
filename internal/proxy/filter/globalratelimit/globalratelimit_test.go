package globalratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/filter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pack reads a message written in YAML, as Envoy's docs write it.
func pack(t testing.TB, m proto.Message, src string) *anypb.Any {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("protojson: %v\n%s", err, js)
	}
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// rlsServer is a real gRPC server of envoy.service.ratelimit.v3 on
// loopback: each distinct descriptor set gets limit requests, then
// OVER_LIMIT; block makes it wait until the call's context ends.
type rlsServer struct {
	rls.UnimplementedRateLimitServiceServer
	limit uint32
	block bool

	mu    sync.Mutex
	count map[string]uint32
	seen  []*rls.RateLimitRequest
}

func (s *rlsServer) ShouldRateLimit(ctx context.Context, in *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	if s.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, in)
	key, _ := protojson.Marshal(in)
	s.count[string(key)]++
	n := s.count[string(key)]
	out := &rls.RateLimitResponse{OverallCode: rls.RateLimitResponse_OK}
	st := &rls.RateLimitResponse_DescriptorStatus{Code: rls.RateLimitResponse_OK,
		CurrentLimit:       &rls.RateLimitResponse_RateLimit{RequestsPerUnit: s.limit, Unit: rls.RateLimitResponse_RateLimit_MINUTE},
		LimitRemaining:     s.limit - min(n, s.limit),
		DurationUntilReset: durationpb.New(42 * time.Second)}
	if n > s.limit {
		out.OverallCode, st.Code = rls.RateLimitResponse_OVER_LIMIT, rls.RateLimitResponse_OVER_LIMIT
	}
	out.Statuses = []*rls.RateLimitResponse_DescriptorStatus{st}
	return out, nil
}

func (s *rlsServer) requests() []*rls.RateLimitRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rls.RateLimitRequest(nil), s.seen...)
}

// startRLS serves s on a loopback port and returns its address.
func startRLS(t testing.TB, s *rlsServer) string {
	t.Helper()
	s.count = map[string]uint32{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	rls.RegisterRateLimitServiceServer(g, s)
	done := make(chan struct{})
	go func() { defer close(done); g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return lis.Addr().String()
}

// h2cUpstream is a filter.Upstream with one cluster, "rls", of one
// endpoint, reached over h2c as the proxy reaches an HTTP/2 cluster.
type h2cUpstream struct {
	addr string
	tr   *http.Transport
}

func newUpstream(t testing.TB, addr string) *h2cUpstream {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	u := &h2cUpstream{addr: addr, tr: &http.Transport{Protocols: p}}
	t.Cleanup(u.tr.CloseIdleConnections)
	return u
}

func (u *h2cUpstream) RoundTrip(ctx context.Context, cluster string, req *http.Request) (*http.Response, error) {
	if cluster != "outbound|8081||rls.infra.svc.cluster.local" {
		return nil, &net.AddrError{Err: "no such cluster", Addr: cluster}
	}
	req.URL.Host = u.addr
	return u.tr.RoundTrip(req.WithContext(ctx))
}

const filterYAML = `
domain: shop
timeout: 5s
enable_x_ratelimit_headers: DRAFT_VERSION_03
rate_limit_service:
  transport_api_version: V3
  grpc_service: {envoy_grpc: {cluster_name: "outbound|8081||rls.infra.svc.cluster.local"}}
rate_limits:
- actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]
`

func newFilter(t *testing.T, stats *Stats, src string) filter.Filter {
	t.Helper()
	f, err := Factory{Stats: stats}.New(pack(t, &grl.RateLimit{}, src))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// run sends one request through f with per-route config cfg and
// headers hdr, to the route target cluster "outbound|80||web".
func run(f filter.Filter, up filter.Upstream, cfg any, hdr map[string]string) *filter.Stream {
	r := httptest.NewRequest("GET", "/", nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	s := filter.NewStream(r, http.Header{})
	s.PerRoute, s.Upstream, s.Cluster = cfg, up, "outbound|80||web"
	s.Connection = &filter.Connection{RemoteAddr: netip.MustParseAddrPort("10.1.2.3:40000")}
	f.DecodeHeaders(s) // s.Answer tells what it did
	return s
}

func stat(t *testing.T, s *Stats, i int) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.vecs[i].WithLabelValues("outbound|80||web").Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestOverLimit: the request's descriptor goes to a real gRPC rate limit
// service with the domain; under the limit the request continues with
// the x-ratelimit headers, over it the answer is 429 RL with
// x-envoy-ratelimited; a request without the header asks nothing.
func TestOverLimit(t *testing.T) {
	srv := &rlsServer{limit: 2}
	up := newUpstream(t, startRLS(t, srv))
	stats, err := NewStats(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(t, stats, filterYAML)
	for i := range 2 {
		s := run(f, up, nil, map[string]string{"x-user": "alice"})
		if a, _ := s.Answer(); a != filter.NoAnswer {
			t.Fatalf("request %d answered %v, want it to continue", i, a)
		}
		h := s.ResponseHeader()
		if h.Get(headerLimit) != "2, 2;w=60" || h.Get(headerRemaining) != []string{"1", "0"}[i] || h.Get(headerReset) != "42" {
			t.Errorf("request %d x-ratelimit headers %v", i, h)
		}
	}
	s := run(f, up, nil, map[string]string{"x-user": "alice"})
	a, reply := s.Answer()
	if a != filter.AnsweredLocalReply || reply.Status != 429 || reply.Flag != "RL" || reply.GRPCStatus != "14" || s.ResponseHeader().Get(headerLimited) != "true" {
		t.Errorf("third request: %v %+v %v, want 429 RL with x-envoy-ratelimited", a, reply, s.ResponseHeader())
	}
	if s := run(f, up, nil, map[string]string{"x-user": "bob"}); s.ResponseHeader().Get(headerLimited) != "" {
		t.Errorf("bob was limited: %v", s.ResponseHeader())
	}
	run(f, up, nil, nil) // no x-user: no descriptor, no call
	got := srv.requests()
	if len(got) != 4 {
		t.Fatalf("the service saw %d calls, want 4", len(got))
	}
	want := &rls.RateLimitRequest{Domain: "shop", HitsAddend: 1, Descriptors: []*rlcommon.RateLimitDescriptor{{
		Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: "alice"}}}}}
	if !proto.Equal(got[0], want) {
		t.Errorf("call = %v, want %v", got[0], want)
	}
	if ok, over := stat(t, stats, statOK), stat(t, stats, statOverLimit); ok != 3 || over != 1 {
		t.Errorf("ok %v over_limit %v, want 3 and 1", ok, over)
	}
}

// TestPerRoute: a route's rate_limits replace the filter's and its
// domain the filter's; every action kind yields its entry as Envoy's;
// a route whose header_value_match does not come out sends nothing.
func TestPerRoute(t *testing.T) {
	srv := &rlsServer{limit: 100}
	up := newUpstream(t, startRLS(t, srv))
	f := newFilter(t, nil, filterYAML)
	cfg, err := Factory{}.ParsePerRoute(pack(t, &grl.RateLimitPerRoute{}, `
domain: search
rate_limits:
- actions:
  - generic_key: {descriptor_value: search}
  - remote_address: {}
  - request_headers: {header_name: x-missing, descriptor_key: m, skip_if_absent: true}
- actions:
  - header_value_match:
      descriptor_value: anonymous
      expect_match: false
      headers: [{name: authorization, present_match: true}]
`))
	if err != nil {
		t.Fatal(err)
	}
	run(f, up, cfg, nil)
	run(f, up, cfg, map[string]string{"authorization": "Bearer x"})
	got := srv.requests()
	if len(got) != 2 {
		t.Fatalf("%d calls, want 2", len(got))
	}
	want := []string{
		`{"domain":"search","descriptors":[{"entries":[{"key":"generic_key","value":"search"},{"key":"remote_address","value":"10.1.2.3"}]},{"entries":[{"key":"header_match","value":"anonymous"}]}],"hitsAddend":1}`,
		`{"domain":"search","descriptors":[{"entries":[{"key":"generic_key","value":"search"},{"key":"remote_address","value":"10.1.2.3"}]}],"hitsAddend":1}`,
	}
	for i, w := range want {
		js, _ := protojson.Marshal(got[i])
		var b bytes.Buffer
		if err := json.Compact(&b, js); err != nil {
			t.Fatal(err)
		}
		if b.String() != w {
			t.Errorf("call %d:\n got %s\nwant %s", i, b.String(), w)
		}
	}
}

// TestFailureMode: a service that cannot be reached (a closed port) or
// does not answer within the timeout lets the request through, counted
// error and failure_mode_allowed; with failure_mode_deny the request is
// refused 500 RLSE.
func TestFailureMode(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	slow := startRLS(t, &rlsServer{block: true})
	for _, c := range []struct {
		name, addr, extra string
		want              int // 0: continues
	}{
		{"down, fail open", closed, "", 0},
		{"down, deny", closed, "failure_mode_deny: true\n", 500},
		{"slow, fail open", slow, "", 0},
		{"slow, deny with status_on_error", slow, "failure_mode_deny: true\nstatus_on_error: {code: 503}\n", 503},
	} {
		t.Run(c.name, func(t *testing.T) {
			stats, err := NewStats(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			f := newFilter(t, stats, strings.Replace(filterYAML, "timeout: 5s", "timeout: 0.1s", 1)+c.extra)
			s := run(f, newUpstream(t, c.addr), nil, map[string]string{"x-user": "alice"})
			a, reply := s.Answer()
			switch {
			case c.want == 0 && a != filter.NoAnswer:
				t.Errorf("answered %+v, want the request to continue", reply)
			case c.want != 0 && (a != filter.AnsweredLocalReply || reply.Status != c.want || reply.Flag != "RLSE"):
				t.Errorf("answer %v %+v, want %d RLSE", a, reply, c.want)
			}
			allowed := 0.0
			if c.want == 0 {
				allowed = 1
			}
			if e, fa := stat(t, stats, statError), stat(t, stats, statFailureModeAllowed); e != 1 || fa != allowed {
				t.Errorf("error %v failure_mode_allowed %v, want 1 and %v", e, fa, allowed)
			}
		})
	}
}

// TestConfigErrors: what the filter cannot honour is refused, naming the
// field.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"rate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: c}}}", "domain: required"},
		{"domain: d\nrate_limit_service: {grpc_service: {envoy_grpc: {cluster_name: c}}}", "rate_limit_service.transport_api_version: must be V3"},
		{"domain: d\nrate_limit_service: {transport_api_version: V3, grpc_service: {google_grpc: {target_uri: x, stat_prefix: s}}}", "rate_limit_service.grpc_service.envoy_grpc.cluster_name: required (google_grpc is unsupported)"},
		{"domain: d\nstage: 1\nrate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: c}}}", "stage: unsupported (only stage 0)"},
		{"domain: d\nrate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: c}}}\nrate_limits: [{actions: [{generic_key: {}}]}]", "rate_limits[0].actions[0].generic_key.descriptor_value: required"},
		{"domain: d\nrate_limit_service: {transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: c}}}\nrate_limits: [{actions: [{destination_cluster: {}}]}]", "rate_limits[0].actions[0]: *routev3.RateLimit_Action_DestinationCluster_ unsupported (request_headers, remote_address, generic_key and header_value_match are)"},
	} {
		_, err := Factory{}.New(pack(t, &grl.RateLimit{}, c.src))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s:\n got %v\nwant %s", c.src, err, c.want)
		}
	}
}

// TestNotEnforced: with filter_enforced 0% (a shadow RateLimit) the
// service's OVER_LIMIT is counted and the request continues.
func TestNotEnforced(t *testing.T) {
	up := newUpstream(t, startRLS(t, &rlsServer{limit: 0}))
	stats, err := NewStats(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(t, stats, filterYAML+"filter_enforced: {default_value: {numerator: 0}}\n")
	s := run(f, up, nil, map[string]string{"x-user": "alice"})
	if a, reply := s.Answer(); a != filter.NoAnswer || s.ResponseHeader().Get(headerLimited) != "" {
		t.Errorf("answered %v %+v %v, want the request to continue unmarked", a, reply, s.ResponseHeader())
	}
	if over := stat(t, stats, statOverLimit); over != 1 {
		t.Errorf("over_limit %v, want 1", over)
	}
}

// BenchmarkDecodeHeaders: one request through the filter, a
// ShouldRateLimit call to a real gRPC service on loopback over one h2c
// connection (what a request pays for a global limit, against the
// local filter's lock-free bucket).
func BenchmarkDecodeHeaders(b *testing.B) {
	srv := &rlsServer{limit: ^uint32(0)}
	up := newUpstream(b, startRLS(b, srv))
	f, err := Factory{}.New(pack(b, &grl.RateLimit{}, filterYAML))
	if err != nil {
		b.Fatal(err)
	}
	hdr := map[string]string{"x-user": "alice"}
	b.ReportAllocs()
	for b.Loop() {
		if s := run(f, up, nil, hdr); s.ResponseHeader().Get(headerRemaining) == "" {
			b.Fatal("no answer from the service")
		}
	}
}
