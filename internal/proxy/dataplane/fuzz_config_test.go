package dataplane

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// FuzzConfigToProxy checks the promise that the proxy never rejects what
// the control plane accepted: whatever Istio YAML is loaded, the config
// the store puts in force, generated into xDS for a client sidecar and for
// a server workload, passes the checks the xDS client makes (protobuf
// decoding, protoc-gen-validate) and translates. A failure is a mistake
// the control plane should have rejected with a file and a field, not a
// NACK. This package's tests import the control plane; its binary does not
// (cmd/weft-proxy checks).
func FuzzConfigToProxy(f *testing.F) {
	for _, s := range configSeeds(f) {
		f.Add(s)
	}
	ids := []contract.Identity{
		{ID: contract.DefaultNodeID("10.0.0.99", "client", "default"), Namespace: "default", WorkloadName: "client",
			Labels: map[string]string{"app": "client"}, IPs: []string{"10.0.0.99"}, OutboundAddress: "127.0.0.1:15001"},
		{ID: contract.DefaultNodeID("10.0.0.1", "reviews-v1", "default"), Namespace: "default", WorkloadName: "reviews-v1",
			Labels: map[string]string{"app": "reviews", "version": "v1"}, IPs: []string{"10.0.0.1", "127.0.0.2"},
			OutboundAddress: "127.0.0.1:15002", AppPorts: map[uint32]string{9080: "127.0.0.1:19080"}},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
		snap := store.Load(map[string][]byte{"f.yaml": data, "base.yaml": []byte(configBase)})
		m := mesh.New(snap, static.Build(snap, ""), "")
		for _, id := range ids {
			r, err := received(generate.ForProxy(m, id))
			if err == nil {
				var d *Dataplane
				if d, err = New(Options{Identity: id}); err != nil {
					t.Fatal(err)
				}
				var rt *runtime
				if rt, err = d.translate(r, nil); err == nil {
					closeRuntime(rt)
				}
				d.Close(t.Context()) // its access log writers, if the config has access logs
			}
			if err != nil {
				t.Fatalf("proxy %s would NACK config the control plane put in force: %v\nin force:%s", id.WorkloadName, err, inForce(snap))
			}
		}
	})
}

// received is what the xDS client makes of generated resources: decoded
// from the wire and validated (protoc-gen-validate), keyed by name.
func received(g generate.Resources) (*xdsclient.Resources, error) {
	r := &xdsclient.Resources{}
	var err error
	if r.Listeners, err = decodeAll(g.Listeners, r.Listeners); err != nil {
		return nil, err
	}
	if r.Routes, err = decodeAll(g.Routes, r.Routes); err != nil {
		return nil, err
	}
	if r.Clusters, err = decodeAll(g.Clusters, r.Clusters); err != nil {
		return nil, err
	}
	if r.Endpoints, err = decodeAll(g.Endpoints, r.Endpoints); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeAll[M interface {
	proto.Message
	Validate() error
}](in []types.Resource, _ map[string]M) (map[string]M, error) {
	out := map[string]M{}
	for _, res := range in {
		a, err := anypb.New(res.(proto.Message))
		if err != nil {
			return nil, err
		}
		var m M
		m = m.ProtoReflect().Type().New().Interface().(M)
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", a.GetTypeUrl(), err)
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		name := ""
		switch x := any(m).(type) {
		case interface{ GetClusterName() string }:
			name = x.GetClusterName()
		case interface{ GetName() string }:
			name = x.GetName()
		}
		out[name] = m
	}
	return out, nil
}

// configBase is the config beside the fuzzed file: a service with two
// versions and endpoints, the server workload's among them.
const configBase = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9090, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}, locality: us/east/a}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 10.0.0.2, labels: {app: reviews, version: v2}, locality: us/west/b}
`

// inForce renders a snapshot's resources for a failure message.
func inForce(s *config.Snapshot) string {
	var b strings.Builder
	for _, r := range s.VirtualServices {
		fmt.Fprintf(&b, "\n\t%s: %v", r.Meta, r.Spec)
	}
	for _, r := range s.DestinationRules {
		fmt.Fprintf(&b, "\n\t%s: %v", r.Meta, r.Spec)
	}
	for _, r := range s.ServiceEntries {
		fmt.Fprintf(&b, "\n\t%s: %v", r.Meta, r.Spec)
	}
	for _, r := range s.WorkloadEntries {
		fmt.Fprintf(&b, "\n\t%s: %v", r.Meta, r.Spec)
	}
	return b.String()
}

var yamlBlock = regexp.MustCompile("(?s)```yaml[ \t]*\n(.*?)```")

// configSeeds are the examples, the docs' YAML blocks and the YAML of the
// end-to-end tests: configurations users write.
func configSeeds(tb testing.TB) [][]byte {
	root := filepath.Join("..", "..", "..")
	var out [][]byte
	for _, glob := range []string{"examples/*/*.yaml", "docs/*.md", "e2e/*_test.go"} {
		paths, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				tb.Fatal(err)
			}
			switch {
			case strings.HasSuffix(p, ".md"):
				for _, m := range yamlBlock.FindAllSubmatch(data, -1) {
					out = append(out, m[1])
				}
			case strings.HasSuffix(p, ".go"):
				for _, m := range regexp.MustCompile("`([^`]*kind:[^`]*)`").FindAllSubmatch(data, -1) {
					out = append(out, m[1])
				}
			default:
				out = append(out, data)
			}
		}
	}
	if len(out) == 0 {
		tb.Fatal("no seeds found")
	}
	return out
}
