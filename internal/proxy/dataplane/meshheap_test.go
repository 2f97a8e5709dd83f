package dataplane

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/proxy/xdswire"
	"weft.dev/weft/internal/xds/contract"
)

// meshTemplate is the generator's golden output for one service with two
// subsets and a canary route (internal/xds/generate): three clusters,
// their assignments and one virtual host, as a sidecar of a mesh holds
// them for every service.
const meshTemplate = "../../xds/generate/testdata/canary_header_and_split"

// meshResources is what a sidecar of an n-service mesh is handed by the
// xDS client: the template's clusters, assignments and virtual host once
// per service (its name replaced), one route configuration with every
// virtual host, one outbound listener; the messages, and every
// resource's encoding (Resources.Wire).
func meshResources(tb testing.TB, n int) *xdsclient.Resources {
	tb.Helper()
	read := func(file string) []json.RawMessage {
		b, err := os.ReadFile(filepath.Join(meshTemplate, file))
		if err != nil {
			tb.Fatal(err)
		}
		var out []json.RawMessage
		if err := json.Unmarshal(b, &out); err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		return out
	}
	clusters, assignments, routes := read("clusters.json"), read("endpoints.json"), read("routes.json")
	var rc routev3.RouteConfiguration
	if err := protojson.Unmarshal(routes[0], &rc); err != nil {
		tb.Fatal(err)
	}
	vhJSON, err := protojson.Marshal(rc.GetVirtualHosts()[0])
	if err != nil {
		tb.Fatal(err)
	}
	items := []any{}
	all := &routev3.RouteConfiguration{Name: rc.GetName()}
	for i := range n {
		svc := "svc" + strconv.Itoa(i)
		subst := func(raw []byte) []byte {
			s := strings.ReplaceAll(string(raw), "reviews", svc)
			return []byte(strings.ReplaceAll(s, "10.0.0.", "10."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250)+"."))
		}
		for _, raw := range clusters {
			c := &clusterv3.Cluster{}
			if err := protojson.Unmarshal(subst(raw), c); err != nil {
				tb.Fatal(err)
			}
			items = append(items, c)
		}
		for _, raw := range assignments {
			a := &endpointv3.ClusterLoadAssignment{}
			if err := protojson.Unmarshal(subst(raw), a); err != nil {
				tb.Fatal(err)
			}
			items = append(items, a)
		}
		vh := &routev3.VirtualHost{}
		if err := protojson.Unmarshal(subst(vhJSON), vh); err != nil {
			tb.Fatal(err)
		}
		all.VirtualHosts = append(all.VirtualHosts, vh)
	}
	items = append(items, all, httpListener(tb, "out", core.TrafficDirection_OUTBOUND, all.GetName(), nil))
	r := resourcesAny(items...)
	enc := func(ms map[string]proto.Message) map[string]xdswire.Packed {
		out := make(map[string]xdswire.Packed, len(ms))
		for n, m := range ms {
			b, err := xdswire.Pack(m)
			if err != nil {
				tb.Fatal(err)
			}
			out[n] = b
		}
		return out
	}
	r.Wire = &xdsclient.Wire{Listeners: enc(asMessages(r.Listeners)), Routes: enc(asMessages(r.Routes)),
		Clusters: enc(asMessages(r.Clusters)), Endpoints: enc(asMessages(r.Endpoints))}
	return r
}

func asMessages[M proto.Message](ms map[string]M) map[string]proto.Message {
	out := make(map[string]proto.Message, len(ms))
	for n, m := range ms {
		out[n] = m
	}
	return out
}

// liveHeap is the heap still reachable after two collections.
func liveHeap() uint64 {
	goruntime.GC()
	goruntime.GC()
	var m goruntime.MemStats
	goruntime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMeshSidecarHeap measures what a sidecar of a 1,000-service
// mesh keeps live once its configuration is applied (3,000 clusters,
// 3,000 assignments, 1,000 virtual hosts; not the encodings, which exist
// before and which the xDS client holds too), reported as
// live-B/cluster and live-MB. Each op
// then applies the set again with one assignment changed, as after an
// EDS push: "encodings", as the xDS client hands such a set over (only
// the changed assignment decoded), or "decoded", every message decoded
// (as it did before it compared encodings). With WEFT_HEAP_PROFILE=file,
// every allocation is profiled (MemProfileRate 1) and a heap profile of
// what the first apply left live is written there:
//
//	go test -run '^$' -bench MeshSidecarHeap -benchtime 20x ./internal/proxy/dataplane/
func BenchmarkMeshSidecarHeap(b *testing.B) {
	b.Run("encodings", func(b *testing.B) { benchmarkMeshSidecarHeap(b, false) })
	b.Run("decoded", func(b *testing.B) { benchmarkMeshSidecarHeap(b, true) })
}

func benchmarkMeshSidecarHeap(b *testing.B, decodeAll bool) {
	const services = 1000
	prof := os.Getenv("WEFT_HEAP_PROFILE")
	if prof != "" {
		old := goruntime.MemProfileRate
		goruntime.MemProfileRate = 1
		defer func() { goruntime.MemProfileRate = old }()
	}
	tmpl := meshResources(b, services)
	base := liveHeap()
	d := newDataplane(b, contract.Identity{}, nil)
	mustApply(b, d, handed(b, tmpl, nil, true))
	live := liveHeap() - base
	if prof != "" {
		// Written at the rate it was recorded with: what the first apply
		// (and the template, built before) left live.
		f, err := os.Create(prof)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		name := "outbound|9080|v1|svc" + strconv.Itoa(i%services) + ".default.svc.cluster.local"
		changed := cla(name, ep{Addr: "10.9." + strconv.Itoa(i%250) + "." + strconv.Itoa(1+i%200) + ":9080"})
		mustApply(b, d, handed(b, tmpl, changed, decodeAll))
		i++
	}
	b.ReportMetric(float64(live)/float64(3*services), "live-B/cluster")
	b.ReportMetric(float64(live)/1e6, "live-MB")
}

// handed is tmpl as the xDS client hands it over, with the assignment
// changed (may be nil) replacing its namesake: the encodings, and the
// messages decoded afresh (sharing nothing with tmpl) — all of them with
// decodeAll, else only the changed one.
func handed(tb testing.TB, tmpl *xdsclient.Resources, changed *endpointv3.ClusterLoadAssignment, decodeAll bool) *xdsclient.Resources {
	tb.Helper()
	w := tmpl.Wire
	out := &xdsclient.Resources{Versions: tmpl.Versions, Wire: &xdsclient.Wire{Listeners: w.Listeners, Routes: w.Routes, Clusters: w.Clusters,
		Endpoints: make(map[string]xdswire.Packed, len(w.Endpoints))}}
	for n, b := range w.Endpoints {
		out.Wire.Endpoints[n] = b
	}
	if changed != nil {
		enc, err := xdswire.Pack(changed)
		if err != nil {
			tb.Fatal(err)
		}
		out.Wire.Endpoints[changed.GetClusterName()] = enc
	}
	out.Listeners = decodedFrom(tb, out.Wire.Listeners, decodeAll, "", func() *listenerv3.Listener { return &listenerv3.Listener{} })
	out.Routes = decodedFrom(tb, out.Wire.Routes, decodeAll, "", func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} })
	out.Clusters = decodedFrom(tb, out.Wire.Clusters, decodeAll, "", func() *clusterv3.Cluster { return &clusterv3.Cluster{} })
	out.Endpoints = decodedFrom(tb, out.Wire.Endpoints, decodeAll, changed.GetClusterName(),
		func() *endpointv3.ClusterLoadAssignment { return &endpointv3.ClusterLoadAssignment{} })
	return out
}

// decodedFrom has a key for each encoding of wire: its message decoded
// when all is set or its name is only, else nil.
func decodedFrom[M proto.Message](tb testing.TB, wire map[string]xdswire.Packed, all bool, only string, fresh func() M) map[string]M {
	out := make(map[string]M, len(wire))
	for n, b := range wire {
		var m M
		if all || n == only {
			m = fresh()
			if err := b.Unmarshal(m); err != nil {
				tb.Fatal(err)
			}
		}
		out[n] = m
	}
	return out
}

// TestRoutesShareClusterNames: the cluster names a compiled route
// configuration sends to are the clusters' own strings, and each
// cluster's name is the string the xDS client keys it by, not a copy
// decoded with it: a sidecar of a 1,000-service mesh keeps 3,000 cluster
// names, each named by one or two routes.
func TestRoutesShareClusterNames(t *testing.T) {
	tmpl := meshResources(t, 3)
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, handed(t, tmpl, nil, false))
	rt := d.rt.Load()
	own := map[*byte]bool{}
	for n, c := range rt.clusters {
		if unsafe.StringData(c.Name()) != unsafe.StringData(n) {
			t.Errorf("cluster %s: its name is a copy of its key", n)
		}
		own[unsafe.StringData(n)] = true
	}
	for i := range 3 {
		svc := "svc" + strconv.Itoa(i)
		for _, user := range []string{"jason", ""} {
			for range 50 { // the split picks at random
				r := httptest.NewRequest(http.MethodGet, "http://"+svc+":9080/", nil)
				if user != "" {
					r.Header.Set("end-user", user)
				}
				re := rt.routes["http_proxy"].Route(r)
				if re == nil {
					t.Fatalf("%s: no route", svc)
				}
				if c := re.PickCluster(r); !own[unsafe.StringData(c)] {
					t.Fatalf("%s (end-user %q): routed to %q, a copy of the cluster's name", svc, user, c)
				}
			}
		}
	}
}
