// Command gen writes ../decode_gen.go: a decoder for every message type
// weft-proxy reads from xDS, reached from the roots below, that fills the
// types protoc-gen-go generated (go-control-plane's, the well-known
// types) field by field, the way protobuf-go's table-driven decoder does,
// without initialising protobuf-go's per-type reflection tables.
//
//	go generate ./internal/proxy/xdswire
//
// The Go field of each proto field is found by its struct tag
// (`protobuf:"bytes,3,..."`), oneof wrapper types through the type's
// OneofWrappers, so the output follows whatever go-control-plane version
// go.mod pins. Regenerate after changing it; TestGeneratedIsCurrent fails
// otherwise.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	trace "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filelog "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	cors "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwt "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	oauth2 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	extauthznet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	uritemplate "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	rawbuffer "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	authsvc "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	ratelimitsvc "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"
)

// roots are the messages weft-proxy decodes or encodes: the xDS
// requests, responses and resources, and every typed_config it reads. Everything they reach is
// generated too.
var roots = []proto.Message{
	(*discovery.DeltaDiscoveryRequest)(nil),
	(*discovery.DeltaDiscoveryResponse)(nil),
	(*discovery.DiscoveryRequest)(nil),
	(*discovery.DiscoveryResponse)(nil),
	(*discovery.Resource)(nil),
	(*listener.Listener)(nil),
	(*route.RouteConfiguration)(nil),
	(*route.VirtualHost)(nil),
	(*route.FilterConfig)(nil),
	(*cluster.Cluster)(nil),
	(*endpoint.ClusterLoadAssignment)(nil),
	(*hcm.HttpConnectionManager)(nil),
	(*router.Router)(nil),
	(*tcpproxy.TcpProxy)(nil),
	(*fault.HTTPFault)(nil),
	(*cors.CorsPolicy)(nil),
	(*rbachttp.RBAC)(nil),
	(*rbachttp.RBACPerRoute)(nil),
	(*rbacnet.RBAC)(nil),
	(*extauthz.ExtAuthz)(nil),
	(*extauthz.ExtAuthzPerRoute)(nil),
	(*authsvc.CheckResponse)(nil),
	(*extauthznet.ExtAuthz)(nil),
	(*jwt.JwtAuthentication)(nil),
	(*jwt.PerRouteConfig)(nil),
	(*oauth2.OAuth2)(nil),
	(*lrl.LocalRateLimit)(nil),
	(*grl.RateLimit)(nil),
	(*grl.RateLimitPerRoute)(nil),
	(*ratelimitsvc.RateLimitResponse)(nil),
	(*tlsv3.UpstreamTlsContext)(nil),
	(*tlsv3.DownstreamTlsContext)(nil),
	(*rawbuffer.RawBuffer)(nil),
	(*upstreamhttp.HttpProtocolOptions)(nil),
	(*filelog.FileAccessLog)(nil),
	(*accesslog.AccessLog)(nil),
	(*trace.OpenTelemetryConfig)(nil),
	(*uritemplate.UriTemplateMatchConfig)(nil),
	(*previoushosts.PreviousHostsPredicate)(nil),
	(*previouspriorities.PreviousPrioritiesConfig)(nil),
	(*httpinspector.HttpInspector)(nil),
	(*origdst.OriginalDst)(nil),
	(*tlsinspector.TlsInspector)(nil),
	(*structpb.Struct)(nil),
}

func main() {
	out := flag.String("o", "decode_gen.go", "output file")
	flag.Parse()
	g := newGen()
	for _, r := range roots {
		g.reach(r.ProtoReflect().Descriptor())
	}
	src, err := g.write()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}

type gen struct {
	msgs    []protoreflect.MessageDescriptor
	seen    map[protoreflect.FullName]int // index in msgs
	imports map[string]string             // package path → name in the output
	names   map[string]bool               // names taken by imports
}

func newGen() *gen {
	return &gen{seen: map[protoreflect.FullName]int{}, imports: map[string]string{}, names: map[string]bool{
		"protowire": true, "proto": true, "errors": true, "fmt": true, "utf8": true, "math": true, "slices": true,
	}}
}

// reach adds md and every message type its fields reach.
func (g *gen) reach(md protoreflect.MessageDescriptor) {
	if _, ok := g.seen[md.FullName()]; ok || md.IsMapEntry() {
		return
	}
	g.seen[md.FullName()] = len(g.msgs)
	g.msgs = append(g.msgs, md)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			if v := fd.MapValue(); v.Kind() == protoreflect.MessageKind {
				g.reach(v.Message())
			}
		case fd.Kind() == protoreflect.MessageKind:
			g.reach(fd.Message())
		case fd.Kind() == protoreflect.GroupKind:
			log.Fatalf("%s: groups are not supported", fd.FullName())
		}
	}
}

// goType is the Go type protoc-gen-go generated for md.
func goType(md protoreflect.MessageDescriptor) reflect.Type {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		log.Fatalf("%s: %v", md.FullName(), err)
	}
	return reflect.TypeOf(mt.Zero().Interface()).Elem()
}

// pkgName is the name the output imports path under.
func (g *gen) pkgName(path string) string {
	if n, ok := g.imports[path]; ok {
		return n
	}
	parts := strings.Split(path, "/")
	base := parts[len(parts)-1]
	if len(parts) >= 2 && strings.HasPrefix(base, "v") && len(base) <= 3 {
		base = parts[len(parts)-2] + base
	}
	base = strings.NewReplacer("-", "", "_", "", ".", "").Replace(base)
	name := base
	for i := 2; g.names[name]; i++ {
		name = base + strconv.Itoa(i)
	}
	g.names[name] = true
	g.imports[path] = name
	return name
}

// typeExpr is Go source for t.
func (g *gen) typeExpr(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + g.typeExpr(t.Elem())
	case reflect.Slice:
		return "[]" + g.typeExpr(t.Elem())
	case reflect.Map:
		return "map[" + g.typeExpr(t.Key()) + "]" + g.typeExpr(t.Elem())
	}
	if t.PkgPath() == "" {
		return t.Name()
	}
	return g.pkgName(t.PkgPath()) + "." + t.Name()
}

// funcName is the decoder's name for md.
func (g *gen) funcName(md protoreflect.MessageDescriptor) string {
	return "dec" + strconv.Itoa(g.seen[md.FullName()])
}

// encName is the encoder's name for md.
func (g *gen) encName(md protoreflect.MessageDescriptor) string {
	return "enc" + strconv.Itoa(g.seen[md.FullName()])
}

// fieldTag is the field number in a protobuf struct tag.
func fieldTag(tag string) (int, bool) {
	parts := strings.Split(tag, ",")
	if len(parts) < 2 {
		return 0, false
	}
	n, err := strconv.Atoi(parts[1])
	return n, err == nil
}

// goFields maps field numbers of t to its struct fields, and those of
// its oneofs to the wrapper types (the wrapper's one field is the value).
type goField struct {
	name    string       // the struct field (for a oneof: the interface field)
	typ     reflect.Type // the struct field's type (for a oneof: the value's)
	wrapper reflect.Type // for a oneof member: the wrapper struct type
	wfield  string       // the wrapper's field
}

func goFields(md protoreflect.MessageDescriptor, t reflect.Type) map[int]goField {
	out := map[int]goField{}
	var oneofNames = map[string]string{} // proto oneof name → Go field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if n, ok := fieldTag(f.Tag.Get("protobuf")); ok {
			out[n] = goField{name: f.Name, typ: f.Type}
		}
		if o := f.Tag.Get("protobuf_oneof"); o != "" {
			oneofNames[o] = f.Name
		}
	}
	mt, _ := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if len(oneofNames) > 0 {
		ws := reflect.ValueOf(mt).Elem().FieldByName("OneofWrappers")
		if !ws.IsValid() {
			log.Fatalf("%s: no OneofWrappers on %T", md.FullName(), mt)
		}
		for i := 0; i < ws.Len(); i++ {
			wt := reflect.TypeOf(ws.Index(i).Interface()).Elem()
			wf := wt.Field(0)
			n, ok := fieldTag(wf.Tag.Get("protobuf"))
			if !ok {
				log.Fatalf("%s: wrapper %s has no field number", md.FullName(), wt)
			}
			fd := md.Fields().ByNumber(protoreflect.FieldNumber(n))
			if fd == nil || fd.ContainingOneof() == nil {
				log.Fatalf("%s: wrapper %s for unknown field %d", md.FullName(), wt, n)
			}
			out[n] = goField{name: oneofNames[string(fd.ContainingOneof().Name())], typ: wf.Type, wrapper: wt, wfield: wf.Name}
		}
	}
	return out
}

func (g *gen) write() ([]byte, error) {
	var body bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&body, format, a...) }

	// The dispatch from a Go type to its name, decoder and encoder: type
	// switches calling the functions directly (closures would be a
	// function of their own per type).
	order := make([]int, len(g.msgs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return g.msgs[order[a]].FullName() < g.msgs[order[b]].FullName() })
	typeSwitch := func(doc, sig, on, last string, body func(md protoreflect.MessageDescriptor) string) {
		w("%s%s {\nswitch %s {\n", doc, sig, on)
		for _, i := range order {
			md := g.msgs[i]
			w("case *%s:\n%s", g.typeExpr(goType(md)), body(md))
		}
		w("}\n%s\n}\n\n", last)
	}
	typeSwitch("// fullName is m's full name, or \"\" if m is not a type this package\n// decodes and encodes.\n",
		"func fullName(m proto.Message) string", "m.(type)", `return ""`,
		func(md protoreflect.MessageDescriptor) string { return fmt.Sprintf("return %q\n", md.FullName()) })
	typeSwitch("// decode resets m and decodes b into it; false if m is not a type\n// this package decodes.\n",
		"func decode(b []byte, m proto.Message) (bool, error)", "m := m.(type)", "return false, nil",
		func(md protoreflect.MessageDescriptor) string {
			return fmt.Sprintf("m.Reset()\nreturn true, %s(b, m, 0)\n", g.funcName(md))
		})
	typeSwitch("// encode appends m's encoding to b; false if m is not a type this\n// package encodes.\n",
		"func encode(b []byte, m proto.Message) ([]byte, bool)", "m := m.(type)", "return b, false",
		func(md protoreflect.MessageDescriptor) string {
			return fmt.Sprintf("return %s(b, m), true\n", g.encName(md))
		})

	for _, md := range g.msgs {
		if err := g.writeMessage(&body, md); err != nil {
			return nil, err
		}
		g.writeEncoder(&body, md)
	}

	var head bytes.Buffer
	head.WriteString("// Code generated by internal/proxy/xdswire/gen; DO NOT EDIT.\n\n")
	head.WriteString("package xdswire\n\nimport (\n\t\"math\"\n\t\"slices\"\n\t\"unicode/utf8\"\n\n\t\"google.golang.org/protobuf/encoding/protowire\"\n\t\"google.golang.org/protobuf/proto\"\n")
	paths := make([]string, 0, len(g.imports))
	for p := range g.imports {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(&head, "\t%s %q\n", g.imports[p], p)
	}
	head.WriteString(")\n\nvar (\n\t_ = math.Float32frombits\n\t_ = utf8.Valid\n\t_ = slices.Sort[[]int]\n)\n\n")
	head.Write(body.Bytes())
	src, err := format.Source(head.Bytes())
	if err != nil {
		return head.Bytes(), fmt.Errorf("formatting: %w", err)
	}
	return src, nil
}

// wireType is the wire type a non-packed value of fd has.
func wireType(k protoreflect.Kind) string {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
		protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return "protowire.VarintType"
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return "protowire.Fixed32Type"
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return "protowire.Fixed64Type"
	}
	return "protowire.BytesType"
}

// numeric is, for each numeric kind, the protowire function that reads a
// value and the conversion of what it read (sv) to the field's value
// (before the conversion to the field's Go type): protobuf-go's.
var numeric = map[protoreflect.Kind]struct{ consume, conv string }{
	protoreflect.BoolKind:     {"ConsumeVarint", "sv != 0"},
	protoreflect.EnumKind:     {"ConsumeVarint", "int32(sv)"},
	protoreflect.Int32Kind:    {"ConsumeVarint", "int32(sv)"},
	protoreflect.Sint32Kind:   {"ConsumeVarint", "int32(protowire.DecodeZigZag(sv & math.MaxUint32))"},
	protoreflect.Uint32Kind:   {"ConsumeVarint", "uint32(sv)"},
	protoreflect.Int64Kind:    {"ConsumeVarint", "int64(sv)"},
	protoreflect.Sint64Kind:   {"ConsumeVarint", "protowire.DecodeZigZag(sv)"},
	protoreflect.Uint64Kind:   {"ConsumeVarint", "sv"},
	protoreflect.Fixed32Kind:  {"ConsumeFixed32", "sv"},
	protoreflect.Sfixed32Kind: {"ConsumeFixed32", "int32(sv)"},
	protoreflect.FloatKind:    {"ConsumeFixed32", "math.Float32frombits(sv)"},
	protoreflect.Fixed64Kind:  {"ConsumeFixed64", "sv"},
	protoreflect.Sfixed64Kind: {"ConsumeFixed64", "int64(sv)"},
	protoreflect.DoubleKind:   {"ConsumeFixed64", "math.Float64frombits(sv)"},
}

// scalar is Go source that consumes one value of kind k from the
// []byte variable src, advancing it, and declares v: the value as Go type
// t. On malformed input it returns the error. utf8Name is the field's
// name for the error on invalid UTF-8 ("": no check). It declares
// variables, so it goes in a block of its own.
func (g *gen) scalar(k protoreflect.Kind, t reflect.Type, utf8Name, src string) string {
	te := g.typeExpr(t)
	var s strings.Builder
	consume := func(fn string) {
		fmt.Fprintf(&s, "sv, sn := protowire.%s(%s)\nif sn < 0 { return errParse }\n%s = %s[sn:]\n", fn, src, src, src)
	}
	if c, ok := numeric[k]; ok {
		consume(c.consume)
		fmt.Fprintf(&s, "v := %s("+c.conv+")\n", te)
		return s.String()
	}
	consume("ConsumeBytes")
	if k == protoreflect.StringKind {
		if utf8Name != "" {
			fmt.Fprintf(&s, "if !utf8.Valid(sv) { return invalidUTF8(%q) }\n", utf8Name)
		}
		fmt.Fprintf(&s, "v := %s(sv)\n", te)
	} else {
		// protobuf-go copies bytes, and a present empty value is an
		// empty, non-nil slice.
		s.WriteString("v := append(emptyBuf[:], sv...)\n")
	}
	return s.String()
}

// checksUTF8 says whether protobuf-go validates fd's strings.
func checksUTF8(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.StringKind && fd.ParentFile().Syntax() == protoreflect.Proto3
}

func (g *gen) writeMessage(out *bytes.Buffer, md protoreflect.MessageDescriptor) error {
	t := goType(md)
	if md.ParentFile().Syntax() == protoreflect.Editions {
		return fmt.Errorf("%s: editions files are not supported", md.FullName())
	}
	gf := goFields(md, t)
	w := func(format string, a ...any) { fmt.Fprintf(out, format, a...) }
	w("// %s decodes %s.\n", g.funcName(md), md.FullName())
	w("func %s(b []byte, m *%s, depth int) error {\n", g.funcName(md), g.typeExpr(t))
	w("if depth > maxDepth { return errDepth }\n")
	w("for len(b) > 0 {\n")
	// protowire allows field numbers up to 2^31-1 (for MessageSet);
	// protobuf-go refuses any above protowire.MaxValidNumber.
	w("num, typ, n := protowire.ConsumeTag(b)\nif n < 0 || num > protowire.MaxValidNumber { return errParse }\nb = b[n:]\n")
	fields := md.Fields()
	if fields.Len() > 0 {
		w("switch num {\n")
	}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		f, ok := gf[int(fd.Number())]
		if !ok {
			return fmt.Errorf("%s: no Go field", fd.FullName())
		}
		utf8Name := ""
		if checksUTF8(fd) || (fd.IsMap() && (checksUTF8(fd.MapKey()) || checksUTF8(fd.MapValue()))) {
			utf8Name = string(fd.FullName())
		}
		w("case %d:\n", fd.Number())
		switch {
		case fd.IsMap():
			g.writeMap(out, fd, f, utf8Name)
		case fd.IsList():
			elem := f.typ.Elem()
			if fd.Kind() == protoreflect.MessageKind {
				w("if typ == protowire.BytesType {\n")
				w("x, n := protowire.ConsumeBytes(b)\nif n < 0 { return errParse }\nb = b[n:]\n")
				w("e := new(%s)\n", g.typeExpr(elem.Elem()))
				w("if err := %s(x, e, depth+1); err != nil { return err }\n", g.funcName(fd.Message()))
				w("m.%s = append(m.%s, e)\ncontinue\n}\n", f.name, f.name)
				break
			}
			if wt := wireType(fd.Kind()); wt != "protowire.BytesType" {
				// Packed or not, as protobuf-go accepts both.
				w("if typ == protowire.BytesType {\n")
				w("x, n := protowire.ConsumeBytes(b)\nif n < 0 { return errParse }\nb = b[n:]\n")
				w("for len(x) > 0 {\n%sm.%s = append(m.%s, v)\n}\ncontinue\n}\n",
					g.scalar(fd.Kind(), elem, "", "x"), f.name, f.name)
				w("if typ == %s {\n%sm.%s = append(m.%s, v)\ncontinue\n}\n", wt, g.scalar(fd.Kind(), elem, "", "b"), f.name, f.name)
				break
			}
			w("if typ == protowire.BytesType {\n%sm.%s = append(m.%s, v)\ncontinue\n}\n", g.scalar(fd.Kind(), elem, utf8Name, "b"), f.name, f.name)
		case f.wrapper != nil: // a oneof member
			wt := g.typeExpr(f.wrapper)
			w("if typ == %s {\n", wireType(fd.Kind()))
			if fd.Kind() == protoreflect.MessageKind {
				w("x, n := protowire.ConsumeBytes(b)\nif n < 0 { return errParse }\nb = b[n:]\n")
				w("o, ok := m.%s.(*%s)\n", f.name, wt)
				w("if !ok || o.%s == nil {\no = &%s{%s: new(%s)}\nm.%s = o\n}\n", f.wfield, wt, f.wfield, g.typeExpr(f.typ.Elem()), f.name)
				w("if err := %s(x, o.%s, depth+1); err != nil { return err }\ncontinue\n}\n", g.funcName(fd.Message()), f.wfield)
				break
			}
			w("%sm.%s = &%s{%s: v}\ncontinue\n}\n", g.scalar(fd.Kind(), f.typ, utf8Name, "b"), f.name, wt, f.wfield)
		case fd.Kind() == protoreflect.MessageKind:
			w("if typ == protowire.BytesType {\n")
			w("x, n := protowire.ConsumeBytes(b)\nif n < 0 { return errParse }\nb = b[n:]\n")
			w("if m.%s == nil { m.%s = new(%s) }\n", f.name, f.name, g.typeExpr(f.typ.Elem()))
			w("if err := %s(x, m.%s, depth+1); err != nil { return err }\ncontinue\n}\n", g.funcName(fd.Message()), f.name)
		case f.typ.Kind() == reflect.Pointer: // proto3 optional
			w("if typ == %s {\n%sm.%s = &v\ncontinue\n}\n", wireType(fd.Kind()), g.scalar(fd.Kind(), f.typ.Elem(), utf8Name, "b"), f.name)
		default:
			w("if typ == %s {\n%sm.%s = v\ncontinue\n}\n", wireType(fd.Kind()), g.scalar(fd.Kind(), f.typ, utf8Name, "b"), f.name)
		}
	}
	if fields.Len() > 0 {
		w("}\n")
	}
	w("// An unknown field, or a known one in the wrong wire type: skipped,\n// as protobuf-go does (it keeps them as unknown fields).\n")
	w("n = protowire.ConsumeFieldValue(num, typ, b)\nif n < 0 { return errParse }\nb = b[n:]\n")
	w("}\nreturn nil\n}\n\n")
	return nil
}

// writeMap writes the case body of a map field: one entry, its key and
// value defaulting to zero when absent.
func (g *gen) writeMap(out *bytes.Buffer, fd protoreflect.FieldDescriptor, f goField, utf8Name string) {
	w := func(format string, a ...any) { fmt.Fprintf(out, format, a...) }
	kd, vd := fd.MapKey(), fd.MapValue()
	kt, vt := f.typ.Key(), f.typ.Elem()
	w("if typ == protowire.BytesType {\n")
	w("x, n := protowire.ConsumeBytes(b)\nif n < 0 { return errParse }\nb = b[n:]\n")
	w("var k %s\n", g.typeExpr(kt))
	if vd.Kind() == protoreflect.MessageKind {
		w("var val *%s\n", g.typeExpr(vt.Elem()))
	} else {
		w("var val %s\n", g.typeExpr(vt))
	}
	w("for len(x) > 0 {\n")
	w("num, typ, n := protowire.ConsumeTag(x)\nif n < 0 || num > protowire.MaxValidNumber { return errParse }\nx = x[n:]\n")
	w("switch {\n")
	kUTF8, vUTF8 := "", ""
	if checksUTF8(kd) {
		kUTF8 = utf8Name
	}
	if checksUTF8(vd) {
		vUTF8 = utf8Name
	}
	w("case num == 1 && typ == %s:\n%sk = v\ncontinue\n", wireType(kd.Kind()), g.scalar(kd.Kind(), kt, kUTF8, "x"))
	if vd.Kind() == protoreflect.MessageKind {
		w("case num == 2 && typ == protowire.BytesType:\n")
		w("y, n := protowire.ConsumeBytes(x)\nif n < 0 { return errParse }\nx = x[n:]\n")
		w("if val == nil { val = new(%s) }\n", g.typeExpr(vt.Elem()))
		w("if err := %s(y, val, depth+1); err != nil { return err }\ncontinue\n", g.funcName(vd.Message()))
	} else {
		w("case num == 2 && typ == %s:\n%sval = v\ncontinue\n", wireType(vd.Kind()), g.scalar(vd.Kind(), vt, vUTF8, "x"))
	}
	w("}\n")
	w("n = protowire.ConsumeFieldValue(num, typ, x)\nif n < 0 { return errParse }\nx = x[n:]\n")
	w("}\n")
	if vd.Kind() == protoreflect.MessageKind {
		w("if val == nil { val = new(%s) }\n", g.typeExpr(vt.Elem()))
	}
	w("if m.%s == nil { m.%s = make(%s) }\n", f.name, f.name, g.typeExpr(f.typ))
	w("m.%s[k] = val\ncontinue\n}\n", f.name)
}

// appendScalar is Go source appending v (Go source of a value of kind k)
// to b, without its tag.
func appendScalar(k protoreflect.Kind, v string) string {
	switch k {
	case protoreflect.BoolKind:
		return "b = protowire.AppendVarint(b, protowire.EncodeBool(bool(" + v + ")))\n"
	case protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Int64Kind:
		return "b = protowire.AppendVarint(b, uint64(int64(" + v + ")))\n"
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return "b = protowire.AppendVarint(b, uint64(" + v + "))\n"
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return "b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(" + v + ")))\n"
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		return "b = protowire.AppendFixed32(b, uint32(" + v + "))\n"
	case protoreflect.FloatKind:
		return "b = protowire.AppendFixed32(b, math.Float32bits(float32(" + v + ")))\n"
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		return "b = protowire.AppendFixed64(b, uint64(" + v + "))\n"
	case protoreflect.DoubleKind:
		return "b = protowire.AppendFixed64(b, math.Float64bits(float64(" + v + ")))\n"
	case protoreflect.StringKind:
		return "b = protowire.AppendString(b, string(" + v + "))\n"
	}
	return "b = protowire.AppendBytes(b, " + v + ")\n"
}

// nonZero is Go source true when v, a proto3 scalar without presence, is
// encoded: protobuf-go leaves out zero values, but not -0.0.
func nonZero(k protoreflect.Kind, v string) string {
	switch k {
	case protoreflect.BoolKind:
		return v
	case protoreflect.StringKind, protoreflect.BytesKind:
		return "len(" + v + ") > 0"
	case protoreflect.FloatKind:
		return "math.Float32bits(float32(" + v + ")) != 0"
	case protoreflect.DoubleKind:
		return "math.Float64bits(float64(" + v + ")) != 0"
	}
	return v + " != 0"
}

// tag is Go source appending field num's tag in wire type wt.
func tag(num protoreflect.FieldNumber, wt string) string {
	return fmt.Sprintf("b = protowire.AppendTag(b, %d, %s)\n", num, wt)
}

// writeEncoder writes md's deterministic encoder: fields in protobuf-go's
// order, map entries sorted by key, repeated scalars packed — protobuf-go's
// deterministic encoding, byte for byte.
func (g *gen) writeEncoder(out *bytes.Buffer, md protoreflect.MessageDescriptor) {
	t := goType(md)
	gf := goFields(md, t)
	w := func(format string, a ...any) { fmt.Fprintf(out, format, a...) }
	w("// %s appends the deterministic encoding of %s.\n", g.encName(md), md.FullName())
	w("func %s(b []byte, m *%s) []byte {\nif m == nil { return b }\n", g.encName(md), g.typeExpr(t))
	var fds []protoreflect.FieldDescriptor
	for i := 0; i < md.Fields().Len(); i++ {
		fds = append(fds, md.Fields().Get(i))
	}
	// protobuf-go's order (its LegacyFieldOrder, kept for compatibility
	// with golang/protobuf's output): fields outside oneofs by number, then
	// the oneofs in declaration order, each's members by number.
	inOneof := func(fd protoreflect.FieldDescriptor) bool {
		return fd.ContainingOneof() != nil && !fd.ContainingOneof().IsSynthetic()
	}
	sort.Slice(fds, func(i, j int) bool {
		x, y := fds[i], fds[j]
		if inOneof(x) != inOneof(y) {
			return !inOneof(x)
		}
		if inOneof(x) && x.ContainingOneof() != y.ContainingOneof() {
			return x.ContainingOneof().Index() < y.ContainingOneof().Index()
		}
		return x.Number() < y.Number()
	})
	for _, fd := range fds {
		f := gf[int(fd.Number())]
		fv := "m." + f.name
		switch {
		case fd.IsMap():
			kd, vd := fd.MapKey(), fd.MapValue()
			w("if len(%s) > 0 {\n", fv)
			w("keys := make([]%s, 0, len(%s))\nfor k := range %s { keys = append(keys, k) }\n", g.typeExpr(f.typ.Key()), fv, fv)
			w("slices.Sort(keys)\n")
			w("for _, k := range keys {\nv := %s[k]\n", fv)
			w("%sat := len(b)\nb = append(b, 0, 0, 0, 0, 0)\n", tag(fd.Number(), "protowire.BytesType"))
			w("%s%s", tag(1, wireType(kd.Kind())), appendScalar(kd.Kind(), "k"))
			if vd.Kind() == protoreflect.MessageKind {
				w("%sat2 := len(b)\nb = append(b, 0, 0, 0, 0, 0)\nb = %s(b, v)\nb = finishLen(b, at2)\n", tag(2, "protowire.BytesType"), g.encName(vd.Message()))
			} else {
				w("%s%s", tag(2, wireType(vd.Kind())), appendScalar(vd.Kind(), "v"))
			}
			w("b = finishLen(b, at)\n}\n}\n")
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			w("for _, v := range %s {\n%sat := len(b)\nb = append(b, 0, 0, 0, 0, 0)\nb = %s(b, v)\nb = finishLen(b, at)\n}\n",
				fv, tag(fd.Number(), "protowire.BytesType"), g.encName(fd.Message()))
		case fd.IsList() && fd.IsPacked():
			w("if len(%s) > 0 {\n%sat := len(b)\nb = append(b, 0, 0, 0, 0, 0)\n", fv, tag(fd.Number(), "protowire.BytesType"))
			w("for _, v := range %s {\n%s}\nb = finishLen(b, at)\n}\n", fv, appendScalar(fd.Kind(), "v"))
		case fd.IsList():
			w("for _, v := range %s {\n%s%s}\n", fv, tag(fd.Number(), wireType(fd.Kind())), appendScalar(fd.Kind(), "v"))
		case f.wrapper != nil:
			wt := g.typeExpr(f.wrapper)
			w("if o, ok := %s.(*%s); ok {\n", fv, wt)
			if fd.Kind() == protoreflect.MessageKind {
				// A oneof holding a nil message is encoded as empty.
				w("%sat := len(b)\nb = append(b, 0, 0, 0, 0, 0)\nif o.%s != nil { b = %s(b, o.%s) }\nb = finishLen(b, at)\n",
					tag(fd.Number(), "protowire.BytesType"), f.wfield, g.encName(fd.Message()), f.wfield)
			} else {
				w("%s%s", tag(fd.Number(), wireType(fd.Kind())), appendScalar(fd.Kind(), "o."+f.wfield))
			}
			w("}\n")
		case fd.Kind() == protoreflect.MessageKind:
			w("if %s != nil {\n%sat := len(b)\nb = append(b, 0, 0, 0, 0, 0)\nb = %s(b, %s)\nb = finishLen(b, at)\n}\n",
				fv, tag(fd.Number(), "protowire.BytesType"), g.encName(fd.Message()), fv)
		case f.typ.Kind() == reflect.Pointer:
			w("if %s != nil {\n%s%s}\n", fv, tag(fd.Number(), wireType(fd.Kind())), appendScalar(fd.Kind(), "*"+fv))
		default:
			w("if %s {\n%s%s}\n", nonZero(fd.Kind(), fv), tag(fd.Number(), wireType(fd.Kind())), appendScalar(fd.Kind(), fv))
		}
	}
	w("return b\n}\n\n")
}
