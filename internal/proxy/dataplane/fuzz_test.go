package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	gomaps "maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/xdsclient"
)

// The fuzz targets of the xDS translation. `go test` runs their seeds and
// testdata/fuzz/<Target>/ (every crasher found so far) as ordinary tests;
// bench/fuzz.sh runs them as fuzzers. Both check that translation either
// returns an error (a NACK) or builds a runtime, never panics or hangs,
// says the same thing twice, and that a runtime it builds serves requests
// (to a loopback upstream only) without panicking.

// FuzzTranslateWire feeds translation arbitrary protobuf bytes: each
// argument is a DiscoveryResponse whose resources are decoded as that
// argument's type, whatever their type URL says. The seeds are the
// generator's golden outputs.
func FuzzTranslateWire(f *testing.F) {
	for _, c := range goldenResources(f) {
		f.Add(wireOf(f, c.Listeners), wireOf(f, c.Routes), wireOf(f, c.Clusters), wireOf(f, c.Endpoints))
	}
	up := fuzzUpstream(f)
	f.Fuzz(func(t *testing.T, ls, rs, cs, es []byte) {
		r := &xdsclient.Resources{
			Listeners: decodeWire(ls, func() *listener.Listener { return new(listener.Listener) }, (*listener.Listener).GetName),
			Routes:    decodeWire(rs, func() *route.RouteConfiguration { return new(route.RouteConfiguration) }, (*route.RouteConfiguration).GetName),
			Clusters:  decodeWire(cs, func() *cluster.Cluster { return new(cluster.Cluster) }, (*cluster.Cluster).GetName),
			Endpoints: decodeWire(es, func() *endpointv3.ClusterLoadAssignment { return new(endpointv3.ClusterLoadAssignment) }, (*endpointv3.ClusterLoadAssignment).GetClusterName),
		}
		if r.Listeners == nil || r.Routes == nil || r.Clusters == nil || r.Endpoints == nil {
			return // not protobuf
		}
		checkTranslation(t, r, up)
	})
}

// FuzzTranslateMutate applies structured mutations to the generator's
// golden outputs: ops drives a walk of the resources' fields (into the
// typed configs inside Any too), setting values to edge cases (zero,
// negative and huge numbers and durations, regular expressions, header
// names, names of other resources), clearing fields and growing lists.
func FuzzTranslateMutate(f *testing.F) {
	cases := goldenResources(f)
	for i := range cases {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{1, 0, 3, 7, 2, 9, 4, 4, 1, 200, 17})
	}
	up := fuzzUpstream(f)
	f.Fuzz(func(t *testing.T, which uint8, ops []byte) {
		r := cloneResources(cases[int(which)%len(cases)])
		m := &mutator{data: ops, names: resourceNames(r)}
		for range 32 {
			if len(m.data) == 0 {
				break
			}
			m.mutateOne(r)
		}
		if !roundTrip(r) {
			return // the xDS client could not have received it: not valid protobuf (e.g. a string that is not UTF-8)
		}
		checkTranslation(t, rekey(r), up)
	})
}

// roundTrip replaces every resource with its decoded wire form, as the xDS
// client hands it over, and reports whether they all survived.
func roundTrip(r *xdsclient.Resources) bool {
	return roundTripMap(r.Listeners) && roundTripMap(r.Routes) && roundTripMap(r.Clusters) && roundTripMap(r.Endpoints)
}

func roundTripMap[M proto.Message](rs map[string]M) bool {
	for k, m := range rs {
		b, err := proto.Marshal(m)
		if err != nil {
			return false
		}
		out := m.ProtoReflect().New().Interface().(M)
		if proto.Unmarshal(b, out) != nil {
			return false
		}
		rs[k] = out
	}
	return true
}

// checkTranslation translates r on a fresh data plane and, when that
// succeeds, translates it again on top of the result (the path of an
// update that changes nothing) and serves requests through the runtime.
func checkTranslation(t *testing.T, r *xdsclient.Resources, up *fuzzBackend) {
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	rt, err := d.translate(r, nil)
	rt2, err2 := d.translate(r, nil)
	if fmt.Sprint(err) != fmt.Sprint(err2) {
		t.Fatalf("translating the same resources twice: %v, then %v", err, err2)
	}
	if err != nil {
		if err.Error() == "" {
			t.Fatal("an empty error")
		}
		return
	}
	closeRuntime(rt2)
	again, err := d.translate(r, rt)
	if err != nil {
		t.Fatalf("translating the same resources on top of their own runtime: %v", err)
	}
	for name, c := range again.clusters {
		if !c.SharesState(rt.clusters[name]) {
			t.Fatalf("cluster %q: an unchanged cluster did not keep its pool", name)
		}
	}
	// Serve on the same resources with every endpoint at the loopback
	// upstream, so no request leaves this host.
	served, err := d.translate(toLoopback(r, up.addr), again)
	if err != nil {
		t.Fatalf("pointing the endpoints at the test's upstream: %v", err)
	}
	for name, c := range again.clusters {
		if sc := served.clusters[name]; sc == nil || !sc.SharesState(c) {
			c.CloseIdle()
		}
	}
	serveFuzzRequests(t, d, served)
}

// toLoopback returns r with every socket address of its clusters and
// endpoint assignments (copies of them) replaced by addr's host and port:
// whatever translation makes of them, a runtime built from the result
// dials nothing but addr. Ports that are not a port_value stay as they
// are, so what translated before still translates.
func toLoopback(r *xdsclient.Resources, addr string) *xdsclient.Resources {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	port, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		panic(err)
	}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if sa, ok := m.Interface().(*core.SocketAddress); ok {
			sa.Address = host
			if _, ok := sa.GetPortSpecifier().(*core.SocketAddress_PortValue); ok {
				sa.PortSpecifier = &core.SocketAddress_PortValue{PortValue: uint32(port)}
			}
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { walk(mv.Message()); return true })
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(v.Message())
			}
			return true
		})
	}
	out := &xdsclient.Resources{Listeners: r.Listeners, Routes: r.Routes,
		Clusters: cloneMap(r.Clusters), Endpoints: cloneMap(r.Endpoints), Versions: r.Versions}
	for _, c := range out.Clusters {
		walk(c.ProtoReflect())
	}
	for _, cla := range out.Endpoints {
		walk(cla.ProtoReflect())
	}
	return out
}

// closeRuntime closes the pools of a runtime that was never published.
func closeRuntime(rt *runtime) {
	for _, c := range rt.clusters {
		c.CloseIdle()
	}
}

// maxFuzzRequests bounds the requests sent through one runtime.
const maxFuzzRequests = 12

// serveFuzzRequests sends requests built from the routes of rt through
// each of its listeners; rt's endpoints are all the loopback upstream
// (toLoopback).
func serveFuzzRequests(t *testing.T, d *Dataplane, rt *runtime) {
	d.rt.Store(rt)
	sent := 0
	for _, name := range sortedKeys(rt.listeners) {
		lc := rt.listeners[name]
		bl := &boundListener{d: d, name: name, addr: lc.addr}
		bl.last.Store(&listenerState{rt: rt, lc: lc})
		rc := routeConfigOf(rt.res.Listeners[name], rt.res)
		if rc == nil {
			t.Fatalf("listener %q has no route configuration", name)
		}
		for _, req := range fuzzRequests(rc) {
			if sent == maxFuzzRequests {
				return
			}
			sent++
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			rec := httptest.NewRecorder()
			serveAbortable(bl, rec, req.WithContext(ctx))
			cancel()
			if rec.Code < 100 || rec.Code > 999 {
				t.Fatalf("listener %q: %s %s (Host %s): status %d", name, req.Method, req.URL, req.Host, rec.Code)
			}
		}
	}
}

// serveAbortable calls h as net/http's server does: a handler that ends
// a response it has begun with panic(http.ErrAbortHandler) — the
// proxy's way to reset a stream, e.g. when the 200 ms deadline ends a
// response midway — is not a crash.
func serveAbortable(h http.Handler, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			panic(v)
		}
	}()
	h.ServeHTTP(w, r)
}

// fuzzRequests builds requests that reach the routes of rc: one per route
// of every virtual host, with the route's path and the headers its exact
// matchers want, and a few that match nothing. The host of a virtual host
// is the one the router picks it for: its first exact domain in sort
// order, else its longest wildcard, else any host for "*".
func fuzzRequests(rc *route.RouteConfiguration) []*http.Request {
	var out []*http.Request
	add := func(host string, rt *route.Route, i int) {
		method, body := http.MethodGet, io.Reader(nil)
		if i%3 == 1 {
			method, body = http.MethodPost, strings.NewReader("fuzz body")
		}
		r := httptest.NewRequest(method, "http://x/", body)
		r.Host = host
		if rt != nil {
			m := rt.GetMatch()
			switch ps := m.GetPathSpecifier().(type) {
			case *route.RouteMatch_Prefix:
				r.URL.Path, r.URL.RawPath = ps.Prefix, ""
			case *route.RouteMatch_Path:
				r.URL.Path, r.URL.RawPath = ps.Path, ""
			case *route.RouteMatch_PathSeparatedPrefix:
				r.URL.Path, r.URL.RawPath = ps.PathSeparatedPrefix, ""
			}
			for _, h := range m.GetHeaders() {
				if v, ok := exactHeaderValue(h); ok && !strings.HasPrefix(h.GetName(), ":") {
					r.Header.Set(h.GetName(), v)
				}
			}
			for _, q := range m.GetQueryParameters() {
				r.URL.RawQuery += "&" + q.GetName() + "=" + stringPattern(q.GetStringMatch())
			}
			if m.GetGrpc() != nil {
				r.Header.Set("Content-Type", "application/grpc")
			}
		}
		if i%4 == 2 {
			r.Header.Set(fuzzStatusHeader, "503") // the upstream fails it: retries, outlier detection
		}
		if i%5 == 3 {
			r.Header.Set("Origin", "http://example.com") // CORS
		}
		out = append(out, r)
	}
	vhs := rc.GetVirtualHosts()
	exact := map[string]int{}
	type wildcard struct {
		part string
		vh   int
	}
	var suffix, prefix []wildcard
	star := -1
	for i, vh := range vhs {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				star = i
			case strings.HasPrefix(d, "*"):
				suffix = append(suffix, wildcard{d[1:], i})
			case strings.HasSuffix(d, "*"):
				prefix = append(prefix, wildcard{d[:len(d)-1], i})
			case d != "":
				exact[d] = i
			}
		}
	}
	byLen := func(a, b wildcard) int { return len(b.part) - len(a.part) }
	slices.SortStableFunc(suffix, byLen)
	slices.SortStableFunc(prefix, byLen)
	hosts := map[int]string{}
	for _, d := range sortedKeys(exact) {
		if _, ok := hosts[exact[d]]; !ok {
			hosts[exact[d]] = d
		}
	}
	for _, w := range suffix {
		if _, ok := hosts[w.vh]; !ok {
			hosts[w.vh] = "x" + w.part
		}
	}
	for _, w := range prefix {
		if _, ok := hosts[w.vh]; !ok {
			hosts[w.vh] = w.part + "x"
		}
	}
	if _, ok := hosts[star]; star >= 0 && !ok {
		hosts[star] = "anything.example"
	}
	order := slices.Collect(gomaps.Keys(hosts))
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(hosts[a], hosts[b]) })
	i := 0
	for _, vh := range order {
		for _, rt := range vhs[vh].GetRoutes() {
			add(hosts[vh], rt, i)
			i++
		}
	}
	add("no-such-host.invalid", nil, i)
	return out
}

// exactHeaderValue is the value an exact header matcher wants.
func exactHeaderValue(h *route.HeaderMatcher) (string, bool) {
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_ExactMatch:
		return s.ExactMatch, true
	case *route.HeaderMatcher_StringMatch:
		if e, ok := s.StringMatch.GetMatchPattern().(*matcherv3.StringMatcher_Exact); ok {
			return e.Exact, true
		}
	}
	return "", false
}

// stringPattern is the literal part of a string matcher ("" for a regular
// expression or none).
func stringPattern(m *matcherv3.StringMatcher) string {
	v := m.GetExact() + m.GetPrefix() + m.GetSuffix() + m.GetContains()
	if m.GetIgnoreCase() {
		v = strings.ToLower(v)
	}
	return v
}

// routeConfigOf returns the route configuration the first HTTP chain of
// listener l uses in r (tcp_proxy chains are skipped): its
// inline one or the RDS one it names; nil when it has none.
func routeConfigOf(l *listener.Listener, r *xdsclient.Resources) *route.RouteConfiguration {
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	for _, chain := range chains {
		if len(chain.GetFilters()) == 0 {
			continue
		}
		var m hcm.HttpConnectionManager
		if chain.GetFilters()[0].GetTypedConfig().UnmarshalTo(&m) != nil {
			continue // a tcp_proxy chain
		}
		if rc := m.GetRouteConfig(); rc != nil {
			return rc
		}
		return r.Routes[m.GetRds().GetRouteConfigName()]
	}
	return nil
}

// fuzzStatusHeader asks the test upstream for a response status.
const fuzzStatusHeader = "X-Fuzz-Status"

// fuzzBackend is a loopback HTTP/1.1 and h2c server that answers every
// request with 200, or the status fuzzStatusHeader asks for.
type fuzzBackend struct {
	addr string
}

// fuzzUpstream starts an upstream for one fuzz target; it is closed when
// the target ends.
func fuzzUpstream(f *testing.F) *fuzzBackend {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		code := http.StatusOK
		if c, err := strconv.Atoi(r.Header.Get(fuzzStatusHeader)); err == nil && c >= 200 && c <= 599 {
			code = c
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	f.Cleanup(srv.Close)
	return &fuzzBackend{addr: srv.Listener.Addr().String()}
}

// goldenResources loads the xDS generator's golden outputs (rich,
// realistic configurations) as resource sets.
func goldenResources(tb testing.TB) []*xdsclient.Resources {
	var out []*xdsclient.Resources
	for _, dir := range goldenDirs(tb) {
		r := &xdsclient.Resources{}
		r.Listeners = readGolden(tb, filepath.Join(dir, "listeners.json"), func() *listener.Listener { return new(listener.Listener) }, (*listener.Listener).GetName)
		r.Routes = readGolden(tb, filepath.Join(dir, "routes.json"), func() *route.RouteConfiguration { return new(route.RouteConfiguration) }, (*route.RouteConfiguration).GetName)
		r.Clusters = readGolden(tb, filepath.Join(dir, "clusters.json"), func() *cluster.Cluster { return new(cluster.Cluster) }, (*cluster.Cluster).GetName)
		r.Endpoints = readGolden(tb, filepath.Join(dir, "endpoints.json"), func() *endpointv3.ClusterLoadAssignment { return new(endpointv3.ClusterLoadAssignment) }, (*endpointv3.ClusterLoadAssignment).GetClusterName)
		out = append(out, r)
	}
	if len(out) == 0 {
		tb.Fatal("no golden xDS outputs found under internal/xds/generate/testdata")
	}
	return out
}

// goldenDirs are the directories of the xDS generator's golden outputs
// (not its fuzz corpus, which shares testdata), sorted.
func goldenDirs(tb testing.TB) []string {
	dirs, err := filepath.Glob(filepath.Join("..", "..", "xds", "generate", "testdata", "*"))
	if err != nil {
		tb.Fatal(err)
	}
	return slices.DeleteFunc(dirs, func(d string) bool { return filepath.Base(d) == "fuzz" })
}

func readGolden[M proto.Message](tb testing.TB, path string, newM func() M, name func(M) string) map[string]M {
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	out := map[string]M{}
	for _, raw := range raws {
		m := newM()
		if err := protojson.Unmarshal(raw, m); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		out[name(m)] = m
	}
	return out
}

// wireOf serializes resources as a DiscoveryResponse, sorted by name.
func wireOf[M proto.Message](tb testing.TB, rs map[string]M) []byte {
	resp := &discovery.DiscoveryResponse{}
	for _, name := range sortedKeys(rs) {
		a, err := anypb.New(rs[name])
		if err != nil {
			tb.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// decodeWire decodes a DiscoveryResponse's resources as M, keyed by name;
// nil when data is not a DiscoveryResponse. Resources that do not decode
// are skipped; a later resource of the same name replaces an earlier one.
func decodeWire[M proto.Message](data []byte, newM func() M, name func(M) string) map[string]M {
	var resp discovery.DiscoveryResponse
	if proto.Unmarshal(data, &resp) != nil {
		return nil
	}
	out := map[string]M{}
	for _, a := range resp.GetResources() {
		m := newM()
		if proto.Unmarshal(a.GetValue(), m) == nil {
			out[name(m)] = m
		}
	}
	return out
}

func cloneResources(r *xdsclient.Resources) *xdsclient.Resources {
	return &xdsclient.Resources{
		Listeners: cloneMap(r.Listeners), Routes: cloneMap(r.Routes),
		Clusters: cloneMap(r.Clusters), Endpoints: cloneMap(r.Endpoints),
	}
}

func cloneMap[M proto.Message](m map[string]M) map[string]M {
	out := make(map[string]M, len(m))
	for k, v := range m {
		out[k] = proto.CloneOf(v)
	}
	return out
}

// rekey keys every resource by its (possibly mutated) name again, as the
// xDS client does; of two resources that now share a name, one is kept.
func rekey(r *xdsclient.Resources) *xdsclient.Resources {
	return &xdsclient.Resources{
		Listeners: rekeyMap(r.Listeners, (*listener.Listener).GetName),
		Routes:    rekeyMap(r.Routes, (*route.RouteConfiguration).GetName),
		Clusters:  rekeyMap(r.Clusters, (*cluster.Cluster).GetName),
		Endpoints: rekeyMap(r.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName),
	}
}

func rekeyMap[M proto.Message](m map[string]M, name func(M) string) map[string]M {
	out := make(map[string]M, len(m))
	for _, k := range sortedKeys(m) {
		out[name(m[k])] = m[k]
	}
	return out
}

// resourceNames lists the names the resources give each other (clusters,
// route configurations, EDS services), for mutations that swap references.
func resourceNames(r *xdsclient.Resources) []string {
	names := append(sortedKeys(r.Clusters), sortedKeys(r.Routes)...)
	return append(names, sortedKeys(r.Endpoints)...)
}

// mutator changes protobuf messages as its data (the fuzzer's input)
// directs. When data runs out every choice is 0.
type mutator struct {
	data  []byte
	names []string
}

func (m *mutator) byte() byte {
	if len(m.data) == 0 {
		return 0
	}
	b := m.data[0]
	m.data = m.data[1:]
	return b
}

func (m *mutator) uint64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(m.byte())
	}
	return v
}

// mutateOne picks one resource and mutates one field path of it.
func (m *mutator) mutateOne(r *xdsclient.Resources) {
	var msgs []proto.Message
	switch m.byte() % 4 {
	case 0:
		msgs = valuesOf(r.Listeners)
	case 1:
		msgs = valuesOf(r.Routes)
	case 2:
		msgs = valuesOf(r.Clusters)
	default:
		msgs = valuesOf(r.Endpoints)
	}
	if len(msgs) == 0 {
		return
	}
	m.mutate(msgs[int(m.byte())%len(msgs)].ProtoReflect(), 0)
}

func valuesOf[M proto.Message](rs map[string]M) []proto.Message {
	out := make([]proto.Message, 0, len(rs))
	for _, k := range sortedKeys(rs) {
		out = append(out, rs[k])
	}
	return out
}

// maxMutateDepth bounds how deep one mutation descends.
const maxMutateDepth = 16

// mutate changes one field somewhere in msg: it picks a field (usually one
// that is set), then clears it, sets it, or descends into it.
func (m *mutator) mutate(msg protoreflect.Message, depth int) {
	if msg.Descriptor().FullName() == "google.protobuf.Any" {
		m.mutateAny(msg, depth)
		return
	}
	fd := m.pickField(msg)
	if fd == nil {
		return
	}
	op := m.byte()
	switch {
	case op%16 == 0 || depth >= maxMutateDepth:
		msg.Clear(fd)
	case fd.IsList():
		m.mutateList(msg.Mutable(fd).List(), fd, op, depth)
	case fd.IsMap():
		m.mutateMap(msg.Mutable(fd).Map(), fd, depth)
	case fd.Message() != nil:
		m.mutate(msg.Mutable(fd).Message(), depth+1)
	default:
		msg.Set(fd, m.scalar(fd))
	}
}

// pickField picks a field of msg: one that is set, three times in four.
func (m *mutator) pickField(msg protoreflect.Message) protoreflect.FieldDescriptor {
	fields := msg.Descriptor().Fields()
	if fields.Len() == 0 {
		return nil
	}
	b := m.byte()
	if b%4 != 0 {
		var set []protoreflect.FieldDescriptor
		msg.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			set = append(set, fd)
			return true
		})
		if len(set) > 0 {
			slices.SortFunc(set, func(a, b protoreflect.FieldDescriptor) int { return int(a.Number() - b.Number()) })
			return set[int(b/4)%len(set)]
		}
	}
	return fields.Get(int(m.byte()) % fields.Len())
}

func (m *mutator) mutateList(l protoreflect.List, fd protoreflect.FieldDescriptor, op byte, depth int) {
	n := l.Len()
	switch {
	case n > 0 && op%16 < 9: // change an element
		i := int(m.byte()) % n
		if fd.Message() != nil {
			m.mutate(l.Get(i).Message(), depth+1)
		} else {
			l.Set(i, m.scalar(fd))
		}
	case n > 0 && op%16 < 11: // drop the tail
		l.Truncate(int(m.byte()) % n)
	case n > 0 && op%16 < 13 && n < 64: // duplicate an element
		v := l.Get(int(m.byte()) % n)
		if fd.Message() != nil {
			v = protoreflect.ValueOfMessage(proto.Clone(v.Message().Interface()).ProtoReflect())
		}
		l.Append(v)
	case n < 64: // add an element
		if fd.Message() != nil {
			v := l.NewElement()
			m.mutate(v.Message(), depth+1)
			l.Append(v)
		} else {
			l.Append(m.scalar(fd))
		}
	}
}

func (m *mutator) mutateMap(mp protoreflect.Map, fd protoreflect.FieldDescriptor, depth int) {
	var keys []protoreflect.MapKey
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
	var key protoreflect.MapKey
	if b := m.byte(); len(keys) > 0 && b%4 != 0 {
		key = keys[int(b/4)%len(keys)]
		if b%8 == 1 {
			mp.Clear(key)
			return
		}
	} else {
		key = m.scalar(fd.MapKey()).MapKey()
	}
	if fd.MapValue().Message() != nil {
		m.mutate(mp.Mutable(key).Message(), depth+1)
		return
	}
	mp.Set(key, m.scalar(fd.MapValue()))
}

// anyTypes are the typed configs a mutation may put in an Any.
var anyTypes = []string{
	"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
	"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
	"type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
	"type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
	"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	"type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
	"type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	"type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
	"type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
}

// mutateAny mutates the message inside an Any (or, rarely, its type).
func (m *mutator) mutateAny(a protoreflect.Message, depth int) {
	fields := a.Descriptor().Fields()
	urlFD, valueFD := fields.ByName("type_url"), fields.ByName("value")
	if b := m.byte(); b%16 == 0 {
		a.Set(urlFD, protoreflect.ValueOfString(anyTypes[int(b/16)%len(anyTypes)]))
		return
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(a.Get(urlFD).String())
	if err != nil {
		return
	}
	inner := mt.New()
	if proto.Unmarshal(a.Get(valueFD).Bytes(), inner.Interface()) != nil {
		return
	}
	m.mutate(inner, depth+1)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(inner.Interface())
	if err != nil {
		return
	}
	a.Set(valueFD, protoreflect.ValueOfBytes(b))
}

// interestingInts are edge cases for integer fields (and the seconds and
// nanos of durations, the values of wrappers).
var interestingInts = []int64{
	0, 1, -1, 2, 3, 5, 10, 100, 101, 199, 200, 599, 600, 1000, 65535, 65536,
	math.MaxInt32, math.MinInt32, math.MaxUint32, math.MaxInt64, math.MinInt64,
	999999999, 1000000000, 315576000000, 315576000001, -315576000001, 1 << 31, 1<<32 + 1,
}

// interestingStrings are edge cases for string fields: regular
// expressions (some invalid, some expensive), header names, domains,
// addresses, retry and filter names.
var interestingStrings = []string{
	"", "*", "/", "a", "/a/b", "?", "#", ".*", "(", "[", "a{1000}", "(a{1000}){1000}", "((((((((((a*)*)*)*)*)*)*)*)*)*)",
	"(?i)x", "\\", "\n", "a\r\nb", "\x00", "é", "*.example.com", "example.*", "*.", ".", "127.0.0.1", "::1", "[::1]",
	"0.0.0.0", "localhost", "999.1.1.1", "0", "-1", "x-header", "X-Fuzz-Status", ":authority", ":path", ":method",
	":status", "host", "content-length", "transfer-encoding", "connection", "te", "5xx", "gateway-error,reset",
	"retriable-status-codes", "retriable-headers", "connect-failure,refused-stream", "cancelled,deadline-exceeded",
	"envoy.filters.http.router", "envoy.filters.http.fault", "envoy.filters.http.cors",
	"envoy.filters.network.http_connection_manager", "envoy.retry_host_predicates.previous_hosts",
	"envoy.retry_priorities.previous_priorities", "http_proxy", "%", "%d", "http://x", "https", "\\1",
	"tls", "raw_buffer", "default", "ROOTCA", "envoy.transport_sockets.tls", "envoy.filters.listener.tls_inspector",
	"spiffe://cluster.local/ns/default/sa/reviews", "ECDHE-ECDSA-AES128-GCM-SHA256", "X25519", "h2", "http/1.1",
}

func (m *mutator) integer() int64 {
	b := m.byte()
	switch {
	case b < 200:
		return interestingInts[int(b)%len(interestingInts)]
	case b < 230:
		return int64(m.byte())
	}
	return int64(m.uint64())
}

func (m *mutator) string() string {
	b := m.byte()
	switch {
	case b < 150:
		return interestingStrings[int(b)%len(interestingStrings)]
	case b < 200 && len(m.names) > 0:
		return m.names[int(m.byte())%len(m.names)]
	case b < 210:
		return strings.Repeat(m.string(), 1+int(m.byte()))
	}
	n := min(int(m.byte()), len(m.data))
	s := string(m.data[:n])
	m.data = m.data[n:]
	return s
}

// scalar returns a value for a non-message field (or map key) of fd's kind.
func (m *mutator) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(m.byte()%2 == 1)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if b := m.byte(); b < 240 && vals.Len() > 0 {
			return protoreflect.ValueOfEnum(vals.Get(int(b) % vals.Len()).Number())
		}
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(m.integer())))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(m.integer()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(m.integer())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(m.integer()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(m.integer()))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(m.float()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(m.float())
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(m.string()))
	}
	return protoreflect.ValueOfString(m.string())
}

func (m *mutator) float() float64 {
	fs := []float64{0, -1, 0.5, 1, 50, 99.9999, 100, 100.0001, 101, 1e6, math.MaxFloat64, math.Inf(1), math.Inf(-1), math.NaN(), math.SmallestNonzeroFloat64}
	return fs[int(m.byte())%len(fs)]
}

// TestToLoopback: after toLoopback, no socket address of a cluster or an
// endpoint assignment names anything but the loopback upstream, so the
// fuzz targets cannot send a request elsewhere.
func TestToLoopback(t *testing.T) {
	const up = "127.0.0.1:9"
	for _, r := range goldenResources(t) {
		lo := toLoopback(r, up)
		var msgs []proto.Message
		msgs = append(msgs, valuesOf(lo.Clusters)...)
		msgs = append(msgs, valuesOf(lo.Endpoints)...)
		n := 0
		for _, m := range msgs {
			b, err := protojson.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			findSocketAddresses(v, func(sa map[string]any) {
				n++
				if sa["address"] != "127.0.0.1" || (sa["portValue"] != nil && sa["portValue"] != float64(9)) {
					t.Errorf("socket address %v left in %s", sa, b)
				}
			})
		}
		if n == 0 {
			t.Fatal("no socket address found: the check would pass vacuously")
		}
		if r.Clusters[sortedKeys(r.Clusters)[0]] == lo.Clusters[sortedKeys(lo.Clusters)[0]] {
			t.Fatal("toLoopback modified its input")
		}
	}
}

// findSocketAddresses calls f with every "socketAddress" object in v.
func findSocketAddresses(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if sa, ok := e.(map[string]any); ok && k == "socketAddress" {
				f(sa)
			}
			findSocketAddresses(e, f)
		}
	case []any:
		for _, e := range x {
			findSocketAddresses(e, f)
		}
	}
}
