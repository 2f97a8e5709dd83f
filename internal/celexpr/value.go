package celexpr

import (
	"fmt"
	"strings"
)

// ValueSupport describes the expressions a Value may be, for messages and
// docs.
const ValueSupport = "string literals ('v'), attributes (request.headers['name'], request.host, request.method, " +
	"request.path, request.url_path, request.scheme, request.protocol, request.id, request.useragent, request.referer, " +
	"request.query, response.code, response.grpc_status, response.headers['name'], source.address, source.port, " +
	"destination.address, destination.port, connection.mtls, connection.requested_server_name, xds.cluster_name, " +
	"xds.route_name, xds.node.id, xds.node.metadata['KEY'], xds.node.metadata['LABELS']['key'], and upstream_peer. or " +
	"downstream_peer. (also under filter_state.) app, version, service, revision, namespace, workload, cluster or " +
	"labels['app'|'version']), string(x), a + b, and has(attribute) ? a : b"

// AttrID names an attribute of Envoy's attribute vocabulary that a Value
// can read.
type AttrID int

// The attributes. Those with a key (headers, node metadata, node labels)
// read Attr.Key.
const (
	RequestHeader AttrID = iota + 1 // Key: a lower-case header name
	RequestHost
	RequestMethod
	RequestPath
	RequestURLPath
	RequestScheme
	RequestProtocol
	RequestID
	RequestUserAgent
	RequestReferer
	RequestQuery
	ResponseCode
	ResponseGRPCStatus
	ResponseHeader // Key: a lower-case header name
	SourceAddress
	SourcePort
	DestinationAddress
	DestinationPort
	ConnectionMTLS
	ConnectionSNI
	ClusterName
	RouteName
	NodeID
	NodeMetadata // Key: a node metadata key, e.g. NAMESPACE
	NodeLabel    // Key: a label of the proxy's workload
	UpstreamPeer
	DownstreamPeer
)

// Peer fields (Attr.Key of UpstreamPeer and DownstreamPeer).
const (
	PeerApp       = "app"
	PeerVersion   = "version"
	PeerService   = "service"  // the canonical service
	PeerRevision  = "revision" // the canonical revision
	PeerNamespace = "namespace"
	PeerWorkload  = "workload"
	PeerCluster   = "cluster"
)

// Attr is one attribute a Value reads.
type Attr struct {
	ID  AttrID
	Key string
}

// Source gives the attributes of one request or connection. Attr reports
// false for an attribute that is absent (a header not sent, a peer not
// known, request attributes of a TCP connection).
type Source interface {
	Attr(a Attr) (string, bool)
}

// Value is a parsed expression whose result is a string: the parts
// concatenated, or, with a condition, Then when the condition's attribute
// is present and Else when not. Immutable once parsed; safe for
// concurrent use.
type Value struct {
	src   string
	parts []part
	// has, then, els: has(attribute) ? then : else.
	has       *Attr
	then, els *Value
}

type part struct {
	lit  string
	attr *Attr // nil: lit
}

// String returns the expression as written.
func (v *Value) String() string { return v.src }

// Attrs lists the attributes v reads.
func (v *Value) Attrs() []Attr {
	var out []Attr
	if v.has != nil {
		out = append(out, *v.has)
		out = append(out, v.then.Attrs()...)
		return append(out, v.els.Attrs()...)
	}
	for _, p := range v.parts {
		if p.attr != nil {
			out = append(out, *p.attr)
		}
	}
	return out
}

// Eval computes v from src. It reports false when an attribute v needs is
// absent: Istio's stats filter then reports the label as "unknown".
func (v *Value) Eval(src Source) (string, bool) {
	if v.has != nil {
		if _, ok := src.Attr(*v.has); ok {
			return v.then.Eval(src)
		}
		return v.els.Eval(src)
	}
	if len(v.parts) == 1 {
		return v.parts[0].eval(src)
	}
	var b strings.Builder
	for _, p := range v.parts {
		s, ok := p.eval(src)
		if !ok {
			return "", false
		}
		b.WriteString(s)
	}
	return b.String(), true
}

func (p part) eval(src Source) (string, bool) {
	if p.attr == nil {
		return p.lit, true
	}
	return src.Attr(*p.attr)
}

// ParseValue parses a Value expression (ValueSupport). The error says what
// was not understood and where (a 1-based column).
func ParseValue(src string) (*Value, error) {
	l := NewLexer(src)
	if l.Err != nil {
		return nil, l.Err
	}
	if l.Tok.Kind == EOF {
		return nil, fmt.Errorf("the expression is empty")
	}
	p := valueParser{l}
	v, err := p.conditional()
	if err != nil {
		return nil, err
	}
	if l.Err != nil || l.Tok.Kind != EOF {
		return nil, l.Errf("unexpected %s", l.Tok)
	}
	v.src = src
	return v, nil
}

type valueParser struct{ *Lexer }

// conditional: has(attribute) ? concat : concat, or concat.
func (p valueParser) conditional() (*Value, error) {
	if !p.IsIdent("has") {
		return p.concat()
	}
	p.Next()
	if err := p.Expect("("); err != nil {
		return nil, err
	}
	a, err := p.attribute()
	if err != nil {
		return nil, err
	}
	if err := p.Expect(")"); err != nil {
		return nil, err
	}
	if !p.IsOp("?") {
		return nil, p.Errf("has(...) is supported only as the condition of has(attribute) ? a : b, got %s", p.Tok)
	}
	p.Next()
	then, err := p.concat()
	if err != nil {
		return nil, err
	}
	if err := p.Expect(":"); err != nil {
		return nil, err
	}
	els, err := p.concat()
	if err != nil {
		return nil, err
	}
	return &Value{has: &a, then: then, els: els}, nil
}

// concat: term ('+' term)*.
func (p valueParser) concat() (*Value, error) {
	v := &Value{}
	for {
		if err := p.term(v); err != nil {
			return nil, err
		}
		if !p.IsOp("+") {
			return v, nil
		}
		p.Next()
	}
}

// term appends one operand's parts to v.
func (p valueParser) term(v *Value) error {
	switch {
	case p.Err != nil:
		return p.Err
	case p.Tok.Kind == String, p.Tok.Kind == Int:
		v.parts = append(v.parts, part{lit: p.Tok.Text})
		p.Next()
		return nil
	case p.IsOp("("):
		p.Next()
		if err := p.concatInto(v); err != nil {
			return err
		}
		return p.Expect(")")
	case p.IsIdent("string"):
		p.Next()
		if err := p.Expect("("); err != nil {
			return err
		}
		if err := p.concatInto(v); err != nil {
			return err
		}
		return p.Expect(")")
	case p.Tok.Kind == Ident:
		a, err := p.attribute()
		if err != nil {
			return err
		}
		v.parts = append(v.parts, part{attr: &a})
		return nil
	case p.Tok.Kind == EOF:
		return p.Errf("the expression ends too early")
	}
	return p.Errf("unsupported %s; supported: %s", p.Tok, ValueSupport)
}

func (p valueParser) concatInto(v *Value) error {
	inner, err := p.concat()
	if err != nil {
		return err
	}
	v.parts = append(v.parts, inner.parts...)
	return nil
}

// attribute reads a path of selectors (a.b, a['b']) and resolves it.
func (p valueParser) attribute() (Attr, error) {
	start := p.Tok.Pos
	if p.Tok.Kind != Ident {
		return Attr{}, p.Errf("want an attribute, got %s", p.Tok)
	}
	path := []string{p.Tok.Text}
	p.Next()
	for {
		switch {
		case p.IsOp("."):
			p.Next()
			if p.Tok.Kind != Ident {
				return Attr{}, p.Errf("want a name after \".\", got %s", p.Tok)
			}
			path = append(path, p.Tok.Text)
			p.Next()
		case p.IsOp("["):
			p.Next()
			if p.Tok.Kind != String {
				return Attr{}, p.Errf("want a key in quotes, got %s", p.Tok)
			}
			path = append(path, p.Tok.Text)
			p.Next()
			if err := p.Expect("]"); err != nil {
				return Attr{}, err
			}
		default:
			a, ok := resolve(path)
			if !ok {
				return Attr{}, fmt.Errorf("column %d: unsupported attribute %s; supported: %s", start+1, strings.Join(path, "."), ValueSupport)
			}
			return a, nil
		}
	}
}

var simpleAttrs = map[string]AttrID{
	"request.host": RequestHost, "request.method": RequestMethod, "request.path": RequestPath,
	"request.url_path": RequestURLPath, "request.scheme": RequestScheme, "request.protocol": RequestProtocol,
	"request.id": RequestID, "request.useragent": RequestUserAgent, "request.referer": RequestReferer,
	"request.query": RequestQuery, "response.code": ResponseCode, "response.grpc_status": ResponseGRPCStatus,
	"source.address": SourceAddress, "source.port": SourcePort,
	"destination.address": DestinationAddress, "destination.port": DestinationPort,
	"connection.mtls": ConnectionMTLS, "connection.requested_server_name": ConnectionSNI,
	"xds.cluster_name": ClusterName, "xds.route_name": RouteName, "xds.node.id": NodeID, "node.id": NodeID,
}

var peerFields = map[string]string{
	PeerApp: PeerApp, PeerVersion: PeerVersion, PeerService: PeerService, PeerRevision: PeerRevision,
	PeerNamespace: PeerNamespace, PeerWorkload: PeerWorkload, PeerCluster: PeerCluster,
	// The labels the proxy knows a peer by.
	"labels.app": PeerApp, "labels.version": PeerVersion,
	"labels.service.istio.io/canonical-name":     PeerService,
	"labels.service.istio.io/canonical-revision": PeerRevision,
}

// resolve maps a selector path onto an attribute.
func resolve(path []string) (Attr, bool) {
	joined := strings.Join(path, ".")
	if id, ok := simpleAttrs[joined]; ok {
		return Attr{ID: id}, true
	}
	n := len(path)
	switch {
	case n == 3 && path[0] == "request" && path[1] == "headers":
		return Attr{ID: RequestHeader, Key: strings.ToLower(path[2])}, true
	case n == 3 && path[0] == "response" && path[1] == "headers":
		return Attr{ID: ResponseHeader, Key: strings.ToLower(path[2])}, true
	}
	// xds.node.metadata[K], node.metadata[K], and [LABELS][k] under them.
	md := path
	if n > 0 && md[0] == "xds" {
		md = md[1:]
	}
	if len(md) >= 3 && md[0] == "node" && md[1] == "metadata" {
		switch {
		case len(md) == 3:
			return Attr{ID: NodeMetadata, Key: md[2]}, true
		case len(md) == 4 && md[2] == "LABELS":
			return Attr{ID: NodeLabel, Key: md[3]}, true
		}
		return Attr{}, false
	}
	// upstream_peer.F, downstream_peer.F, also under filter_state.
	pp := path
	if n > 0 && pp[0] == "filter_state" {
		pp = pp[1:]
	}
	if len(pp) >= 2 && (pp[0] == "upstream_peer" || pp[0] == "downstream_peer") {
		f, ok := peerFields[strings.Join(pp[1:], ".")]
		if !ok {
			return Attr{}, false
		}
		id := UpstreamPeer
		if pp[0] == "downstream_peer" {
			id = DownstreamPeer
		}
		return Attr{ID: id, Key: f}, true
	}
	return Attr{}, false
}
