package proxyview

import (
	"encoding/json"
	"errors"
	"fmt"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	// The typed configs the tables look into.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// Dump is a proxy's /config_dump: the applied xDS resources, each as
// decoded and as the raw JSON the proxy sent (for -o json).
type Dump struct {
	Listeners []Item[*listener.Listener]
	Routes    []Item[*route.RouteConfiguration]
	Clusters  []Item[*cluster.Cluster]
	Endpoints []Item[*endpoint.ClusterLoadAssignment]
	// Versions are the xDS versions the proxy applied, by type URL.
	Versions map[string]string
}

// Item is one resource of a dump.
type Item[M proto.Message] struct {
	Msg M
	Raw json.RawMessage
}

// rawDump is the JSON shape of weft-proxy's /config_dump
// (internal/proxy/dataplane/dump.go).
type rawDump struct {
	Listeners []json.RawMessage `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	Clusters  []json.RawMessage `json:"clusters"`
	Endpoints []json.RawMessage `json:"endpoints"`
	Versions  map[string]string `json:"versions"`
}

// ParseDump decodes a /config_dump body. Typed configs of a type this
// binary does not know are kept opaque instead of failing the dump: the
// tables only look into the few they know.
func ParseDump(b []byte) (*Dump, error) {
	var raw rawDump
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config dump is not the expected JSON: %w", err)
	}
	d := &Dump{Versions: raw.Versions}
	var err error
	if d.Listeners, err = decodeAll(raw.Listeners, "listeners", func() *listener.Listener { return &listener.Listener{} }); err != nil {
		return nil, err
	}
	if d.Routes, err = decodeAll(raw.Routes, "routes", func() *route.RouteConfiguration { return &route.RouteConfiguration{} }); err != nil {
		return nil, err
	}
	if d.Clusters, err = decodeAll(raw.Clusters, "clusters", func() *cluster.Cluster { return &cluster.Cluster{} }); err != nil {
		return nil, err
	}
	if d.Endpoints, err = decodeAll(raw.Endpoints, "endpoints", func() *endpoint.ClusterLoadAssignment { return &endpoint.ClusterLoadAssignment{} }); err != nil {
		return nil, err
	}
	return d, nil
}

var lenient = protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: lenientResolver{}}

func decodeAll[M proto.Message](raw []json.RawMessage, section string, mk func() M) ([]Item[M], error) {
	out := make([]Item[M], 0, len(raw))
	for i, r := range raw {
		m := mk()
		if err := lenient.Unmarshal(r, m); err != nil {
			return nil, fmt.Errorf("config dump: %s[%d]: %w", section, i, err)
		}
		out = append(out, Item[M]{Msg: m, Raw: r})
	}
	return out, nil
}

// lenientResolver resolves types from the global registry and decodes an
// Any of an unknown type as an empty message, whose fields are then
// discarded.
type lenientResolver struct{}

func (lenientResolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(n)
}

func (lenientResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return (&emptypb.Empty{}).ProtoReflect().Type(), nil
	}
	return mt, err
}

func (lenientResolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(n)
}

func (lenientResolver) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(m, n)
}
