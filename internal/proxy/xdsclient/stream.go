package xdsclient

import (
	"context"
	"fmt"
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// state is the ADS state machine. It is owned by the goroutine running
// Client.Run: every method is called from it alone, so nothing here is
// locked. The part above the per-stream fields survives reconnects, so a
// new stream resumes with the last versions and subscriptions.
type state struct {
	c *Client

	working *resourceSet // everything received, possibly not yet applied
	applied *resourceSet // what the Applier last accepted
	// everApplied is set after the first successful Apply; before it the
	// client waits for a complete set however long it takes.
	everApplied bool
	acked       map[string]string   // last ACKed version_info per type
	subs        map[string][]string // RDS and EDS names subscribed, sorted
	pending     map[string]bool     // types received since the last ACK/NACK
	// deadline, when set, is when an incomplete set is applied anyway.
	deadline time.Time

	// Per stream.
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	nonce    map[string]string // last response_nonce per type
	subMoved map[string]bool   // a subscription change was sent since the last response
	nodeSent bool
}

func newState(c *Client) *state {
	return &state{
		c:       c,
		working: newResourceSet(),
		applied: newResourceSet(),
		acked:   map[string]string{},
		subs:    map[string][]string{},
		pending: map[string]bool{},
	}
}

// runStream opens one ADS stream and serves it until it breaks or ctx is
// done. onOpen is called once the initial subscriptions are sent. healthy
// reports whether at least one response arrived, which resets the backoff.
// The receive goroutine it starts has ended when it returns.
func (s *state) runStream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, onOpen func()) (healthy bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := ads.StreamAggregatedResources(sctx)
	if err != nil {
		cancel()
		return false, fmt.Errorf("opening ADS stream: %w", err)
	}
	s.stream, s.nonce, s.subMoved, s.nodeSent = stream, map[string]string{}, map[string]bool{}, false

	recvCh, errCh, wait := startReceiving(sctx, recvSized(stream, func() *discovery.DiscoveryResponse { return &discovery.DiscoveryResponse{} }))
	defer func() {
		cancel() // unblocks Recv
		wait()
		s.stream = nil
	}()

	// Wildcard CDS and LDS first, then whatever names a previous stream
	// had subscribed to, all with the versions last ACKed.
	for _, t := range typeOrder {
		if wildcard(t) || len(s.subs[t]) > 0 {
			if err := s.send(t, s.acked[t], nil); err != nil {
				return false, err
			}
		}
	}
	if len(s.subs[TypeSecret]) > 0 {
		if err := s.send(TypeSecret, s.acked[TypeSecret], nil); err != nil {
			return false, err
		}
	}
	onOpen()
	s.c.log.Info("ADS stream open")
	return serveStream(ctx, "ADS stream", recvCh, errCh, func() time.Time { return s.deadline }, s.handle, s.maybeApply,
		func() bool { return len(s.pending) > 0 }, s.c.opts.HeavyWork)
}

// handle takes one response into the working set and updates the RDS and
// EDS subscriptions it implies. A response that cannot be decoded is
// NACKed at once and leaves the working set alone.
func (s *state) handle(in inbound[*discovery.DiscoveryResponse]) error {
	r := in.msg
	t := r.GetTypeUrl()
	log := s.c.log.With("type", shortType(t), "version", r.GetVersionInfo(), "nonce", r.GetNonce())
	s.c.recv.add(t, len(r.GetResources()), 0, in.size) // protocol.go
	if t == TypeSecret && s.c.opts.Secrets != nil {
		return s.handleSecrets(r)
	}
	if !slices.Contains(typeOrder[:], t) {
		log.Warn("ignoring response of a type never subscribed to")
		return nil
	}
	s.nonce[t] = r.GetNonce()
	log.Debug("ADS response", "resources", len(r.GetResources()))
	d, err := decode(r)
	if err != nil {
		err = fmt.Errorf("%s version %q: %w", shortType(t), r.GetVersionInfo(), err)
		log.Error("rejecting xDS response", "error", err)
		return s.nack(t, err)
	}
	s.working.take(d, s.subs[t])
	s.pending[t] = true
	if err := s.resubscribe(); err != nil {
		return err
	}
	// A subscription change sent since the previous response of this type
	// may have crossed this response and been dropped by the server as
	// stale; if this response does not cover it, ask again with the new
	// nonce.
	if !wildcard(t) && s.subMoved[t] {
		s.subMoved[t] = false
		if missR, missE := s.working.missing(s.subs[TypeRoute], s.subs[TypeEndpoint]); (t == TypeRoute && len(missR) > 0) || (t == TypeEndpoint && len(missE) > 0) {
			return s.send(t, s.acked[t], nil)
		}
	}
	return nil
}

// resubscribe recomputes the RDS and EDS names from the working listeners
// and clusters, drops what is no longer referenced and sends a request for
// each type whose names changed, carrying its last ACKed version.
func (s *state) resubscribe() error {
	want := map[string][]string{
		TypeRoute:    s.working.routeNames(),
		TypeEndpoint: s.working.endpointNames(),
	}
	s.working.prune(want[TypeRoute], want[TypeEndpoint])
	for _, t := range []string{TypeEndpoint, TypeRoute} {
		if slices.Equal(want[t], s.subs[t]) {
			continue
		}
		s.subs[t] = want[t]
		s.subMoved[t] = true
		s.c.log.Debug("subscription changed", "type", shortType(t), "names", want[t])
		if err := s.send(t, s.acked[t], nil); err != nil {
			return err
		}
	}
	return s.resubscribeSecrets()
}

// maybeApply hands the working set to the Applier when something new
// arrived and the set is complete, or — only after a first complete set
// was applied — when force is set because the deadline for completeness
// passed. It then ACKs or NACKs every type received since the last time.
func (s *state) maybeApply(force bool) error {
	if len(s.pending) == 0 {
		s.deadline = time.Time{}
		return nil
	}
	res := s.c.setToApply(s.working, s.applied, s.everApplied, s.subs, &s.deadline, force)
	if res == nil {
		return nil
	}
	applyErr := s.c.opts.Applier.Apply(res)
	pending := s.pending
	s.pending = map[string]bool{}

	if applyErr == nil {
		s.applied = s.working.clone()
		s.everApplied = true
		s.c.applies.Add(1)
		s.c.log.Info("applied xDS config", "versions", res.Versions,
			"listeners", len(res.Listeners), "routes", len(res.Routes), "clusters", len(res.Clusters), "endpoints", len(res.Endpoints))
		for _, t := range typeOrder {
			if !pending[t] {
				continue
			}
			s.acked[t] = s.working.versions[t]
			if err := s.send(t, s.acked[t], nil); err != nil {
				return err
			}
			s.c.recordACK(t)
		}
		return nil
	}

	s.c.log.Error("data plane rejected xDS config; keeping the last good one", "error", applyErr, "versions", res.Versions)
	// Back to the last good set, and to the subscriptions it implies.
	s.working = s.applied.clone()
	oldSubs := map[string][]string{TypeRoute: s.subs[TypeRoute], TypeEndpoint: s.subs[TypeEndpoint]}
	s.subs[TypeRoute] = s.working.routeNames()
	s.subs[TypeEndpoint] = s.working.endpointNames()
	for _, t := range typeOrder {
		switch {
		case pending[t]:
			if err := s.nack(t, applyErr); err != nil {
				return err
			}
		case !wildcard(t) && !slices.Equal(oldSubs[t], s.subs[t]):
			if err := s.send(t, s.acked[t], nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// nack rejects the last response of type t: the last ACKed version, the
// response's nonce and the reason.
func (s *state) nack(t string, reason error) error {
	s.c.recordNACK(t, reason.Error())
	return s.send(t, s.acked[t], &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: reason.Error()})
}

// send writes one DiscoveryRequest for type t with the current
// subscription and the type's last nonce on this stream.
func (s *state) send(t, version string, detail *rpcstatus.Status) error {
	req := &discovery.DiscoveryRequest{
		VersionInfo:   version,
		TypeUrl:       t,
		ResponseNonce: s.nonce[t],
		ErrorDetail:   detail,
	}
	if !wildcard(t) {
		req.ResourceNames = slices.Clone(s.subs[t])
	}
	if !s.nodeSent { // the node rides on the first request of a stream only
		req.Node = s.c.opts.Node
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("sending %s request: %w", shortType(t), err)
	}
	s.nodeSent = true
	s.c.log.Debug("ADS request", "type", shortType(t), "version", version, "nonce", req.ResponseNonce,
		"names", req.ResourceNames, "nack", detail != nil)
	return nil
}
