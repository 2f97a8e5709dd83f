package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"weft.dev/weft/internal/xds/contract"
)

// wildcardName subscribes to every resource of a type (delta xDS).
const wildcardName = "*"

// deltaState is the incremental (delta) ADS state machine. Like state, it
// is owned by the goroutine running Client.Run, and everything above the
// per-stream fields survives reconnects.
//
// It keeps the same resourceSet as the state-of-the-world client and
// hands the Applier the same complete sets, under the same rules (the
// first config only complete; later ones complete, or incomplete after
// IncompleteTimeout; a removed cluster that routes still name is waited
// for). What differs is how the working set is kept: each response adds,
// replaces or removes single resources, and the working set is the
// control plane's view of what this client has (it records per resource
// the version it sent). So the working set is not rolled back when the
// data plane rejects it: the control plane would not send those resources
// again. While it is refused, each change is applied as the
// state-of-the-world client would, on top of the last good set without
// what was refused (fallback), and the working set is applied whole again
// once a change makes it acceptable. On
// reconnect the versions of the working set go out as
// initial_resource_versions, and the control plane sends only what
// differs.
type deltaState struct {
	c *Client

	working *resourceSet // the control plane's view of what this client has
	applied *resourceSet // what the Applier last accepted
	// rv is the version of each resource of the working set, by type URL
	// and name, as the control plane sent it.
	rv          map[string]map[string]string
	everApplied bool
	subs        map[string][]string // RDS and EDS names subscribed, sorted
	// dirty is set when the working set changed since it was last handed
	// to the Applier (or never was).
	dirty bool
	// deadline, when set, is when an incomplete set is applied anyway.
	deadline time.Time
	// refusedRV, set while the data plane refuses the working set, is rv
	// as it was at the last refusal: what changed since can still be
	// applied on top of the last good set (fallback).
	refusedRV map[string]map[string]string
	// refusedRoutes is the working set's route configurations at the last
	// refusal: a merged one (vhds.go) changes without its own version
	// changing, so route configurations are compared by what is held.
	refusedRoutes map[string]*held
	// node is the node sent on each stream: Options.Node with
	// contract.FeatureVHDS among its client features.
	node *core.Node

	// Per stream.
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	// unacked is the nonce of the last response of each type taken in and
	// not yet answered: it is ACKed once the set it belongs to is applied,
	// NACKed if the Applier rejects it.
	unacked map[string]string
	// rejected is the nonce of the last response of each type NACKed
	// because the data plane refused the set it belonged to. Its resources
	// stay in the working set, so once a later set is applied they run,
	// and the response is ACKed after all: the control plane, which sends
	// them only once, then knows the proxy accepted them.
	rejected map[string]string
	nodeSent bool
}

func newDeltaState(c *Client) *deltaState {
	rv := map[string]map[string]string{}
	for _, t := range deltaOrder {
		rv[t] = map[string]string{}
	}
	node := xdswire.Clone(c.opts.Node)
	if !slices.Contains(node.ClientFeatures, contract.FeatureVHDS) {
		node.ClientFeatures = append(node.ClientFeatures, contract.FeatureVHDS)
	}
	return &deltaState{
		c:       c,
		working: newResourceSet(),
		applied: newResourceSet(),
		rv:      rv,
		subs:    map[string][]string{},
		node:    node,
	}
}

// runStream opens one delta ADS stream and serves it until it breaks or
// ctx is done; see state.runStream for the contract.
func (s *deltaState) runStream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, onOpen func()) (healthy bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := ads.DeltaAggregatedResources(sctx)
	if err != nil {
		cancel()
		return false, fmt.Errorf("opening delta ADS stream: %w", err)
	}
	s.stream, s.unacked, s.rejected, s.nodeSent = stream, map[string]string{}, map[string]string{}, false

	recvCh, errCh, wait := startReceiving(sctx, recvSized(stream, func() *discovery.DeltaDiscoveryResponse { return &discovery.DeltaDiscoveryResponse{} }))
	defer func() {
		cancel() // unblocks Recv
		wait()
		s.stream = nil
	}()

	// Wildcard CDS and LDS first, then the names a previous stream had
	// subscribed to, then every virtual host (VHDS), each with the
	// versions of what this client has.
	for _, t := range deltaOrder {
		if !wildcard(t) && len(s.subs[t]) == 0 {
			continue
		}
		names := []string{wildcardName}
		if !wildcard(t) {
			names = slices.Clone(s.subs[t])
		}
		req := &discovery.DeltaDiscoveryRequest{
			TypeUrl:                 t,
			ResourceNamesSubscribe:  names,
			InitialResourceVersions: maps.Clone(s.rv[t]),
		}
		if err := s.send(req); err != nil {
			return false, err
		}
	}
	if names := s.subs[TypeSecret]; len(names) > 0 {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeSecret, ResourceNamesSubscribe: slices.Clone(names), InitialResourceVersions: maps.Clone(s.rv[TypeSecret])}
		if err := s.send(req); err != nil {
			return false, err
		}
	}
	onOpen()
	s.c.log.Info("delta ADS stream open", "resources_held", s.held())
	return serveStream(ctx, "delta ADS stream", recvCh, errCh, func() time.Time { return s.deadline }, s.handle, s.maybeApply,
		func() bool { return s.dirty }, s.c.opts.HeavyWork)
}

// held counts the resources whose versions a new stream announces.
func (s *deltaState) held() int {
	n := 0
	for _, m := range s.rv {
		n += len(m)
	}
	return n
}

// handle takes one response into the working set and updates the RDS and
// EDS subscriptions it implies. Resources that cannot be decoded are left
// out and the response is NACKed at once with their errors; the rest of
// it (valid resources, removals) is taken in all the same, because the
// control plane now counts them as sent and would not send them again.
func (s *deltaState) handle(in inbound[*discovery.DeltaDiscoveryResponse]) error {
	r := in.msg
	t := r.GetTypeUrl()
	log := s.c.log.With("type", shortType(t), "version", r.GetSystemVersionInfo(), "nonce", r.GetNonce())
	s.c.recv.add(t, len(r.GetResources()), len(r.GetRemovedResources()), in.size)
	if t == TypeSecret && s.c.opts.Secrets != nil {
		return s.handleSecrets(r)
	}
	if !slices.Contains(deltaOrder[:], t) {
		log.Warn("ignoring delta response of a type never subscribed to")
		return nil
	}
	log.Debug("delta ADS response", "resources", len(r.GetResources()), "removed", r.GetRemovedResources())
	d, versions, decodeErr := decodeDelta(r)
	changed, mergeErr := s.take(d, versions, r.GetRemovedResources())
	if changed {
		s.dirty = true
	}
	decodeErr = errors.Join(decodeErr, mergeErr)
	if decodeErr != nil {
		err := fmt.Errorf("%s version %q: %w", shortType(t), r.GetSystemVersionInfo(), decodeErr)
		log.Error("rejecting xDS resources", "error", err)
		delete(s.unacked, t)
		delete(s.rejected, t) // superseded: its invalid resources are not held
		if err := s.nack(t, r.GetNonce(), err); err != nil {
			return err
		}
	} else {
		s.unacked[t] = r.GetNonce()
	}
	return s.resubscribe()
}

// take merges one response into the working set and reports whether it
// changed anything. RDS and EDS resources not subscribed to (any more)
// are ignored, as the state-of-the-world client does. The error is a
// route configuration that could not be merged with its virtual hosts.
func (s *deltaState) take(d *decoded, versions map[string]string, removed []string) (bool, error) {
	t := d.typeURL
	w := s.writable()
	changed := false
	if d.version != "" {
		w.versions[t] = d.version
	}
	first := wildcard(t) && !w.received[t]
	if first {
		w.received[t] = true
		changed = true
	}
	put := func(name string) bool {
		if _, ok := slices.BinarySearch(s.subs[t], name); !wildcard(t) && !ok { // subs are sorted
			return false
		}
		if v, ok := s.rv[t][name]; ok && v == versions[name] && versions[name] != "" {
			return false // sent again unchanged
		}
		s.rv[t][name] = versions[name]
		return true
	}
	for n, m := range d.listeners {
		if put(n) {
			w.listeners[n], changed = keep(m, w.listeners[n]), true
		}
	}
	for n, m := range d.clusters {
		if put(n) {
			w.clusters[n], changed = keep(m, w.clusters[n]), true
		}
	}
	var errs []error
	for _, m := range d.routes {
		s.canonRouted(m)
	}
	for _, m := range d.vhosts {
		s.canonRouted(m)
	}
	w.canon = s.canonRouted // for the route configurations merged with their virtual hosts
	defer func() { w.canon = nil }()
	for n, m := range d.routes {
		if put(n) {
			errs = append(errs, w.putRoute(n, m))
			changed = true
		}
	}
	for n, m := range d.endpoints {
		if n = s.canon(n); put(n) { // subscribed: the cluster's own string, kept as key here and in rv
			w.endpoints[n], changed = keep(m, w.endpoints[n]), true
		}
	}
	merge := map[string]bool{} // route configurations whose virtual hosts changed
	for n, m := range d.vhosts {
		if put(n) {
			merge[w.putVirtualHost(n, m)], changed = true, true
		}
	}
	for _, n := range removed {
		if _, ok := s.rv[t][n]; !ok {
			continue
		}
		delete(s.rv[t], n)
		switch t {
		case TypeListener:
			delete(w.listeners, n)
		case TypeCluster:
			delete(w.clusters, n)
		case TypeRoute:
			w.dropRoute(n)
		case TypeEndpoint:
			delete(w.endpoints, n)
		case TypeVirtualHost:
			merge[w.putVirtualHost(n, nil)] = true
		}
		changed = true
	}
	if t == TypeVirtualHost {
		if first {
			errs = append(errs, w.remerge()) // every base waited for this
		} else if len(merge) > 0 {
			errs = append(errs, w.remerge(slices.Sorted(maps.Keys(merge))...))
		}
	}
	return changed, errors.Join(errs...)
}

// writable returns the working set, first made a set of its own if it is
// the applied one: after an apply the two are one set until a response
// changes it, rather than two copies of the maps of thousands of
// resources held for the life of the proxy.
func (s *deltaState) writable() *resourceSet {
	if s.working == s.applied {
		s.working = s.applied.clone()
	}
	return s.working
}

// canon returns the string of the EDS subscription equal to name (the
// name of the cluster that asked for it: Istio's clusters and their
// assignments share names), or name. A sidecar of a large mesh holds
// thousands of clusters, each named by its assignment and by the routes
// that send to it: one string each rather than one per copy.
func (s *deltaState) canon(name string) string {
	subs := s.subs[TypeEndpoint]
	if i, ok := slices.BinarySearch(subs, name); ok {
		return subs[i]
	}
	return name
}

// canonRouted makes the names of the clusters h routes to (a route
// configuration's or a virtual host's) canon's strings.
func (s *deltaState) canonRouted(h *held) {
	if h == nil || h.routing == nil {
		return
	}
	for i, n := range h.routed {
		h.routed[i] = s.canon(n)
	}
}

// resubscribe recomputes the RDS and EDS names from the working listeners
// and clusters, drops what is no longer referenced, and sends the
// subscription changes of each type whose names changed.
func (s *deltaState) resubscribe() error {
	want := map[string][]string{
		TypeRoute:    s.working.routeNames(),
		TypeEndpoint: s.working.endpointNames(),
	}
	s.writable().prune(want[TypeRoute], want[TypeEndpoint])
	for _, t := range []string{TypeEndpoint, TypeRoute} {
		have := s.subs[t]
		if slices.Equal(want[t], have) {
			continue
		}
		var add, drop []string // both lists are sorted: merge them
		i, j := 0, 0
		for i < len(want[t]) || j < len(have) {
			switch {
			case j == len(have) || (i < len(want[t]) && want[t][i] < have[j]):
				add = append(add, want[t][i])
				i++
			case i == len(want[t]) || have[j] < want[t][i]:
				drop = append(drop, have[j])
				delete(s.rv[t], have[j])
				j++
			default:
				i++
				j++
			}
		}
		s.subs[t] = want[t]
		s.c.log.Debug("subscription changed", "type", shortType(t), "subscribe", add, "unsubscribe", drop)
		if err := s.send(&discovery.DeltaDiscoveryRequest{
			TypeUrl:                  t,
			ResourceNamesSubscribe:   add,
			ResourceNamesUnsubscribe: drop,
		}); err != nil {
			return err
		}
	}
	return s.resubscribeSecrets()
}

// maybeApply hands the working set to the Applier when it changed and is
// complete, or — only after a first complete set was applied — when force
// is set because the deadline for completeness passed; the rules are
// state.maybeApply's. It then ACKs (or, if the Applier refused the set,
// NACKs) every response taken in since. Responses that changed nothing
// are ACKed at once.
func (s *deltaState) maybeApply(force bool) error {
	if !s.dirty {
		s.deadline = time.Time{}
		return s.answerAll(nil, false)
	}
	res := s.c.setToApply(s.working, s.applied, s.everApplied, s.subs, &s.deadline, force)
	if res == nil {
		return nil
	}
	s.dirty = false
	applyErr := s.c.opts.Applier.Apply(res)
	if applyErr == nil {
		s.applied = s.working // one set until the next change (writable)
		s.everApplied = true
		s.refusedRV, s.refusedRoutes = nil, nil
		s.c.applies.Add(1)
		s.c.log.Info("applied xDS config", "versions", res.Versions,
			"listeners", len(res.Listeners), "routes", len(res.Routes), "clusters", len(res.Clusters), "endpoints", len(res.Endpoints))
		return s.answerAll(nil, true)
	}
	if s.refusedRV != nil {
		// Still refused: apply the changes since the refusal on top of
		// the last good set, as a state-of-the-world client would.
		fb := s.fallback()
		missR, missE := fb.missing(fb.routeNames(), fb.endpointNames())
		fres := withStandIns(fb.resources(), missR, missE)
		if err := s.c.opts.Applier.Apply(fres); err == nil {
			s.applied = fb
			s.c.applies.Add(1)
			s.c.log.Warn("applied the changes since the data plane refused a config, without what it refused",
				"refused", applyErr, "versions", fres.Versions)
			return s.answerAll(nil, false)
		}
	}
	s.c.log.Error("data plane rejected xDS config; keeping the last good one", "error", applyErr, "versions", res.Versions)
	s.refusedRV = map[string]map[string]string{}
	for t, m := range s.rv {
		s.refusedRV[t] = maps.Clone(m)
	}
	s.refusedRoutes = maps.Clone(s.working.routes)
	return s.answerAll(applyErr, false)
}

// fallback is what a state-of-the-world client would hold after the data
// plane refused a set: the last applied set, plus every resource that
// arrived or changed since the refusal, minus those removed since. A
// resource the refused set added or changed, and that has not changed
// since, is left out (or kept at its last applied version).
func (s *deltaState) fallback() *resourceSet {
	fb := s.applied.clone()
	w := s.working
	overlay(fb.listeners, w.listeners, s.rv[TypeListener], s.refusedRV[TypeListener])
	overlay(fb.clusters, w.clusters, s.rv[TypeCluster], s.refusedRV[TypeCluster])
	overlayHeld(fb.routes, w.routes, s.refusedRoutes)
	overlay(fb.endpoints, w.endpoints, s.rv[TypeEndpoint], s.refusedRV[TypeEndpoint])
	fb.prune(fb.routeNames(), fb.endpointNames())
	fb.versions = maps.Clone(w.versions)
	fb.received = maps.Clone(w.received)
	return fb
}

// overlay puts into dst the resources of src whose version (rv) differs
// from the one refused, and drops from dst those refused that src no
// longer has.
func overlay[M any](dst, src map[string]M, rv, refused map[string]string) {
	for n, r := range src {
		if v, ok := refused[n]; !ok || v != rv[n] {
			dst[n] = r
		}
	}
	for n := range refused {
		if _, ok := src[n]; !ok {
			delete(dst, n)
		}
	}
}

// overlayHeld is overlay for resources compared by what is held (keep
// keeps a resource's held while its encoding does not change).
func overlayHeld(dst, src, refused map[string]*held) {
	for n, r := range src {
		if old, ok := refused[n]; !ok || old != r {
			dst[n] = r
		}
	}
	for n := range refused {
		if _, ok := src[n]; !ok {
			delete(dst, n)
		}
	}
}

// answerAll ACKs (reason nil) or NACKs the last unanswered response of
// every type, in subscription order. When applied is set (a set was just
// applied), a type whose last response was NACKed with a refused set is
// ACKed too: what it carried now runs.
func (s *deltaState) answerAll(reason error, applied bool) error {
	for _, t := range deltaOrder {
		nonce, ok := s.unacked[t]
		if !ok && applied {
			nonce, ok = s.rejected[t]
		}
		if !ok {
			continue
		}
		delete(s.unacked, t)
		delete(s.rejected, t)
		if reason != nil {
			s.rejected[t] = nonce
			if err := s.nack(t, nonce, reason); err != nil {
				return err
			}
			continue
		}
		if err := s.send(&discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: nonce}); err != nil {
			return err
		}
		s.c.recordACK(t)
	}
	return nil
}

// nack rejects the response of type t with this nonce, giving the reason.
func (s *deltaState) nack(t, nonce string, reason error) error {
	s.c.recordNACK(t, reason.Error())
	return s.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl:       t,
		ResponseNonce: nonce,
		ErrorDetail:   &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: reason.Error()},
	})
}

// send writes one request on the stream; the node rides on the first.
func (s *deltaState) send(req *discovery.DeltaDiscoveryRequest) error {
	if !s.nodeSent {
		req.Node = s.node
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("sending delta %s request: %w", shortType(req.GetTypeUrl()), err)
	}
	s.nodeSent = true
	s.c.log.Debug("delta ADS request", "type", shortType(req.GetTypeUrl()), "nonce", req.GetResponseNonce(),
		"subscribe", req.GetResourceNamesSubscribe(), "unsubscribe", req.GetResourceNamesUnsubscribe(),
		"initial_versions", len(req.GetInitialResourceVersions()), "nack", req.GetErrorDetail() != nil)
	return nil
}

// decodeDelta unmarshals and validates a delta response's resources one by
// one. It returns those that are valid, with their versions by name, and
// an error naming each one that is not (nil if all are). A resource
// without a body (a TTL heartbeat) is skipped.
func decodeDelta(r *discovery.DeltaDiscoveryResponse) (*decoded, map[string]string, error) {
	t := r.GetTypeUrl()
	out := &decoded{typeURL: t, version: r.GetSystemVersionInfo()}
	out.listeners, out.routes, out.clusters, out.endpoints = emptyMaps()
	out.vhosts = map[string]*held{}
	versions := map[string]string{}
	var errs []error
	seen := map[string]bool{}
	for i, res := range r.GetResources() {
		a := res.GetResource()
		if a == nil {
			continue
		}
		if a.GetTypeUrl() != t {
			errs = append(errs, fmt.Errorf("resources[%d] %q: type %q in a %q response", i, res.GetName(), a.GetTypeUrl(), t))
			continue
		}
		one := &decoded{typeURL: t}
		one.listeners, one.routes, one.clusters, one.endpoints = emptyMaps()
		one.vhosts = map[string]*held{}
		name, err := one.add(a)
		if err == nil && t == TypeListener {
			if herr := one.listeners[name].hcmErr; herr != nil {
				err = fmt.Errorf("listener %q: %w", name, herr)
			}
		}
		if err == nil && res.GetName() != "" && res.GetName() != name {
			err = fmt.Errorf("%s %q is sent under the name %q", shortType(t), name, res.GetName())
		}
		if err == nil && seen[name] {
			err = fmt.Errorf("%s %q: duplicate resource name", shortType(t), name)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d]: %w", i, err))
			continue
		}
		seen[name] = true
		versions[name] = res.GetVersion()
		maps.Copy(out.listeners, one.listeners)
		maps.Copy(out.routes, one.routes)
		maps.Copy(out.clusters, one.clusters)
		maps.Copy(out.endpoints, one.endpoints)
		maps.Copy(out.vhosts, one.vhosts)
	}
	return out, versions, errors.Join(errs...)
}

// emptyMaps returns fresh resource maps for decoded.add, which writes to
// the one of its type.
func emptyMaps() (l, r, c, e map[string]*held) {
	return map[string]*held{}, map[string]*held{}, map[string]*held{}, map[string]*held{}
}
