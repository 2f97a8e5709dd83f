// Package config loads Istio networking resources (VirtualService,
// DestinationRule, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, Gateway), security resources
// (PeerAuthentication, AuthorizationPolicy, RequestAuthentication) and
// Telemetry (telemetry.istio.io) from
// multi-document YAML into istio.io/api types, validates them, and keeps the last good version of
// each resource so one bad document never takes good config down with it.
// Its output is an immutable Snapshot; nothing downstream parses YAML.
package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	weftnet "weft.dev/weft/api/networking/v1alpha1"
	weftsec "weft.dev/weft/api/security/v1alpha1"
)

// Kind is a resource kind as written in YAML.
type Kind string

// Kinds Weft loads.
const (
	KindVirtualService  Kind = "VirtualService"
	KindDestinationRule Kind = "DestinationRule"
	KindServiceEntry    Kind = "ServiceEntry"
	KindWorkloadEntry   Kind = "WorkloadEntry"
	KindWorkloadGroup   Kind = "WorkloadGroup"
	KindSidecar         Kind = "Sidecar"
	KindGateway         Kind = "Gateway"

	KindPeerAuthentication    Kind = "PeerAuthentication"
	KindAuthorizationPolicy   Kind = "AuthorizationPolicy"
	KindRequestAuthentication Kind = "RequestAuthentication"

	KindTelemetry Kind = "Telemetry"

	// KindRateLimit is Weft's own (networking.weft.dev/v1alpha1).
	KindRateLimit Kind = "RateLimit"
	// The Kubernetes Gateway API's kinds (gateway.networking.k8s.io).
	// Its Gateway shares its kind's name with Istio's, so Weft names it
	// by kind and group, as kubectl does, to keep the two apart in keys
	// and messages.
	KindGatewayClass   Kind = "GatewayClass"
	KindKubeGateway    Kind = "Gateway.gateway.networking.k8s.io"
	KindHTTPRoute      Kind = "HTTPRoute"
	KindGRPCRoute      Kind = "GRPCRoute"
	KindTCPRoute       Kind = "TCPRoute"
	KindTLSRoute       Kind = "TLSRoute"
	KindReferenceGrant Kind = "ReferenceGrant"
	// KindNamespace is a Kubernetes Namespace (v1), read for its labels.
	KindNamespace Kind = "Namespace"
	// KindOIDCLogin is Weft's own (security.weft.dev/v1alpha1).
	KindOIDCLogin Kind = "OIDCLogin"
)

// Meta identifies a resource and where it was read from.
type Meta struct {
	Kind       Kind
	APIVersion string
	Namespace  string // "default" when the document leaves it out
	Name       string
	// File is the path the document was read from; Doc is its 1-based
	// index among the file's YAML documents, Line the line it starts on.
	File string
	Doc  int
	Line int
	// Created is metadata.creationTimestamp; zero when the document has none.
	Created time.Time
	// Seq orders resources by when the store first saw them: a resource
	// with a smaller Seq was there first, and wins a conflict (two
	// VirtualServices or ServiceEntries for one host, DestinationRules
	// merged for one host), as the oldest resource does in Istio. It is 0
	// for resources not loaded by a Store.
	Seq uint64
}

// Key identifies a resource across files and reloads: "Kind/namespace/name".
func (m Meta) Key() string { return string(m.Kind) + "/" + m.Namespace + "/" + m.Name }

// String is "Kind namespace/name".
func (m Meta) String() string { return string(m.Kind) + " " + m.Namespace + "/" + m.Name }

// Resource is one validated resource with its typed spec. Specs are shared
// between snapshots and must never be modified.
type Resource[T any] struct {
	Meta
	Spec T
	// Annotations are metadata.annotations (nil when none); shared, never
	// modified.
	Annotations map[string]string
	// Pos locates the fields of the document the resource was read from;
	// nil for resources not loaded from a file. Shared, never modified.
	Pos Positions
}

// Typed resources.
type (
	VirtualService  = Resource[*networking.VirtualService]
	DestinationRule = Resource[*networking.DestinationRule]
	ServiceEntry    = Resource[*networking.ServiceEntry]
	WorkloadEntry   = Resource[*networking.WorkloadEntry]
	WorkloadGroup   = Resource[*networking.WorkloadGroup]
	Sidecar         = Resource[*networking.Sidecar]
	Gateway         = Resource[*networking.Gateway]

	PeerAuthentication    = Resource[*security.PeerAuthentication]
	AuthorizationPolicy   = Resource[*security.AuthorizationPolicy]
	RequestAuthentication = Resource[*security.RequestAuthentication]

	// Telemetry is telemetry.istio.io Telemetry (v1 and v1alpha1 share
	// this type): access logging, tracing and metrics settings.
	Telemetry = Resource[*telemetry.Telemetry]

	// RateLimit is Weft's networking.weft.dev RateLimit: local rate
	// limits at the selected workloads' sidecars.
	RateLimit = Resource[*weftnet.RateLimit]
	// The Kubernetes Gateway API's resources (sigs.k8s.io/gateway-api
	// types, v1 and v1beta1 alike). They are not protobufs.
	GatewayClass   = Resource[*gwv1.GatewayClassSpec]
	KubeGateway    = Resource[*gwv1.GatewaySpec]
	HTTPRoute      = Resource[*gwv1.HTTPRouteSpec]
	GRPCRoute      = Resource[*gwv1.GRPCRouteSpec]
	TCPRoute       = Resource[*gwv1.TCPRouteSpec]
	TLSRoute       = Resource[*gwv1.TLSRouteSpec]
	ReferenceGrant = Resource[*gwv1.ReferenceGrantSpec]
	// OIDCLogin is Weft's security.weft.dev OIDCLogin: login for human
	// users at the selected gateways.
	OIDCLogin = Resource[*weftsec.OIDCLogin]
	// Namespace is a Kubernetes Namespace. Cluster-scoped: its
	// Meta.Namespace is the decoder's "default", as a GatewayClass's.
	Namespace = Resource[*NamespaceSpec]
)

// NamespaceSpec is what Weft reads of a Kubernetes Namespace: its labels
// (metadata.labels, which the decoder copies here), by which a Gateway
// API listener's allowedRoutes selects the namespaces of its routes.
type NamespaceSpec struct {
	Labels map[string]string `json:"-"`
	// Finalizers is the Namespace's spec as the API server writes it; not used.
	Finalizers []string `json:"finalizers,omitempty"`
}

// Snapshot is an immutable, versioned set of the resources in force. Each
// list is sorted by namespace, then name.
type Snapshot struct {
	// Version increases by one with every snapshot a Store produces.
	Version          uint64
	VirtualServices  []*VirtualService
	DestinationRules []*DestinationRule
	ServiceEntries   []*ServiceEntry
	WorkloadEntries  []*WorkloadEntry
	// WorkloadGroups are templates for VM workloads that register
	// themselves when their proxy connects (auto-registration).
	WorkloadGroups []*WorkloadGroup
	// Sidecars scope what each proxy is sent (egress hosts) and its
	// outbound traffic policy.
	Sidecars []*Sidecar
	// Gateways configure the listeners of the gateway proxies their
	// selectors pick; VirtualServices bind to them by name.
	Gateways []*Gateway

	PeerAuthentications    []*PeerAuthentication
	AuthorizationPolicies  []*AuthorizationPolicy
	RequestAuthentications []*RequestAuthentication
	// Telemetries configure access logs, tracing and metrics (mesh-wide
	// in the root namespace, namespace-wide, or per workload selector).
	Telemetries []*Telemetry
	// RateLimits are Weft's own local rate limits.
	RateLimits []*RateLimit

	// The Kubernetes Gateway API's resources as written. Those of Weft's
	// GatewayClasses are also translated (gatewayapi_translate.go) into
	// the Gateways and VirtualServices above, marked with the annotation
	// AnnotationGeneratedFrom, which is what the gateway proxies serve.
	GatewayClasses  []*GatewayClass
	KubeGateways    []*KubeGateway
	HTTPRoutes      []*HTTPRoute
	GRPCRoutes      []*GRPCRoute
	TCPRoutes       []*TCPRoute
	TLSRoutes       []*TLSRoute
	ReferenceGrants []*ReferenceGrant
	// GatewayAPI is what translating them found, as the Gateway API's
	// status says it (for the Kubernetes source's status writer); never
	// nil in a snapshot a Store made.
	GatewayAPI *GatewayAPIStatus

	// OIDCLogins are Weft's own gateway logins (OpenID Connect).
	OIDCLogins []*OIDCLogin
	// Namespaces are the Kubernetes Namespaces written (or, from the API
	// server, all of them), for their labels.
	Namespaces []*Namespace
	// Diagnostics are the errors and warnings of the load that produced
	// this snapshot, sorted by file, document, path.
	Diagnostics []Diagnostic
}

// Severity of a diagnostic.
type Severity string

// Severities. An error means something written is not in force as
// written: the document is rejected (the last good version of the
// resource stays in force), or a part of it loses a conflict and is not
// used. A warning is in force but probably not what was meant; info is
// worth knowing (two DestinationRules merged as Istio merges them).
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityInfo    Severity = "info"
)

// Diagnostic is one problem found while loading config, located precisely
// enough for a person to fix it without searching.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	// Code is stable across releases (see codes.go and docs/operations.md).
	Code Code   `json:"code"`
	File string `json:"file"`
	Doc  int    `json:"doc"` // 1-based; 0 when the problem is with the whole file
	// Line and Column locate Path in File (1-based; 0 when unknown).
	Line   int `json:"line,omitempty"`
	Column int `json:"column,omitempty"`
	// Resource is "Kind namespace/name" when the document got that far.
	Resource string `json:"resource,omitempty"`
	// Path is the field path in the document, e.g. "spec.http[1].route[0].destination.subset".
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// Error renders the diagnostic on one line, its place first as compilers
// write it (editors jump there):
//
//	routes.yaml:27:9: doc 2: VirtualService default/reviews: spec.http[1].route[0].destination.subset: subset "v9" is not defined by any DestinationRule for reviews.default.svc.cluster.local
func (d Diagnostic) Error() string {
	s := d.File
	if d.Line > 0 {
		s += fmt.Sprintf(":%d", d.Line)
		if d.Column > 0 {
			s += fmt.Sprintf(":%d", d.Column)
		}
	}
	if d.Doc > 0 {
		s += fmt.Sprintf(": doc %d", d.Doc)
	}
	if d.Resource != "" {
		s += ": " + d.Resource
	}
	if d.Path != "" {
		s += ": " + d.Path
	}
	return s + ": " + d.Message
}

// SameExcept reports whether s and o hold the same resources of every
// kind but those listed: the same metadata (but for where in its file a
// document sits), specs and annotations, compared by identity first (a
// Store shares the spec of a resource it did not decode again, so only
// the resources of files read again are compared field by field). With
// except = KindWorkloadEntry, everything derived from the config alone
// (routes, policies, scopes, telemetry) is the same for both, and only
// the endpoints WorkloadEntries make may differ. False for nil.
func (s *Snapshot) SameExcept(o *Snapshot, except ...Kind) bool {
	if s == nil || o == nil {
		return false
	}
	same := func(k Kind, eq func() bool) bool { return slices.Contains(except, k) || eq() }
	return same(KindVirtualService, func() bool { return identicalResources(s.VirtualServices, o.VirtualServices) }) &&
		same(KindDestinationRule, func() bool { return identicalResources(s.DestinationRules, o.DestinationRules) }) &&
		same(KindServiceEntry, func() bool { return identicalResources(s.ServiceEntries, o.ServiceEntries) }) &&
		same(KindWorkloadEntry, func() bool { return identicalResources(s.WorkloadEntries, o.WorkloadEntries) }) &&
		same(KindWorkloadGroup, func() bool { return identicalResources(s.WorkloadGroups, o.WorkloadGroups) }) &&
		same(KindSidecar, func() bool { return identicalResources(s.Sidecars, o.Sidecars) }) &&
		same(KindGateway, func() bool { return identicalResources(s.Gateways, o.Gateways) }) &&
		same(KindPeerAuthentication, func() bool { return identicalResources(s.PeerAuthentications, o.PeerAuthentications) }) &&
		same(KindAuthorizationPolicy, func() bool { return identicalResources(s.AuthorizationPolicies, o.AuthorizationPolicies) }) &&
		same(KindRequestAuthentication, func() bool { return identicalResources(s.RequestAuthentications, o.RequestAuthentications) }) &&
		same(KindTelemetry, func() bool { return identicalResources(s.Telemetries, o.Telemetries) }) &&
		same(KindRateLimit, func() bool { return identicalResources(s.RateLimits, o.RateLimits) }) &&
		same(KindGatewayClass, func() bool { return identicalResources(s.GatewayClasses, o.GatewayClasses) }) &&
		same(KindKubeGateway, func() bool { return identicalResources(s.KubeGateways, o.KubeGateways) }) &&
		same(KindHTTPRoute, func() bool { return identicalResources(s.HTTPRoutes, o.HTTPRoutes) }) &&
		same(KindGRPCRoute, func() bool { return identicalResources(s.GRPCRoutes, o.GRPCRoutes) }) &&
		same(KindTCPRoute, func() bool { return identicalResources(s.TCPRoutes, o.TCPRoutes) }) &&
		same(KindTLSRoute, func() bool { return identicalResources(s.TLSRoutes, o.TLSRoutes) }) &&
		same(KindReferenceGrant, func() bool { return identicalResources(s.ReferenceGrants, o.ReferenceGrants) }) &&
		same(KindOIDCLogin, func() bool { return identicalResources(s.OIDCLogins, o.OIDCLogins) }) &&
		same(KindNamespace, func() bool { return identicalResources(s.Namespaces, o.Namespaces) })
}

// specEqual reports whether two specs are the same value or equal ones:
// protobufs by proto.Equal, the Gateway API's Go types by deep equality.
func specEqual(a, b any) bool {
	if a == b {
		return true
	}
	if pa, ok := a.(proto.Message); ok {
		pb, ok := b.(proto.Message)
		return ok && proto.Equal(pa, pb)
	}
	return reflect.DeepEqual(a, b)
}

func identicalResources[T any](a, b []*Resource[T]) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		// Where a document sits in its file (File, Doc, Line) moves when
		// another document of the file changes; nothing built from the
		// config reads it.
		mx, my := x.Meta, y.Meta
		mx.File, mx.Doc, mx.Line = my.File, my.Doc, my.Line
		if mx != my {
			return false
		}
		// The same spec, or, from a file decoded again (another document
		// of it changed), an equal one.
		if !specEqual(x.Spec, y.Spec) {
			return false
		}
		if reflect.ValueOf(x.Annotations).UnsafePointer() != reflect.ValueOf(y.Annotations).UnsafePointer() && !maps.Equal(x.Annotations, y.Annotations) {
			return false
		}
	}
	return true
}
