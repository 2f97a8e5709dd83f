package xdsclient

import (
	"google.golang.org/protobuf/proto"
	"slices"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func routeTo(name string, clusters ...string) *route.RouteConfiguration {
	a := &route.RouteAction{}
	if len(clusters) == 1 {
		a.ClusterSpecifier = &route.RouteAction_Cluster{Cluster: clusters[0]}
	} else {
		wc := &route.WeightedCluster{}
		for _, c := range clusters {
			wc.Clusters = append(wc.Clusters, &route.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(1)})
		}
		a.ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	return &route.RouteConfiguration{Name: name, VirtualHosts: []*route.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*route.Route{{Action: &route.Route_Route{Route: a}}},
	}}}
}

func inlineRouteListener(t *testing.T, name string, rc *route.RouteConfiguration) *listener.Listener {
	tc, err := anypb.New(&hcm.HttpConnectionManager{RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: rc}})
	if err != nil {
		t.Fatal(err)
	}
	return &listener.Listener{Name: name, FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
		Name: hcmName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: tc}}}}}}
}

func setOf(routes []*route.RouteConfiguration, listeners []*listener.Listener, clusters ...string) *resourceSet {
	s := newResourceSet()
	must := func(m proto.Message) *held {
		h, err := hold(m)
		if err != nil {
			panic(err)
		}
		return h
	}
	for _, r := range routes {
		s.routes[r.GetName()] = must(r)
	}
	for _, l := range listeners {
		s.listeners[l.GetName()] = must(l)
	}
	for _, c := range clusters {
		s.clusters[c] = must(&cluster.Cluster{Name: c})
	}
	return s
}

func TestDangling(t *testing.T) {
	prev := setOf(nil, nil, "v1", "v2", "inbound|8080||")
	tests := []struct {
		name string
		set  *resourceSet
		want []string
	}{
		{"consistent", setOf([]*route.RouteConfiguration{routeTo("http_proxy", "v1", "v2")}, nil, "v1", "v2"), nil},
		{"cluster dropped before the route", setOf([]*route.RouteConfiguration{routeTo("http_proxy", "v1", "v2")}, nil, "v1"), []string{"v2"}},
		{"route to a cluster that never existed", setOf([]*route.RouteConfiguration{routeTo("http_proxy", "nosuch")}, nil, "v1"), nil},
		{"inline route of an inbound listener", setOf(nil, []*listener.Listener{inlineRouteListener(t, "in", routeTo("inbound|8080||", "inbound|8080||"))}), []string{"inbound|8080||"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.dangling(prev); !slices.Equal(got, tt.want) {
				t.Errorf("dangling = %v, want %v", got, tt.want)
			}
		})
	}
}
