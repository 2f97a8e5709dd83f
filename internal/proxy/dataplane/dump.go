package dataplane

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/proxy/xdswire"
)

// ConfigDump renders the applied resources as JSON:
// {"listeners":[…],"routes":[…],"clusters":[…],"endpoints":[…],"versions":{…}},
// resources sorted by name, as protojson, loosely after Envoy's
// /config_dump. Safe from any goroutine; it reads the current runtime
// without locking. WriteConfigDump writes the same without holding it.
//
// The dump never fails because of one resource: a typed config
// (google.protobuf.Any) whose type this binary does not know is shown as
// {"@type": "<its type URL>", "value": "<its serialized bytes, base64>"},
// and a resource that still cannot be rendered is shown as
// {"name": "<name>", "dumpError": "<why>"}. Both are logged.
//
// The runtime keeps the resources' encodings, not the decoded messages
// (see runtime.res): they are decoded again here, one at a time.
func (d *Dataplane) ConfigDump() ([]byte, error) {
	var b bytes.Buffer
	if err := d.WriteConfigDump(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteConfigDump writes ConfigDump's JSON to w as it renders it, one
// resource at a time: a sidecar of a 1,000-service mesh dumps ~10 MB of
// JSON, and rendering it whole before writing it made its heap peak at
// three times its live heap. Only w's errors are returned.
func (d *Dataplane) WriteConfigDump(w io.Writer) error {
	rt := d.rt.Load()
	res := rt.res
	var wire xdsclient.Wire
	if res.Wire != nil {
		wire = *res.Wire
	}
	clusters, assignments := rt.clusterEncodings()
	s := &dumpStream{w: bufio.NewWriterSize(w, 32<<10), r: &dumper{log: d.warnDump}}
	s.str("{")
	dumpAll(s, "listeners", res.Listeners, wire.Listeners, func() *listenerv3.Listener { return &listenerv3.Listener{} })
	s.str(",")
	dumpAll(s, "routes", res.Routes, wire.Routes, func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} })
	s.str(",")
	dumpAll(s, "clusters", res.Clusters, clusters, func() *clusterv3.Cluster { return &clusterv3.Cluster{} })
	s.str(",")
	rt.dumpEndpoints(s, assignments)
	s.str(",\n  \"versions\": ")
	versions := res.Versions
	if versions == nil {
		versions = map[string]string{}
	}
	b, err := json.MarshalIndent(versions, "  ", "  ")
	if err != nil {
		return err // cannot happen: strings
	}
	s.bytes(b)
	s.str("\n}")
	if s.err != nil {
		return s.err
	}
	return s.w.Flush()
}

// dumpStream writes a config dump in json.MarshalIndent's layout (two
// spaces, each resource in a list indented to its place).
type dumpStream struct {
	w   *bufio.Writer
	r   *dumper
	buf bytes.Buffer // one resource, indented
	err error        // the first write error; later writes do nothing
}

func (s *dumpStream) str(v string) {
	if s.err == nil {
		_, s.err = s.w.WriteString(v)
	}
}

func (s *dumpStream) bytes(v []byte) {
	if s.err == nil {
		_, s.err = s.w.Write(v)
	}
}

// list writes "\n  \"key\": [" and then each resource next calls
// item for, then "]" at end.
func (s *dumpStream) list(key string) { s.str("\n  \"" + key + "\": [") }

// item writes one rendered resource of a list; i is its index.
func (s *dumpStream) item(i int, raw json.RawMessage) {
	if i > 0 {
		s.str(",")
	}
	s.str("\n    ")
	s.buf.Reset()
	if err := json.Indent(&s.buf, raw, "    ", "  "); err != nil {
		s.bytes(raw) // protojson's own output: valid JSON
		return
	}
	s.bytes(s.buf.Bytes())
}

// end closes a list of n resources.
func (s *dumpStream) end(n int) {
	if n > 0 {
		s.str("\n  ")
	}
	s.str("]")
}

// clusterEncodings are the encodings the runtime's clusters were built
// from, by cluster name, and those of their EDS assignments, by EDS
// service name (see retained).
func (rt *runtime) clusterEncodings() (clusters, assignments map[string]xdswire.Packed) {
	clusters = make(map[string]xdswire.Packed, len(rt.clusters))
	assignments = make(map[string]xdswire.Packed, len(rt.clusters))
	for name, c := range rt.clusters {
		cfg, eds, cla := c.Encodings()
		if !cfg.IsZero() {
			clusters[name] = cfg
		}
		if eds != "" && !cla.IsZero() {
			assignments[eds] = cla
		}
	}
	return clusters, assignments
}

// dumpEndpoints writes the runtime's endpoint assignments (those kept,
// and those encoded in wire, decoded one at a time) as the "endpoints"
// list, with the outlier state of their clusters filled in
// (cluster.DumpAssignment). An assignment is matched to the cluster of
// the same name.
func (rt *runtime) dumpEndpoints(s *dumpStream, wire map[string]xdswire.Packed) {
	// The hosts the proxy resolved for its STRICT_DNS and LOGICAL_DNS
	// clusters, as Envoy dumps them with include_eds: few.
	resolved := map[string]*endpointv3.ClusterLoadAssignment{}
	for name, c := range rt.clusters {
		if cla := c.ResolvedAssignment(); cla != nil {
			resolved[name] = cla
		}
	}
	names := make([]string, 0, len(rt.res.Endpoints)+len(wire)+len(resolved))
	for name := range wire {
		names = append(names, name)
	}
	for name := range rt.res.Endpoints {
		names = append(names, name)
	}
	for name := range resolved {
		names = append(names, name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	s.list("endpoints")
	for i, name := range names {
		if s.err != nil {
			return
		}
		cla := resolved[name]
		if cla == nil {
			if p, ok := wire[name]; ok {
				cla = &endpointv3.ClusterLoadAssignment{}
				if err := unpack(p, cla); err != nil {
					cla = &endpointv3.ClusterLoadAssignment{ClusterName: name} // cannot happen: encoded by the xDS client
				}
			} else {
				cla = rt.res.Endpoints[name]
			}
		}
		if c := rt.clusters[name]; c != nil {
			cla = c.DumpAssignment(cla)
		}
		s.item(i, s.r.marshal(name, cla))
	}
	s.end(len(names))
}

func (d *Dataplane) warnDump(msg string, args ...any) { d.log.Warn(msg, args...) }

// dumpAll writes the messages of m and those encoded in wire (decoded
// one at a time), sorted by name, as the list key.
func dumpAll[M proto.Message](s *dumpStream, key string, m map[string]M, wire map[string]xdswire.Packed, fresh func() M) {
	names := make([]string, 0, len(m)+len(wire))
	for k := range m {
		names = append(names, k)
	}
	for k := range wire {
		names = append(names, k)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	s.list(key)
	n := 0
	for _, k := range names {
		if s.err != nil {
			return // the client is gone: render nothing more
		}
		msg, ok := m[k]
		if b, enc := wire[k]; enc {
			msg = fresh()
			if err := unpack(b, msg); err != nil {
				s.item(n, dumpError(k, err))
				n++
				continue
			}
		} else if !ok {
			continue
		}
		s.item(n, s.r.marshal(k, msg))
		n++
	}
	s.end(n)
}

// dumper renders resources as protojson for ConfigDump.
type dumper struct {
	log func(msg string, args ...any)
}

// marshal renders one resource. The common case is one protojson call;
// only a resource holding an Any of an unknown type takes the slow path.
func (r *dumper) marshal(name string, m proto.Message) json.RawMessage {
	b, err := protojson.Marshal(m)
	if err == nil {
		return b
	}
	c := proto.Clone(m)
	unknown := map[string]bool{}
	if _, werr := wrapUnresolved(c.ProtoReflect(), unknown); werr == nil && len(unknown) > 0 {
		b, err = protojson.MarshalOptions{Resolver: unresolvedAsBytes{Types: protoregistry.GlobalTypes, unknown: unknown}}.Marshal(c)
		if err == nil {
			urls := make([]string, 0, len(unknown))
			for u := range unknown {
				urls = append(urls, u)
			}
			slices.Sort(urls)
			r.log("config dump: typed configs of a type this proxy does not know are shown as bytes", "resource", name, "types", urls)
			return b
		}
	} else if werr != nil {
		err = werr
	}
	r.log("config dump: resource cannot be rendered", "resource", name, "error", err)
	return dumpError(name, err)
}

// dumpError is the dump of a resource that cannot be rendered.
func dumpError(name string, err error) json.RawMessage {
	b, _ := json.Marshal(struct {
		Name  string `json:"name"`
		Error string `json:"dumpError"`
	}{name, err.Error()})
	return b
}

// wrapUnresolved rewrites, in place, every Any in m whose type URL does
// not resolve in this binary: its value becomes a google.protobuf.BytesValue
// holding the original bytes, and its URL is added to unknown, so that
// marshalling with unresolvedAsBytes renders it as {"@type": url, "value":
// base64}. Anys that resolve are decoded and searched as well (an HTTP
// connection manager carries its filters' configs in Anys); their value is
// re-encoded only when something inside changed. It reports whether m
// changed, and fails only when a known type's bytes do not decode.
func wrapUnresolved(m protoreflect.Message, unknown map[string]bool) (bool, error) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(a.GetTypeUrl()); err != nil {
			v, err := proto.Marshal(wrapperspb.Bytes(a.GetValue()))
			if err != nil {
				return false, err
			}
			a.Value = v
			unknown[a.GetTypeUrl()] = true
			return true, nil
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			return false, fmt.Errorf("decoding %s: %w", a.GetTypeUrl(), err)
		}
		changed, err := wrapUnresolved(inner.ProtoReflect(), unknown)
		if err != nil || !changed {
			return false, err
		}
		if a.Value, err = (proto.MarshalOptions{Deterministic: true}).Marshal(inner); err != nil {
			return false, err
		}
		return true, nil
	}
	changed := false
	var err error
	visit := func(v protoreflect.Message) bool {
		c, e := wrapUnresolved(v, unknown)
		changed = changed || c
		err = e
		return e == nil
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				if !visit(v.List().Get(i).Message()) {
					return false
				}
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { return visit(mv.Message()) })
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			visit(v.Message())
		}
		return err == nil
	})
	return changed, err
}

// unresolvedAsBytes resolves like the global registry, except that the
// type URLs wrapUnresolved rewrote resolve to google.protobuf.BytesValue,
// whose JSON form inside an Any is {"@type": url, "value": base64}.
type unresolvedAsBytes struct {
	*protoregistry.Types
	unknown map[string]bool
}

var bytesValueType = (*wrapperspb.BytesValue)(nil).ProtoReflect().Type()

func (u unresolvedAsBytes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if u.unknown[url] {
		return bytesValueType, nil
	}
	return u.Types.FindMessageByURL(url)
}

// unpack decodes p into m with protobuf-go, whose messages the dump
// renders (protojson) anyway.
func unpack(p xdswire.Packed, m proto.Message) error {
	b, err := p.Encoding()
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}
