package extauthz

import (
	"cmp"
	"context"
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthznetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/grpccall"
	"weft.dev/weft/internal/proxy/xdswire"
)

// NetworkFilterName is Envoy's network ext_authz filter: Istio puts it,
// after a network RBAC filter in shadow mode, on the TCP chains of a
// workload with CUSTOM policies of a gRPC provider.
const NetworkFilterName = "envoy.filters.network.ext_authz"

// ConnChecker is one network ext_authz filter of a filter chain: a
// connection is decided once, when it has been accepted (after its TLS
// handshake), by a gRPC Check whose AttributeContext has the connection's
// source (address, principal) and destination and no request. Envoy asks
// on the connection's first byte; the answer is the same, but here a
// refused client never reaches the application. Immutable.
type ConnChecker struct {
	c *checker
}

// NewNetwork builds a network ext_authz filter from its typed_config, an
// envoy.extensions.filters.network.ext_authz.v3.ExtAuthz. Errors name the
// field.
func (f Factory) NewNetwork(config *anypb.Any) (*ConnChecker, error) {
	if config == nil {
		return nil, fmt.Errorf("typed_config: want envoy.extensions.filters.network.ext_authz.v3.ExtAuthz")
	}
	var in extauthznetv3.ExtAuthz
	if err := xdswire.UnmarshalAny(config, &in); err != nil {
		return nil, fmt.Errorf("want envoy.extensions.filters.network.ext_authz.v3.ExtAuthz: %w", err)
	}
	if in.GetTransportApiVersion() != core.ApiVersion_V3 {
		return nil, fmt.Errorf("transport_api_version: must be V3")
	}
	if in.GetShadowMode() {
		return nil, fmt.Errorf("shadow_mode: unsupported")
	}
	eg := in.GetGrpcService().GetEnvoyGrpc()
	if eg.GetClusterName() == "" {
		return nil, fmt.Errorf("grpc_service.envoy_grpc.cluster_name: required (google_grpc is unsupported)")
	}
	c := &checker{
		grpc: true, cluster: eg.GetClusterName(), authority: cmp.Or(eg.GetAuthority(), clusterHost(eg.GetClusterName())),
		timeout: defaultTimeout, failOpen: in.GetFailureModeAllow(), stats: f.Stats,
	}
	if t := in.GetGrpcService().GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("grpc_service.timeout: %w", err)
		}
		c.timeout = t.AsDuration()
	}
	if m := in.GetFilterEnabledMetadata(); m != nil {
		var err error
		if c.enabled, err = compileMetadataMatcher(m); err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
	}
	return &ConnChecker{c: c}, nil
}

// Allows decides a connection whose dynamic metadata (what the chain's
// network RBAC filters wrote, by filter name) is md, calling the service
// through up within ctx. Not enabled for it (filter_enabled_metadata): allowed
// without a call. A service that cannot answer: allowed only with
// failure_mode_allow.
func (cc *ConnChecker) Allows(ctx context.Context, conn *filter.Connection, md map[string]any, up filter.Upstream) bool {
	c := cc.c
	if c.enabled != nil && !c.enabled.matchesMetadata(md) {
		return true
	}
	allowed, err := c.checkConn(ctx, conn, up)
	switch {
	case err != nil:
		c.stats.inc(resultError)
		if c.failOpen {
			c.stats.inc(resultFailureModeAllowed)
			return true
		}
		return false
	case allowed:
		c.stats.inc(resultOK)
		return true
	}
	c.stats.inc(resultDenied)
	return false
}

// checkConn makes the gRPC Check of a connection.
func (c *checker) checkConn(ctx context.Context, conn *filter.Connection, up filter.Upstream) (bool, error) {
	ac := &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(conn.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(conn.LocalAddr)},
		Request:     &authv3.AttributeContext_Request{Time: timestamppb.Now()},
	}
	if p := conn.Peer; p != nil {
		ac.Source.Principal = p.Principal
	}
	var out authv3.CheckResponse
	if err := grpccall.Call(ctx, up, c.cluster, c.authority, checkMethod, c.timeout, &authv3.CheckRequest{Attributes: ac}, &out); err != nil {
		return false, err
	}
	return out.GetStatus().GetCode() == 0, nil
}
