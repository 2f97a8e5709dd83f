package generate

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

// encode is rs encoded as a server sends them, one after the other.
func encode(t *testing.T, rs []types.Resource) []byte {
	t.Helper()
	var out []byte
	for _, r := range rs {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = fmt.Appendf(out, "%s %d\n", cache.GetResourceName(r), len(b))
		out = append(out, b...)
	}
	return out
}

// proxyVariants are id and proxies like it: captured, another workload
// of the same service (other address, service account, certificate), one
// of another version (another label), and one of another service.
func proxyVariants(id contract.Identity) []contract.Identity {
	vs := []contract.Identity{id}
	if !id.Router() {
		vs = append(vs, capturedProxy(id))
	}
	sibling := id
	sibling.ID += "-sibling"
	sibling.IPs = []string{"10.99.0.1"}
	sibling.ServiceAccount += "-other"
	sibling.MTLS = !id.MTLS
	vs = append(vs, sibling, capturedProxy(sibling))
	version := id
	version.ID += "-v9"
	version.Labels = maps.Clone(id.Labels)
	if version.Labels == nil {
		version.Labels = map[string]string{}
	}
	version.Labels["version"] = "v9"
	other := version
	other.ID += "-other"
	other.Labels = maps.Clone(version.Labels)
	other.Labels["app"] = "other"
	other.WorkloadName = "other"
	vs = append(vs, version, capturedProxy(version), other, capturedProxy(other))
	// Proxies that take virtual hosts by VHDS: the same, split.
	for _, v := range slices.Clone(vs[:2]) {
		v.ID += "-vhds"
		v.VHDS = true
		vs = append(vs, v)
	}
	return vs
}

// TestOwnPartsByKey: for every golden case and variants of its proxy,
// the two parts of a proxy's own resources (BuildOutbound, BuildInbound)
// are together exactly ForProxyParts' listeners, routes and own
// clusters, and proxies whose OutboundKeys are equal get outbound parts
// that are the same bytes: a server that builds and encodes the part
// once per key sends each proxy what it would have built for it alone.
func TestOwnPartsByKey(t *testing.T) {
	shared := 0
	for _, tc := range goldenCases() {
		s := tc.mesh()
		byKey := map[any][]byte{}
		for _, id := range proxyVariants(tc.proxy) {
			ik := IdentityKey(id)
			outL, routes, vhosts := BuildOutbound(s, id)
			inL, own := BuildInbound(s, id, Parts{Lazy: sharedOutboundClustersLazy(s, id)})
			full := ForProxyParts(s, id)
			listeners := append(slices.Clone(outL), inL...)
			sortByName(listeners)
			for _, c := range []struct {
				typ       string
				got, want []types.Resource
			}{{"listeners", listeners, full.Listeners}, {"routes", routes, full.Routes}, {"virtual hosts", vhosts, full.VirtualHosts}, {"own clusters", own, full.ClusterParts.Own}} {
				if !bytes.Equal(encode(t, c.got), encode(t, c.want)) {
					t.Errorf("%s, proxy %s: %s in parts differ from ForProxyParts'", tc.name, id.ID, c.typ)
				}
			}
			out := slices.Concat(encode(t, outL), encode(t, routes), encode(t, vhosts))
			k := OutboundKey(s, id, ik)
			if prev, ok := byKey[k]; ok {
				shared++
				if !bytes.Equal(prev, out) {
					t.Errorf("%s, proxy %s: outbound part differs from another proxy's with the same OutboundKey", tc.name, id.ID)
				}
			}
			byKey[k] = out
			if InboundKey(s, id, ik) != InboundKey(s, id, ik) || OutboundKey(s, id, ik) != k {
				t.Errorf("%s, proxy %s: keys differ between two calls", tc.name, id.ID)
			}
		}
	}
	if shared == 0 {
		t.Error("no two proxies shared an OutboundKey: the test checks nothing")
	}
}

// TestOwnPartsCarriedOver: a server that keeps each part of a proxy's own
// resources under its key, carried over as the keys say (the outbound
// part with MemoCarry, the inbound part with MemoCarryRoutes), gives
// every proxy what a snapshot built from scratch gives it, through
// endpoint, route and other changes — with tracing to a collector that a
// route change makes part of a namespace-scoped proxy's mesh or not.
func TestOwnPartsCarriedOver(t *testing.T) {
	const collector = `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: collector, namespace: observability}
spec:
  hosts: [jaeger-collector.observability.svc.cluster.local]
  addresses: [10.200.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 4317, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.200.0.2}]
`
	const routeToCollector = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: via, namespace: bookinfo}\nspec:\n  hosts: [via.bookinfo.svc.cluster.local]\n  http:\n  - route: [{destination: {host: jaeger-collector.observability.svc.cluster.local}}]\n"
	const viaService = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: via, namespace: bookinfo}\nspec:\n  hosts: [via.bookinfo.svc.cluster.local]\n  addresses: [10.200.0.9]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 4317, name: grpc, protocol: GRPC}]\n  endpoints: [{address: 10.200.0.10}]\n"
	for _, opts := range []mesh.Options{{}, {Tracing: otelGRPC}, {Tracing: otelGRPC, EgressScope: mesh.EgressScopeNamespace}} {
		t.Run(fmt.Sprintf("tracing=%v,scope=%q", opts.Tracing != nil, opts.EgressScope), func(t *testing.T) {
			store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
			files := map[string][]byte{"mesh.yaml": []byte(bookinfo + carryRouting + collector), "ratings-v2.yaml": []byte(carryRatingsWE), "via.yaml": []byte(viaService)}
			ratingsProxy := contract.Identity{ID: contract.DefaultNodeID("10.1.0.1", "ratings-v1", "legacy"), Namespace: "legacy",
				WorkloadName: "ratings-v1", Labels: map[string]string{"app": "ratings", "security.istio.io/tlsMode": "istio"},
				IPs: []string{"10.1.0.1"}, ServiceAccount: "ratings", MTLS: true}
			proxies := append(proxyVariants(reviewsProxy), ratingsProxy, capturedProxy(ratingsProxy))
			replace := func(file, old, new string) {
				t.Helper()
				s := string(files[file])
				if !strings.Contains(s, old) {
					t.Fatalf("%s has no %q", file, old)
				}
				files[file] = []byte(strings.Replace(s, old, new, 1))
			}
			type outPart struct{ listeners, routes, vhosts []types.Resource }
			type inPart struct{ listeners, clusters []types.Resource }
			type outKey struct{ k any }
			type inKey struct{ k any }
			type vhostKept struct{ k any }
			type lazyKept struct{ k any }
			keyed, carried, derived := 0, 0, 0
			lazyBefore := map[string][]Lazy{}
			var prev *mesh.Snapshot
			for _, step := range []struct {
				name string
				edit func()
			}{
				{"initial", func() {}},
				{"endpoint address", func() { replace("ratings-v2.yaml", "10.1.0.2", "10.1.0.3") }},
				{"the proxy's own endpoint", func() {
					replace("mesh.yaml", "address: 127.0.0.2\n  serviceAccount: reviews", "address: 127.0.0.2\n  ports: {http: 9081}\n  serviceAccount: reviews-sa")
				}},
				{"a VirtualService to the collector added", func() { files["vs.yaml"] = []byte(routeToCollector) }},
				{"an endpoint changed", func() { replace("ratings-v2.yaml", "10.1.0.3", "10.1.0.4") }},
				{"the VirtualService changed", func() { replace("vs.yaml", "- route:", "- timeout: 3s\n    route:") }},
				{"the VirtualService removed", func() { delete(files, "vs.yaml") }},
				{"a DestinationRule changed", func() {
					replace("mesh.yaml", "- {name: v2, labels: {version: v2}}", "- {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}}")
				}},
				{"the VirtualService back", func() { files["vs.yaml"] = []byte(routeToCollector) }},
			} {
				step.edit()
				cfg := store.Load(files)
				for _, d := range cfg.Diagnostics {
					if d.Severity == config.SeverityError {
						t.Fatalf("%s: %s", step.name, d.Error())
					}
				}
				reg := static.Build(cfg, "")
				cur := mesh.BuildFrom(prev, cfg, reg, opts)
				scratch := mesh.Build(cfg, reg, opts)
				if opts.EgressScope == mesh.EgressScopeNamespace {
					// The case the inbound part's key must see: a route
					// change decides whether the collector is a service
					// of the proxy's mesh or a cluster of its own.
					_, routed := files["vs.yaml"]
					own := find(ForProxyParts(scratch, reviewsProxy).ClusterParts.Own, "outbound|4317||jaeger-collector.observability.svc.cluster.local") != nil
					if own == routed {
						t.Fatalf("%s: collector cluster of the proxy's own: %v with the VirtualService to it: %v", step.name, own, routed)
					}
				}
				for _, id := range proxies {
					ik := IdentityKey(id)
					out := cur.MemoCarry(outKey{OutboundKey(cur, id, ik)}, nil, func() any {
						l, r, v := BuildOutbound(cur, id)
						return outPart{l, r, v}
					}).(outPart)
					in := cur.MemoCarryRoutes(inKey{InboundKey(cur, id, ik)}, nil, func() any {
						l, c := BuildInbound(cur, id, Parts{Lazy: sharedOutboundClustersLazy(cur, id)})
						return inPart{l, c}
					}).(inPart)
					want := ForProxyParts(scratch, id)
					if id.VHDS {
						// Virtual hosts kept by their Keys, as the server
						// keeps their encodings (lazyDigests).
						_, _, lazy := BuildOutboundLazy(cur, id)
						if len(lazy) != len(want.VirtualHosts) {
							t.Fatalf("%s: proxy %s: %d lazy virtual hosts, %d from scratch", step.name, id.ID, len(lazy), len(want.VirtualHosts))
						}
						for i, l := range lazy {
							got := func() types.Resource { return l.Build(cur) }
							if l.Key != nil {
								keyed++
								built := false
								kept := cur.MemoCarryRoutes(vhostKept{l.Key}, nil, func() any {
									built = true
									return l.Build(cur)
								}).(types.Resource)
								got = func() types.Resource { return kept }
								if !built && strings.Contains(step.name, "VirtualService") {
									carried++ // over a route change
								}
							}
							if w := want.VirtualHosts[i]; !bytes.Equal(encode(t, []types.Resource{got()}), encode(t, []types.Resource{w})) {
								t.Errorf("%s: proxy %s: virtual host %s kept by its Key differs from scratch", step.name, id.ID, l.Name)
							}
						}
					}
					// The shared clusters and load assignments, brought
					// up to date over endpoint changes (MemoDerive) and
					// kept by their Keys as the server keeps their
					// encodings, are what a snapshot from scratch gives.
					gotParts, wantParts := SharedParts(cur, id), SharedParts(scratch, id)
					for _, c := range []struct {
						typ       string
						got, want Parts
					}{{"shared clusters", gotParts.ClusterParts, wantParts.ClusterParts}, {"shared load assignments", gotParts.EndpointParts, wantParts.EndpointParts}} {
						if len(c.got.Lazy) != len(c.want.Lazy) {
							t.Fatalf("%s: proxy %s: %d %s, %d from scratch", step.name, id.ID, len(c.got.Lazy), c.typ, len(c.want.Lazy))
						}
						before := lazyBefore[id.ID+c.typ]
						for i, l := range c.got.Lazy {
							w := c.want.Lazy[i]
							if l.Name != w.Name || l.Key != w.Key {
								t.Errorf("%s: proxy %s: %s %d is %s %v, from scratch %s %v", step.name, id.ID, c.typ, i, l.Name, l.Key, w.Name, w.Key)
								continue
							}
							kept := cur.MemoCarryRoutes(lazyKept{l.Key}, nil, func() any { return l.Build(cur) }).(types.Resource)
							if !bytes.Equal(encode(t, []types.Resource{kept}), encode(t, []types.Resource{w.Build(scratch)})) {
								t.Errorf("%s: proxy %s: %s %s kept by its Key differs from scratch", step.name, id.ID, c.typ, l.Name)
							}
							if i < len(before) && sameFunc(before[i].Build, l.Build) && strings.Contains(step.name, "endpoint") {
								derived++ // the builder of the list before: brought up to date, not made anew
							}
						}
						lazyBefore[id.ID+c.typ] = c.got.Lazy
					}
					listeners := append(slices.Clone(out.listeners), in.listeners...)
					sortByName(listeners)
					for _, c := range []struct {
						typ       string
						got, want []types.Resource
					}{{"listeners", listeners, want.Listeners}, {"routes", out.routes, want.Routes}, {"virtual hosts", out.vhosts, want.VirtualHosts}, {"own clusters", in.clusters, want.ClusterParts.Own}} {
						if !bytes.Equal(encode(t, c.got), encode(t, c.want)) {
							t.Errorf("%s: proxy %s: %s kept by key differ from scratch", step.name, id.ID, c.typ)
						}
					}
				}
				prev = cur
			}
			if keyed == 0 || carried == 0 {
				t.Errorf("%d virtual hosts with a Key, %d carried over a route change: the test checks nothing", keyed, carried)
			}
			if derived == 0 {
				t.Error("no shared list was brought up to date over an endpoint change: the test checks nothing")
			}
		})
	}
}

// sameFunc reports whether a and b are the same func value (the same
// closure), which Go's == does not tell: a func value is a pointer to
// its closure.
func sameFunc[F any](a, b F) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}
