package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/proxy/dataplane"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// This file is the other half of the control plane's validation: it takes
// config the control plane would reject, builds the xDS a control plane
// without that check would send (decoding the documents with no
// validation at all), and asks the proxy whether it would take it, exactly
// as weft-proxy decides: protoc-gen-validate on every resource (the
// xdsclient's check), then the data plane's translation (Apply).

// unvalidatedSnapshot decodes multi-document YAML into a config.Snapshot
// without any validation: what a control plane that checked nothing would
// serve.
func unvalidatedSnapshot(t *testing.T, docs string) *config.Snapshot {
	t.Helper()
	snap := &config.Snapshot{}
	for i, raw := range bytes.Split([]byte(docs), []byte("\n---\n")) {
		js, err := yamlToJSON(raw)
		if err != nil {
			t.Fatalf("doc %d: %v", i+1, err)
		}
		var top struct {
			Kind     config.Kind `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(js, &top); err != nil {
			t.Fatalf("doc %d: %v", i+1, err)
		}
		if top.Kind == "" {
			continue
		}
		meta := config.Meta{Kind: top.Kind, Namespace: top.Metadata.Namespace, Name: top.Metadata.Name, File: "t.yaml", Doc: i + 1}
		if meta.Namespace == "" {
			meta.Namespace = "default"
		}
		if len(top.Spec) == 0 {
			top.Spec = []byte("{}")
		}
		var spec proto.Message
		switch top.Kind {
		case config.KindVirtualService:
			s := &networking.VirtualService{}
			snap.VirtualServices = append(snap.VirtualServices, &config.VirtualService{Meta: meta, Spec: s})
			spec = s
		case config.KindDestinationRule:
			s := &networking.DestinationRule{}
			snap.DestinationRules = append(snap.DestinationRules, &config.DestinationRule{Meta: meta, Spec: s})
			spec = s
		case config.KindServiceEntry:
			s := &networking.ServiceEntry{}
			snap.ServiceEntries = append(snap.ServiceEntries, &config.ServiceEntry{Meta: meta, Spec: s})
			spec = s
		case config.KindWorkloadEntry:
			s := &networking.WorkloadEntry{}
			snap.WorkloadEntries = append(snap.WorkloadEntries, &config.WorkloadEntry{Meta: meta, Spec: s})
			spec = s
		default:
			t.Fatalf("doc %d: kind %q", i+1, top.Kind)
		}
		if err := protojson.Unmarshal(top.Spec, spec); err != nil {
			t.Fatalf("doc %d: %s spec: %v", i+1, top.Kind, err)
		}
	}
	return snap
}

// client is the proxy the resources are generated for: a sidecar in
// namespace default whose outbound listener binds an ephemeral loopback
// port, on an address no endpoint uses (so no inbound listener is bound).
var client = contract.Identity{
	ID:              contract.DefaultNodeID("10.255.0.1", "client", "default"),
	Namespace:       "default",
	WorkloadName:    "client",
	Labels:          map[string]string{"app": "client", "version": "v1"},
	IPs:             []string{"10.255.0.1"},
	OutboundAddress: "127.0.0.1:0",
}

// generated is the xDS the control plane would send client for snap.
func generated(snap *config.Snapshot) generate.Resources {
	reg := static.Build(snap, "")
	return generate.ForProxy(mesh.New(snap, reg, ""), client)
}

// proxyVerdict returns nil when weft-proxy would apply res, else the
// reason it would NACK them.
func proxyVerdict(t *testing.T, res generate.Resources) error {
	t.Helper()
	in := &xdsclient.Resources{
		Listeners: map[string]*listener.Listener{},
		Routes:    map[string]*route.RouteConfiguration{},
		Clusters:  map[string]*cluster.Cluster{},
		Endpoints: map[string]*endpoint.ClusterLoadAssignment{},
	}
	for _, set := range [][]types.Resource{res.Listeners, res.Routes, res.Clusters, res.Endpoints} {
		for _, r := range set {
			// The xdsclient's first check: protoc-gen-validate.
			if v, ok := r.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					return fmt.Errorf("protoc-gen-validate: %w", err)
				}
			}
			switch m := r.(type) {
			case *listener.Listener:
				in.Listeners[m.GetName()] = m
			case *route.RouteConfiguration:
				in.Routes[m.GetName()] = m
			case *cluster.Cluster:
				in.Clusters[m.GetName()] = m
			case *endpoint.ClusterLoadAssignment:
				in.Endpoints[m.GetClusterName()] = m
			}
		}
	}
	dp, err := dataplane.New(dataplane.Options{Identity: client, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := dp.Close(ctx); err != nil {
			t.Errorf("close data plane: %v", err)
		}
	}()
	if err := dp.Apply(in); err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	return nil
}

// controlPlaneErrors loads docs as the control plane does and returns its
// error diagnostics.
func controlPlaneErrors(docs string) []config.Diagnostic {
	s := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	var errs []config.Diagnostic
	for _, d := range s.Load(map[string][]byte{"t.yaml": []byte(docs)}).Diagnostics {
		if d.Severity == config.SeverityError {
			errs = append(errs, d)
		}
	}
	return errs
}

// yamlToJSON converts one YAML document to JSON, with no checks at all.
func yamlToJSON(raw []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
