package generate

import (
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

func resilienceCases() []goldenCase {
	return []goldenCase{{
		name: "resilience_timeout_retries_fault",
		mesh: func() *mesh.Snapshot {
			reg := registry.NewSnapshot(
				[]*registry.Service{reviewsService()},
				[]*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.2", "v2", 9080)},
			)
			cfg := &config.Snapshot{Version: 7, VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
				Hosts: []string{"reviews"},
				Http: []*networking.HTTPRoute{
					{
						Name:  "faulty",
						Match: []*networking.HTTPMatchRequest{{Uri: prefix("/fault")}},
						Fault: &networking.HTTPFaultInjection{
							Delay: &networking.HTTPFaultInjection_Delay{
								HttpDelayType: &networking.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(5e8)},
								Percentage:    &networking.Percent{Value: 10},
							},
							Abort: &networking.HTTPFaultInjection_Abort{
								ErrorType:  &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "UNAVAILABLE"},
								Percentage: &networking.Percent{Value: 0.5},
							},
						},
						Retries: &networking.HTTPRetry{Attempts: 0},
						Route:   []*networking.HTTPRouteDestination{dest("reviews", "", 0)},
					},
					{
						Name:    "resilient",
						Timeout: durationpb.New(3e9),
						Retries: &networking.HTTPRetry{
							Attempts: 3, PerTryTimeout: durationpb.New(1e9), RetryOn: "5xx,gateway-error,reset,409",
							RetryRemoteLocalities: wrapperspb.Bool(true), Backoff: durationpb.New(5e7),
						},
						Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)},
					},
				},
			})}}
			return mesh.New(cfg, reg, "")
		},
		proxy: productpage,
	}}
}

func TestRetryPolicy(t *testing.T) {
	def := retryPolicy(nil, false)
	tests := []struct {
		name string
		in   *networking.HTTPRetry
		hash bool
		want *route.RetryPolicy
	}{
		{"default", nil, false, def},
		{"attempts 0 disables", &networking.HTTPRetry{Attempts: 0}, false, nil},
		{"hash keeps the host", nil, true, func() *route.RetryPolicy {
			p := proto.Clone(def).(*route.RetryPolicy)
			p.RetryHostPredicate = nil
			return p
		}()},
		{"codes only add retriable-status-codes", &networking.HTTPRetry{Attempts: 4, RetryOn: "gateway-error, 429,409"}, false, func() *route.RetryPolicy {
			p := proto.Clone(def).(*route.RetryPolicy)
			p.NumRetries = wrapperspb.UInt32(4)
			p.RetryOn = "gateway-error,retriable-status-codes"
			p.RetriableStatusCodes = []uint32{429, 409}
			return p
		}()},
		{"ignore previous hosts off", &networking.HTTPRetry{Attempts: 1, RetryIgnorePreviousHosts: wrapperspb.Bool(false), PerTryTimeout: durationpb.New(2e9)}, false, func() *route.RetryPolicy {
			p := proto.Clone(def).(*route.RetryPolicy)
			p.NumRetries = wrapperspb.UInt32(1)
			p.RetryHostPredicate = nil
			p.PerTryTimeout = durationpb.New(2e9)
			return p
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryPolicy(tt.in, tt.hash); !proto.Equal(got, tt.want) {
				t.Errorf("retryPolicy = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHTTPFault(t *testing.T) {
	tests := []struct {
		name    string
		in      *networking.HTTPFaultInjection
		wantNil bool
		check   func(t *testing.T, f *route.Route)
	}{
		{"none", nil, true, nil},
		{"unknown grpc status drops the abort", &networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
			ErrorType: &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "NOPE"}}}, true, nil},
		{"abort http", &networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
			ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 418}, Percentage: &networking.Percent{Value: 12.5}}}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := httpFault(tt.in)
			if (f == nil) != tt.wantNil {
				t.Fatalf("httpFault = %v, want nil %v", f, tt.wantNil)
			}
			if f != nil && f.GetAbort() != nil {
				if got := f.GetAbort().GetPercentage().GetNumerator(); got != 125000 {
					t.Errorf("numerator = %d, want 125000 (millionths)", got)
				}
			}
		})
	}
}
