package generate

import (
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

func pool(maxConn, pending int32) *networking.ConnectionPoolSettings {
	return &networking.ConnectionPoolSettings{
		Tcp:  &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: maxConn},
		Http: &networking.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: pending},
	}
}

// useClientProtocol sets http.useClientProtocol on cp and returns it.
func useClientProtocol(cp *networking.ConnectionPoolSettings) *networking.ConnectionPoolSettings {
	cp.Http.UseClientProtocol = true
	return cp
}

// trafficPolicyCases exercises connectionPool and outlierDetection at the
// top level, per port and per subset (Istio's MergeTrafficPolicy).
func trafficPolicyCases() []goldenCase {
	return []goldenCase{{
		name: "traffic_policy_pool_outlier",
		mesh: func() *mesh.Snapshot {
			reg := registry.NewSnapshot(
				[]*registry.Service{reviewsService(
					registry.Port{Name: "http", Number: 9080, Protocol: registry.HTTP},
					registry.Port{Name: "http-admin", Number: 9081, Protocol: registry.HTTP},
				)},
				[]*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.2", "v2", 9080)},
			)
			spec := &networking.DestinationRule{
				Host: "reviews",
				TrafficPolicy: &networking.TrafficPolicy{
					ConnectionPool: &networking.ConnectionPoolSettings{
						Tcp: &networking.ConnectionPoolSettings_TCPSettings{
							MaxConnections: 100, ConnectTimeout: durationpb.New(2_000_000_000),
							TcpKeepalive: &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{
								Probes: 3, Time: durationpb.New(7_200_000_000_000), Interval: durationpb.New(75_000_000_000),
							},
						},
						Http: &networking.ConnectionPoolSettings_HTTPSettings{
							Http1MaxPendingRequests: 10, Http2MaxRequests: 200, MaxRequestsPerConnection: 50,
							MaxRetries: 4, IdleTimeout: durationpb.New(30_000_000_000),
						},
					},
					OutlierDetection: &networking.OutlierDetection{
						Consecutive_5XxErrors:    wrapperspb.UInt32(5),
						ConsecutiveGatewayErrors: wrapperspb.UInt32(3),
						Interval:                 durationpb.New(1_000_000_000),
						BaseEjectionTime:         durationpb.New(30_000_000_000),
						MaxEjectionPercent:       50,
						MinHealthPercent:         25,
					},
					PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
						Port:           &networking.PortSelector{Number: 9081},
						ConnectionPool: useClientProtocol(pool(1, 1)),
					}},
				},
				Subsets: []*networking.Subset{
					{Name: "v1", Labels: map[string]string{"version": "v1"}},
					{Name: "v2", Labels: map[string]string{"version": "v2"}, TrafficPolicy: &networking.TrafficPolicy{
						ConnectionPool: &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{
							H2UpgradePolicy: networking.ConnectionPoolSettings_HTTPSettings_UPGRADE,
							Http2KeepAlive: &networking.ConnectionPoolSettings_HTTPSettings_ConnectionKeepalive{
								Interval: durationpb.New(15_000_000_000), Timeout: durationpb.New(5_000_000_000),
							},
						}},
						OutlierDetection: &networking.OutlierDetection{
							SplitExternalLocalOriginErrors: true,
							ConsecutiveLocalOriginFailures: wrapperspb.UInt32(2),
							Consecutive_5XxErrors:          wrapperspb.UInt32(0),
						},
					}},
				},
			}
			return mesh.New(&config.Snapshot{Version: 7, DestinationRules: []*config.DestinationRule{dr("reviews", spec)}}, reg, "")
		},
		proxy: productpage,
	}}
}

func TestMergeTrafficPolicy(t *testing.T) {
	top := &networking.TrafficPolicy{
		ConnectionPool:   pool(10, 10),
		OutlierDetection: &networking.OutlierDetection{MaxEjectionPercent: 10},
		PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
			Port: &networking.PortSelector{Number: 81}, ConnectionPool: pool(2, 2),
		}},
	}
	subset := &networking.TrafficPolicy{
		ConnectionPool: pool(5, 5),
		PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
			Port: &networking.PortSelector{Number: 82}, ConnectionPool: pool(3, 3),
		}},
	}
	tests := []struct {
		name        string
		base, over  *networking.TrafficPolicy
		port        uint32
		wantMaxConn int32 // 0: no connection pool
		wantOutlier bool
	}{
		{"top level", nil, top, 80, 10, true},
		{"top port override drops other components", nil, top, 81, 2, false},
		{"subset overrides pool, inherits outlier", mergeTrafficPolicy(nil, top, 80), subset, 80, 5, true},
		{"subset over port-merged top", mergeTrafficPolicy(nil, top, 81), subset, 81, 5, false},
		{"subset port override", mergeTrafficPolicy(nil, top, 82), subset, 82, 3, false},
		{"no subset policy", mergeTrafficPolicy(nil, top, 80), nil, 80, 10, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeTrafficPolicy(tc.base, tc.over, tc.port)
			if n := got.GetConnectionPool().GetTcp().GetMaxConnections(); n != tc.wantMaxConn {
				t.Errorf("maxConnections = %d, want %d", n, tc.wantMaxConn)
			}
			if (got.GetOutlierDetection() != nil) != tc.wantOutlier {
				t.Errorf("outlierDetection = %v, want present=%v", got.GetOutlierDetection(), tc.wantOutlier)
			}
		})
	}
}
