package config

import (
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GatewayAPIStatus is what translating the Gateway API found, in the
// terms of the Gateway API's own status (conditions per listener and per
// route parent, with the reasons the types package names), so that a
// status writer (the Kubernetes source) writes what users of the Gateway
// API expect rather than Weft's diagnostics alone. It covers only what
// Weft's own controller (WeftControllerName) serves: Gateways of Istio's
// classes are served too, but their status is istiod's to write.
//
// It is computed from the resources in force (the last good version of
// each), once per load, and never modified afterwards.
type GatewayAPIStatus struct {
	// Classes are the GatewayClasses in force, by name: true for those of
	// Weft's controller.
	Classes map[string]bool
	// Gateways are the Gateways of Weft's controller's classes, by
	// "namespace/name".
	Gateways map[string]*GatewayResult
	// Routes are the HTTPRoutes and GRPCRoutes Weft judged, by
	// Meta.Key(): their parents entries are those of Weft's Gateways.
	Routes map[string]*RouteResult

	// found holds the diagnostics the translation made (see Found).
	found map[Diagnostic]bool
}

// Found reports whether d is one of the translation's findings — about
// the version in force, which stays in force (a route attached to no
// listener, a backend not permitted, a listener not served) — rather
// than a reason the document as written was rejected.
func (s *GatewayAPIStatus) Found(d Diagnostic) bool { return s != nil && s.found[foundKey(d)] }

// WithCertificates is s with each served listener whose certificate
// check (the Secret it names exists and holds a certificate and key)
// fails marked unresolved: ResolvedRefs false, InvalidCertificateRef,
// the check's error as the message. s is not modified; Gateways without
// such a listener are shared. check nil or s nil: s.
func (s *GatewayAPIStatus) WithCertificates(check func(namespace, name string) error) *GatewayAPIStatus {
	if s == nil || check == nil {
		return s
	}
	out := *s
	out.Gateways = make(map[string]*GatewayResult, len(s.Gateways))
	for key, g := range s.Gateways {
		out.Gateways[key] = g
		for i, l := range g.Listeners {
			if l.Reason != "" || l.CertificateName == "" {
				continue
			}
			err := check(l.CertificateNamespace, l.CertificateName)
			if err == nil {
				continue
			}
			if out.Gateways[key] == g {
				c := &GatewayResult{Listeners: append([]ListenerResult(nil), g.Listeners...)}
				out.Gateways[key] = c
			}
			r := &out.Gateways[key].Listeners[i]
			r.Condition, r.Reason = gwv1.ListenerConditionResolvedRefs, gwv1.ListenerReasonInvalidCertificateRef
			r.Message = err.Error()
		}
	}
	return &out
}

// foundKey is d without its position, which the store drops for
// virtual files.
func foundKey(d Diagnostic) Diagnostic {
	d.Line, d.Column = 0, 0
	return d
}

// GatewayResult is the outcome of one Gateway.
type GatewayResult struct {
	// Listeners are in the order of spec.listeners.
	Listeners []ListenerResult
}

// Served counts the listeners a gateway proxy serves.
func (g *GatewayResult) Served() int {
	n := 0
	for _, l := range g.Listeners {
		if l.Reason == "" {
			n++
		}
	}
	return n
}

// ListenerResult is the outcome of one listener.
type ListenerResult struct {
	Name gwv1.SectionName
	// Kinds are the route kinds the listener takes (allowedRoutes.kinds,
	// narrowed to those Weft attaches).
	Kinds []gwv1.RouteGroupKind
	// Condition and Reason say why the listener is not served (Condition
	// is ListenerConditionAccepted, ListenerConditionResolvedRefs or
	// ListenerConditionConflicted); "" when it is. Message says it in
	// words.
	Condition gwv1.ListenerConditionType
	Reason    gwv1.ListenerConditionReason
	Message   string
	// AttachedRoutes counts the routes attached to it.
	AttachedRoutes int32
	// CertificateNamespace and CertificateName name the Secret a listener
	// that terminates TLS serves (its first certificateRef), when it is
	// served; whether the Secret exists is the status writer's to say
	// (the configuration does not hold Secrets).
	CertificateNamespace, CertificateName string
}

// RouteResult is the outcome of one route.
type RouteResult struct {
	// Parents has an entry per parentRef naming a Gateway of Weft's
	// controller or a Service (the mesh, which is Weft's), in the order
	// of spec.parentRefs.
	Parents []ParentResult
	// RefsReason is "" when every backend reference was followed; else
	// why the first that was not (RouteReasonRefNotPermitted,
	// RouteReasonInvalidKind), with RefsMessage.
	RefsReason  gwv1.RouteConditionReason
	RefsMessage string
}

// ParentResult is a route's outcome on one parentRef.
type ParentResult struct {
	// Index is the parentRef's index in spec.parentRefs.
	Index int
	// Reason is "" when the route is attached to the parent; else why
	// not (RouteReasonNoMatchingParent, RouteReasonNotAllowedByListeners,
	// RouteReasonNoMatchingListenerHostname), with Message.
	Reason  gwv1.RouteConditionReason
	Message string
}

// WeftClass reports whether the GatewayClass name is served by Weft's
// controller: one written with Weft's controllerName, or the built-in
// class when no GatewayClass of that name is written.
func (s *GatewayAPIStatus) WeftClass(name string) bool {
	if s == nil {
		return name == BuiltinGatewayClass
	}
	ours, written := s.Classes[name]
	if !written {
		return name == BuiltinGatewayClass
	}
	return ours
}

// newGatewayAPIStatus starts the status of a translation.
func newGatewayAPIStatus(classes []*GatewayClass) *GatewayAPIStatus {
	s := &GatewayAPIStatus{Classes: map[string]bool{}, Gateways: map[string]*GatewayResult{}, Routes: map[string]*RouteResult{}, found: map[Diagnostic]bool{}}
	for _, c := range classes {
		s.Classes[c.Name] = c.Spec.ControllerName == WeftControllerName
	}
	return s
}

// route returns r's result, made on first use.
func (s *GatewayAPIStatus) route(r *HTTPRoute) *RouteResult {
	rr := s.Routes[r.Key()]
	if rr == nil {
		rr = &RouteResult{}
		s.Routes[r.Key()] = rr
	}
	return rr
}

// parent records route r's outcome on parentRef i of a Gateway of Weft's
// or a Service.
func (s *GatewayAPIStatus) parent(r *HTTPRoute, i int, reason gwv1.RouteConditionReason, msg string) {
	rr := s.route(r)
	rr.Parents = append(rr.Parents, ParentResult{Index: i, Reason: reason, Message: msg})
}

// refs records the first backend reference of r that was not followed.
func (s *GatewayAPIStatus) refs(r *HTTPRoute, reason gwv1.RouteConditionReason, msg string) {
	rr := s.route(r)
	if rr.RefsReason == "" {
		rr.RefsReason, rr.RefsMessage = reason, msg
	}
}
