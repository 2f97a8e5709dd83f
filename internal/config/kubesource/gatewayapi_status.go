package kubesource

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/config"
)

// The Gateway API's kinds get the Gateway API's status, as users of any
// implementation read it (kubectl get gateway shows Programmed; an
// HTTPRoute says per parent whether it is Accepted), instead of Istio's
// Reconciled condition and validationMessages, which their CRDs' schemas
// would prune (and a pruned field would look changed on every write).
// Weft writes only what is its own: GatewayClasses of Weft's controller,
// Gateways of those classes, and the parents entries of routes for those
// Gateways, marked with Weft's controllerName; other controllers' entries
// are kept as they are. Gateways of Istio's classes, which Weft also
// serves, are istiod's to report on.

// isGatewayAPIKind reports whether k is one of the Gateway API's kinds.
func isGatewayAPIKind(k config.Kind) bool {
	switch k {
	case config.KindGatewayClass, config.KindKubeGateway, config.KindHTTPRoute, config.KindGRPCRoute,
		config.KindTCPRoute, config.KindTLSRoute, config.KindReferenceGrant:
		return true
	}
	return false
}

// desiredGatewayAPIStatus is the status a Gateway API object u of kind k
// should have after a load whose verdict on it is v; ok is false when
// Weft writes no status on it (a ReferenceGrant has none; another
// controller's class or Gateway; a route naming none of Weft's Gateways,
// now or before). gs is the load's translation outcome.
func desiredGatewayAPIStatus(u *unstructured.Unstructured, k config.Kind, v verdict, gen int64, now time.Time, gs *config.GatewayAPIStatus) (status map[string]any, ok bool) {
	existing, _ := u.Object["status"].(map[string]any)
	st := map[string]any{}
	if existing != nil {
		st = deepCopy(existing).(map[string]any)
	}
	switch k {
	case config.KindGatewayClass:
		if ctrl, _, _ := unstructured.NestedString(u.Object, "spec", "controllerName"); ctrl != config.WeftControllerName {
			return nil, false
		}
		c := newCondition(string(gwv1.GatewayClassConditionStatusAccepted), true, string(gwv1.GatewayClassReasonAccepted), "Weft's controller serves this class")
		if !v.accepted() {
			c = newCondition(string(gwv1.GatewayClassConditionStatusAccepted), false, string(gwv1.GatewayClassReasonUnsupported), v.message)
		}
		st["conditions"] = mergeConditions(st["conditions"], gen, now, c)
		return st, true
	case config.KindKubeGateway:
		class, _, _ := unstructured.NestedString(u.Object, "spec", "gatewayClassName")
		if !gs.WeftClass(class) {
			return nil, false
		}
		return gatewayStatus(st, u, v, gen, now, gs.Gateways[u.GetNamespace()+"/"+u.GetName()]), true
	case config.KindHTTPRoute, config.KindGRPCRoute, config.KindTCPRoute, config.KindTLSRoute:
		return routeStatus(st, u, k, v, gen, now, gs)
	}
	return nil, false
}

// gwCondition is a metav1.Condition without its observedGeneration and
// lastTransitionTime (mergeConditions sets them).
type gwCondition struct {
	typ, status, reason, message string
}

func newCondition(typ string, ok bool, reason, message string) gwCondition {
	s := "False"
	if ok {
		s = "True"
	}
	if message == "" {
		message = reason
	}
	return gwCondition{typ: typ, status: s, reason: reason, message: truncate(message, maxConditionMessage)}
}

// mergeConditions replaces the conditions of the types of cs in old (a
// status's conditions list) and keeps the others. A condition keeps its
// lastTransitionTime while its status stays the same, so that a load
// that says the same writes nothing.
func mergeConditions(old any, gen int64, now time.Time, cs ...gwCondition) []any {
	list, _ := old.([]any)
	var out []any
	done := map[string]bool{}
	render := func(c gwCondition, prev map[string]any) map[string]any {
		m := map[string]any{
			"type": c.typ, "status": c.status, "reason": c.reason, "message": c.message,
			"observedGeneration": gen, "lastTransitionTime": now.UTC().Format(time.RFC3339),
		}
		if prev != nil && prev["status"] == c.status && prev["lastTransitionTime"] != nil {
			m["lastTransitionTime"] = prev["lastTransitionTime"]
		}
		return m
	}
	for _, e := range list {
		m, _ := e.(map[string]any)
		replaced := false
		for _, c := range cs {
			if m != nil && m["type"] == c.typ {
				if !done[c.typ] {
					out = append(out, render(c, m))
					done[c.typ] = true
				}
				replaced = true
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	for _, c := range cs {
		if !done[c.typ] {
			out = append(out, render(c, nil))
		}
	}
	return out
}

// gatewayStatus is a Gateway's status: Accepted and Programmed, and a
// status per listener, from res, the outcome of the version in force.
// A version Weft rejects is neither accepted nor programmed (its message
// says the last good version is served); its listeners' status is left
// as it was.
func gatewayStatus(st map[string]any, u *unstructured.Unstructured, v verdict, gen int64, now time.Time, res *config.GatewayResult) map[string]any {
	accepted := string(gwv1.GatewayConditionAccepted)
	programmed := string(gwv1.GatewayConditionProgrammed)
	if !v.accepted() || res == nil {
		msg := v.message
		if res == nil && v.accepted() {
			msg = "not translated yet"
		}
		st["conditions"] = mergeConditions(st["conditions"], gen, now,
			newCondition(accepted, false, string(gwv1.GatewayReasonInvalid), msg),
			newCondition(programmed, false, string(gwv1.GatewayReasonInvalid), msg))
		return st
	}
	if res.Served() == 0 {
		msg := "no listener Weft serves: " + v.message
		st["conditions"] = mergeConditions(st["conditions"], gen, now,
			newCondition(accepted, false, string(gwv1.GatewayReasonListenersNotValid), msg),
			newCondition(programmed, false, string(gwv1.GatewayReasonInvalid), msg))
	} else {
		st["conditions"] = mergeConditions(st["conditions"], gen, now,
			newCondition(accepted, true, string(gwv1.GatewayReasonAccepted), v.message),
			newCondition(programmed, true, string(gwv1.GatewayReasonProgrammed), "configured for the gateway proxies of namespace "+u.GetNamespace()+" labelled "+config.GatewayNameLabel+"="+u.GetName()))
	}
	oldListeners := map[string]map[string]any{}
	if old, ok := st["listeners"].([]any); ok {
		for _, e := range old {
			if m, ok := e.(map[string]any); ok {
				name, _ := m["name"].(string)
				oldListeners[name] = m
			}
		}
	}
	var listeners []any
	for _, l := range res.Listeners {
		conds := []gwCondition{
			newCondition(string(gwv1.ListenerConditionAccepted), true, string(gwv1.ListenerReasonAccepted), ""),
			newCondition(string(gwv1.ListenerConditionResolvedRefs), true, string(gwv1.ListenerReasonResolvedRefs), ""),
			newCondition(string(gwv1.ListenerConditionProgrammed), true, string(gwv1.ListenerReasonProgrammed), ""),
		}
		if l.Reason != "" {
			for i := range conds {
				if conds[i].typ == string(l.Condition) {
					conds[i] = newCondition(conds[i].typ, false, string(l.Reason), l.Message)
				}
			}
			if l.Condition == gwv1.ListenerConditionConflicted {
				// Conflicted is true when the listener conflicts; it is
				// then not accepted either.
				conds[0] = newCondition(string(gwv1.ListenerConditionAccepted), false, string(l.Reason), l.Message)
				conds = append(conds, newCondition(string(gwv1.ListenerConditionConflicted), true, string(l.Reason), l.Message))
			}
			conds[2] = newCondition(string(gwv1.ListenerConditionProgrammed), false, string(gwv1.ListenerReasonInvalid), l.Message)
		}
		var prev any
		if old := oldListeners[string(l.Name)]; old != nil {
			prev = old["conditions"]
		}
		m := map[string]any{
			"name":           string(l.Name),
			"attachedRoutes": int64(l.AttachedRoutes),
			"conditions":     mergeConditions(prev, gen, now, conds...),
		}
		kinds := make([]any, 0, len(l.Kinds))
		for _, k := range l.Kinds {
			km := map[string]any{"kind": string(k.Kind)}
			if k.Group != nil {
				km["group"] = string(*k.Group)
			}
			kinds = append(kinds, km)
		}
		m["supportedKinds"] = kinds
		listeners = append(listeners, m)
	}
	st["listeners"] = listeners
	return st
}

// routeStatus is a route's status: its parents entries of other
// controllers as they are, then one of Weft's per parentRef naming a
// Gateway of Weft's, in spec order, with Accepted and ResolvedRefs. ok
// is false when there is nothing of Weft's to write or remove.
func routeStatus(st map[string]any, u *unstructured.Unstructured, k config.Kind, v verdict, gen int64, now time.Time, gs *config.GatewayAPIStatus) (map[string]any, bool) {
	var res *config.RouteResult
	if gs != nil {
		res = gs.Routes[string(k)+"/"+u.GetNamespace()+"/"+u.GetName()]
	}
	oldOurs := map[int]map[string]any{} // by position among ours
	var parents []any
	hadOurs := false
	if old, ok := st["parents"].([]any); ok {
		for _, e := range old {
			m, _ := e.(map[string]any)
			if m != nil && m["controllerName"] == config.WeftControllerName {
				oldOurs[len(oldOurs)] = m
				hadOurs = true
				continue
			}
			parents = append(parents, e)
		}
	}
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	n := 0
	for i, e := range refs {
		ref, _ := e.(map[string]any)
		if ref == nil || !weftParent(ref, u.GetNamespace(), gs) {
			continue
		}
		accepted := newCondition(string(gwv1.RouteConditionAccepted), true, string(gwv1.RouteReasonAccepted), "attached")
		resolved := newCondition(string(gwv1.RouteConditionResolvedRefs), true, string(gwv1.RouteReasonResolvedRefs), "every backend reference resolved")
		switch {
		case !v.accepted():
			reason := gwv1.RouteReasonUnsupportedValue
			if v.reason == ReasonHeld {
				reason = gwv1.RouteReasonPending
			}
			accepted = newCondition(string(gwv1.RouteConditionAccepted), false, string(reason), v.message)
			resolved = gwCondition{typ: string(gwv1.RouteConditionResolvedRefs), status: "Unknown", reason: string(gwv1.RouteReasonPending),
				message: "not resolved: this version of the route is not accepted"}
		default:
			p := parentResult(res, i)
			switch {
			case p == nil:
				accepted = newCondition(string(gwv1.RouteConditionAccepted), false, string(gwv1.RouteReasonPending), "not translated yet")
			case p.Reason != "":
				accepted = newCondition(string(gwv1.RouteConditionAccepted), false, string(p.Reason), p.Message)
			}
			if res != nil && res.RefsReason != "" {
				resolved = newCondition(string(gwv1.RouteConditionResolvedRefs), false, string(res.RefsReason), res.RefsMessage)
			}
		}
		var prev any
		if old := oldOurs[n]; old != nil && sameStatus(map[string]any{"r": old["parentRef"]}, map[string]any{"r": ref}) {
			prev = old["conditions"]
		}
		parents = append(parents, map[string]any{
			"parentRef":      deepCopy(ref),
			"controllerName": config.WeftControllerName,
			"conditions":     mergeConditions(prev, gen, now, accepted, resolved),
		})
		n++
	}
	if n == 0 && !hadOurs {
		return nil, false
	}
	if parents == nil {
		parents = []any{}
	}
	st["parents"] = parents
	return st, true
}

// weftParent reports whether a parentRef (as the API server holds it,
// group and kind defaulted) of a route in namespace ns names a Gateway of
// Weft's controller, or a Service or ServiceEntry: a route attached to
// one routes the mesh's sidecars, which are Weft's.
func weftParent(ref map[string]any, ns string, gs *config.GatewayAPIStatus) bool {
	if gs == nil {
		return false
	}
	group, _ := ref["group"].(string)
	kind, _ := ref["kind"].(string)
	if ((group == "" || group == "core") && kind == "Service") || (group == "networking.istio.io" && kind == "ServiceEntry") {
		return true
	}
	if (group != "" && group != gatewayAPIGroup) || (kind != "" && kind != "Gateway") {
		return false
	}
	name, _ := ref["name"].(string)
	if n, _ := ref["namespace"].(string); n != "" {
		ns = n
	}
	_, ok := gs.Gateways[ns+"/"+name]
	return ok
}

func parentResult(res *config.RouteResult, i int) *config.ParentResult {
	if res == nil {
		return nil
	}
	for k := range res.Parents {
		if res.Parents[k].Index == i {
			return &res.Parents[k]
		}
	}
	return nil
}
