package testenv

import (
	"context"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRateLimitService: the real rate limit service, backed by the real
// Redis, answers ShouldRateLimit from its configuration: two requests a
// day for user alice (a day: the window does not roll over during the
// test), then OVER_LIMIT; the count survives a restart of the service
// (it lives in Redis).
func TestRateLimitService(t *testing.T) {
	r := RateLimit(t, `domain: test
descriptors:
- key: user
  rate_limit: {unit: day, requests_per_unit: 2}
`)
	ask := func() rls.RateLimitResponse_Code {
		t.Helper()
		conn, err := grpc.NewClient(r.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := rls.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, &rls.RateLimitRequest{Domain: "test", HitsAddend: 1,
			Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: "alice"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetOverallCode()
	}
	for i, want := range []rls.RateLimitResponse_Code{rls.RateLimitResponse_OK, rls.RateLimitResponse_OK} {
		if got := ask(); got != want {
			t.Fatalf("call %d: %v, want %v", i, got, want)
		}
	}
	r.Stop()
	r.Start()
	if got := ask(); got != rls.RateLimitResponse_OVER_LIMIT {
		t.Errorf("third call after a restart: %v, want OVER_LIMIT", got)
	}
}
