// Package filter defines the proxy's HTTP filters the way Envoy's HTTP
// connection manager runs them: a listener's http_filters are a chain,
// and every request passes through it in order before the router, which
// is always last. Each filter's DecodeHeaders sees the request and either
// lets it continue to the next filter or stops the chain, usually by
// answering the request itself (a local reply: a fault abort, a CORS
// preflight, an RBAC denial). Filters that implement Encoder also see the
// headers of the response the request gets, whether it came from
// upstream or from the proxy.
//
// A filter's configuration comes from two places, as in Envoy: its entry
// in the listener's http_filters (Factory.New) and, per route, the
// route's typed_per_filter_config under the filter's name
// (Factory.ParsePerRoute), which the filter reads from Stream.PerRoute.
//
// Each kind of filter lives in its own package under filter/ and exports a
// Factory; the data plane lists the Factories it implements in a Registry.
// Nothing registers itself globally.
package filter

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/netip"

	"google.golang.org/protobuf/types/known/anypb"
)

// Factory is one kind of HTTP filter. Its methods are called while
// translating configuration, never per request, from one goroutine at a
// time.
type Factory interface {
	// Name is the filter's name in http_filters and
	// typed_per_filter_config, e.g. "envoy.filters.http.fault".
	Name() string
	// New builds the filter from its http_filters entry's typed_config
	// (nil when the entry has none). Errors name the field inside config
	// that is wrong.
	New(config *anypb.Any) (Filter, error)
	// ParsePerRoute compiles a route's typed_per_filter_config entry for
	// this filter; the filter gets the result as Stream.PerRoute on
	// requests of that route. The result must be immutable: requests read
	// it concurrently. Errors name the field inside config that is wrong.
	ParsePerRoute(config *anypb.Any) (any, error)
}

// Status is what DecodeHeaders tells the chain.
type Status uint8

const (
	// Continue passes the request to the next filter, and finally to the
	// router.
	Continue Status = iota
	// Stop ends the chain: the filter has answered the request
	// (Stream.SendLocalReply or Stream.Respond), or the downstream went
	// away (the request's context is done) and nobody is left to answer.
	Stop
)

// Filter is one HTTP filter of a listener, built once per listener
// configuration and shared by every request on that listener.
//
// Threading: DecodeHeaders runs on the request's goroutine, concurrently
// for different requests; it must not modify the Filter (per-request state
// goes in the Stream). It may block — a fault delay does — but must return
// once s.Request.Context() is done.
type Filter interface {
	DecodeHeaders(s *Stream) Status
}

// Encoder is implemented by filters that decorate response headers: for a
// request that passed the filter (its DecodeHeaders returned Continue),
// EncodeHeaders runs on h, the headers of the response about to be sent —
// from upstream, a direct response or redirect of the route, or a local
// reply of a filter later in the chain or of the router — after the
// route's own response headers, in reverse chain order, as Envoy's
// encoder filters. Same threading contract as DecodeHeaders; it must not
// block.
type Encoder interface {
	EncodeHeaders(s *Stream, h http.Header)
}

// PerRouteOnly is implemented by filters that act only on routes that
// configure them (Istio uses the fault and CORS filters that way): on
// other routes the chain skips them without calling them, so such routes
// cost nothing.
type PerRouteOnly interface {
	PerRouteOnly()
}

// LocalReply is an answer from the proxy itself, as Envoy's
// sendLocalReply: a gRPC request gets a trailers-only response (HTTP 200)
// whose grpc-status is GRPCStatus, or Status mapped as Envoy maps it when
// GRPCStatus is empty, with Body as grpc-message; any other request gets
// Status with Body as text/plain.
type LocalReply struct {
	Status     int    // HTTP status
	GRPCStatus string // grpc-status for gRPC requests; "" maps Status
	Body       string
	Flag       string // response flag for metrics and logs (FI, RBAC, …); may be ""
}

// Answer is how a filter that stopped the chain answered.
type Answer uint8

const (
	// NoAnswer: nothing was sent; the downstream went away.
	NoAnswer Answer = iota
	// AnsweredLocalReply: SendLocalReply.
	AnsweredLocalReply
	// AnsweredStatus: Respond.
	AnsweredStatus
)

// Stream is one request as the filters see it. The chain creates it when
// the first filter runs; it belongs to the request's goroutine and is used
// from DecodeHeaders and EncodeHeaders only.
type Stream struct {
	// Request is the downstream request. A filter may change its headers
	// (they go upstream as changed) but must not replace it or read its
	// body.
	Request *http.Request
	// PerRoute is the running filter's config for the request's route
	// (what its Factory.ParsePerRoute returned), nil when the route has
	// none. The chain sets it before each call.
	PerRoute any
	// RemoteIP is the original client's address as the connection manager
	// derives it from X-Forwarded-For (use_remote_address,
	// xff_num_trusted_hops), Envoy's downstream remote address; the zero
	// Addr when that is the TCP peer (Request.RemoteAddr). Set by the
	// chain's runner.
	RemoteIP netip.Addr
	// Connection is the downstream connection the request arrived on:
	// addresses, TLS, the client certificate (source.principal). Never
	// nil when the chain runs; shared by the connection's requests, so
	// read only.
	Connection *Connection
	// Cluster is the cluster the route chose for the request (Envoy's
	// route target cluster, which names some filters' stats); "" for a
	// direct response or redirect.
	Cluster string
	// Upstream sends the filter's own requests to the clusters of the
	// configuration the request is served by; nil when the chain runs
	// without clusters (tests).
	Upstream Upstream

	header   http.Header
	answer   Answer
	reply    LocalReply
	flags    []string
	metadata map[string]any
}

// Connection is what the proxy knows of one downstream connection, as
// Envoy's connection and ssl() objects tell filters. Built once per
// connection, when it is accepted (after the TLS handshake); immutable.
type Connection struct {
	// LocalAddr is where the connection arrived (the destination address
	// and port); RemoteAddr is the peer's address.
	LocalAddr, RemoteAddr netip.AddrPort
	// TLS is the connection's TLS state; nil for plaintext.
	TLS *tls.ConnectionState
	// Peer is the client certificate of a TLS connection, nil for
	// plaintext or when the client sent none. A listener that requires
	// one (mutual TLS) has verified it: against the mesh root, by SPIFFE
	// ID, for the proxy's sidecar ports.
	Peer *PeerCertificate
}

// PeerCertificate is the client's certificate as Envoy's ssl()
// describes it.
type PeerCertificate struct {
	// Principal is the client's identity (source.principal): its first
	// URI SAN, in the mesh its SPIFFE ID
	// (spiffe://<trust-domain>/ns/<ns>/sa/<sa>); else its first DNS SAN,
	// else its subject.
	Principal string
	URISANs   []string
	DNSSANs   []string
	// Subject is in RFC 2253 form ("CN=client,O=example"); "" when empty.
	Subject string
	// Hash is the hex SHA-256 of the certificate's DER encoding.
	Hash string
}

// Upstream is how a filter calls a service of its own through the
// proxy's clusters, as Envoy's filters use the cluster manager's async
// client (envoy_grpc): an endpoint of the named cluster is picked by its
// load balancer, admitted by its circuit breakers, and reached through
// its connection pool and transport socket (mutual TLS in the mesh).
// Safe for concurrent use.
type Upstream interface {
	// RoundTrip sends req to an endpoint of cluster: req's URL is
	// rewritten to the endpoint's address; req.ProtoMajor 2 asks for
	// HTTP/2 where the cluster follows the downstream protocol. ctx
	// bounds the exchange and the response body, which the caller must
	// close. A cluster that does not exist or has no endpoint is an
	// error.
	RoundTrip(ctx context.Context, cluster string, req *http.Request) (*http.Response, error)
}

// NewStream starts the filters' view of request r whose response headers
// are header (the http.ResponseWriter's). For the chain's runner.
func NewStream(r *http.Request, header http.Header) *Stream {
	return &Stream{Request: r, header: header}
}

// Path is the request's :path, path and query, as the filters and the
// router see it: as received, or as the connection manager normalized it
// (the runner keeps Request.RequestURI in step with Request.URL).
func (s *Stream) Path() string {
	if u := s.Request.RequestURI; u != "" && u[0] == '/' {
		return u
	}
	return s.Request.URL.RequestURI() // absolute form: a forward proxy request
}

// ResponseHeader is the header map of the response the request will get,
// whatever it turns out to be: a filter may set headers there that go
// with its own answer (a preflight's CORS headers, a 401's
// WWW-Authenticate).
func (s *Stream) ResponseHeader() http.Header { return s.header }

// SendLocalReply answers the request with r and returns Stop, for
// DecodeHeaders to return. The reply carries the response headers of the
// filters earlier in the chain (Encoder), not the route's.
func (s *Stream) SendLocalReply(r LocalReply) Status {
	s.answer, s.reply = AnsweredLocalReply, r
	return Stop
}

// Respond answers the request with status, the headers set on
// ResponseHeader and no body, nothing added (Envoy: a filter encoding its
// own headers, as the CORS filter answers a preflight), and returns Stop.
func (s *Stream) Respond(status int) Status {
	s.answer, s.reply = AnsweredStatus, LocalReply{Status: status}
	return Stop
}

// AddResponseFlag records a response flag for the request's metrics and
// logs, whatever happens to the request next (DI for an injected delay).
func (s *Stream) AddResponseFlag(flag string) { s.flags = append(s.flags, flag) }

// SetMetadata records v under namespace (by convention the name of the
// filter that produced it) for filters later in the chain, as Envoy's
// dynamic metadata: the JWT filter's verified claims, read by RBAC.
func (s *Stream) SetMetadata(namespace string, v any) {
	if s.metadata == nil {
		s.metadata = map[string]any{}
	}
	s.metadata[namespace] = v
}

// Metadata returns what an earlier filter recorded under namespace, or
// nil.
func (s *Stream) Metadata(namespace string) any { return s.metadata[namespace] }

// Answer reports how the filter that stopped the chain answered: with a
// local reply (reply is it), a bare status (reply.Status), or not at all.
// For the chain's runner.
func (s *Stream) Answer() (a Answer, reply LocalReply) { return s.answer, s.reply }

// ResponseFlags are the flags added with AddResponseFlag, in order. For
// the chain's runner.
func (s *Stream) ResponseFlags() []string { return s.flags }

// Registry is the HTTP filters a proxy implements, by name. Immutable once
// built; safe for concurrent use.
type Registry map[string]Factory

// NewRegistry lists factories by name; a later factory of the same name
// replaces an earlier one.
func NewRegistry(factories ...Factory) Registry {
	r := make(Registry, len(factories))
	for _, f := range factories {
		r[f.Name()] = f
	}
	return r
}

// ParsePerRoute compiles a route's typed_per_filter_config entry for the
// filter named name. known is false when the proxy has no such filter;
// the entry is then ignored.
func (r Registry) ParsePerRoute(name string, config *anypb.Any) (cfg any, known bool, err error) {
	f := r[name]
	if f == nil {
		return nil, false, nil
	}
	cfg, err = f.ParsePerRoute(config)
	return cfg, true, err
}
