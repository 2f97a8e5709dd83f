package server

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// proxy is one connected node. Its identity is fixed for its lifetime;
// streams is guarded by Server.mu, the rest by mu.
type proxy struct {
	id          contract.Identity
	connectedAt time.Time
	streams     int
	// identityKey is generate.IdentityKey(id), made once: every push
	// asks for the proxy's OutboundKey and InboundKey.
	identityKey func() string

	mu          sync.Mutex
	gone        bool     // its last stream closed; never write its snapshot again
	seq         uint64   // sequence of the mesh snapshot last written
	meshVersion string   // version of that mesh snapshot
	versions    []string // per-type versions last written
	// rejected is the proxy's standing rejection of each type: the last
	// version it NACKed and has not since replaced with an accepted one.
	rejected map[string]*Rejection
	// xds is what was sent and ACKed per type, for ProxyStatuses.
	xds map[string]*typeState
	// subs are what a proxyless client's streams subscribe to
	// (ondemand.go); namesGen counts their changes.
	subs     map[streamKey]generate.Names
	namesGen uint64
	// snap is what the proxy is served; live its open streams, woken
	// when snap changes.
	snap *nodeSnapshot
	live map[*adsStream]struct{}
	// conv is the convergence of the last push that changed what p is
	// served, until p has ACKed every type it changed (convergence.go).
	conv *convergence
}

func newProxy(id contract.Identity) *proxy {
	return &proxy{id: id, connectedAt: time.Now(),
		identityKey: sync.OnceValue(func() string { return generate.IdentityKey(id) })}
}

// snapshot is what p is served now, or nil before its first write.
func (p *proxy) snapshot() *nodeSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snap
}

// Rejection is a proxy's standing rejection of one type's config: the
// proxy keeps running the last version it accepted, and is sent nothing
// new until its config changes.
type Rejection struct {
	Node    string `json:"node"`
	TypeURL string `json:"typeUrl"`
	Version string `json:"version"`
	Error   string `json:"error"` // the proxy's error_detail message
	// Sources names the config resources (with file and line) behind the
	// Envoy resources the error mentions: where to look for the mistake.
	Sources []string  `json:"sources,omitempty"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	Count   int       `json:"count"` // NACKs of this version
}

// sentResponse is the last response of one type on a stream.
type sentResponse struct{ nonce, version string }

// streamKey names a stream; the server numbers all streams in one
// sequence, delta tells the kinds apart.
type streamKey struct {
	delta bool
	id    int64
}

// sentResponse records the response about to go out on a stream, so the
// ACK or NACK that answers it (by nonce) can be matched to its version.
func (s *Server) sentResponse(key streamKey, typeURL, nonce, version string) {
	s.mu.Lock()
	if s.sent[key] == nil {
		s.sent[key] = map[string]sentResponse{}
	}
	s.sent[key][typeURL] = sentResponse{nonce: nonce, version: version}
	p := s.streams[key]
	s.mu.Unlock()
	s.metrics.pushed(typeURL)
	if p != nil {
		p.recordSent(typeURL, version, time.Now())
	}
}

// streamProxy is the proxy of an open stream, or nil.
func (s *Server) streamProxy(key streamKey) *proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[key]
}

// answered handles a request that may answer a response: a NACK (detail
// set) is counted, and logged at warn once per node, type and version with
// the proxy's reason; an ACK of a type ends the proxy's rejection of it.
// nackGuard sees to it that what was rejected is not sent again until the
// proxy's config changes.
func (s *Server) answered(key streamKey, node, typeURL, nonce string, detail *rpcstatus.Status) {
	if nonce == "" && detail == nil {
		return // an initial request, answering nothing
	}
	s.mu.Lock()
	sent, ok := s.sent[key][typeURL]
	p := s.streams[key]
	s.mu.Unlock()
	if !ok || sent.nonce != nonce {
		sent = sentResponse{} // stale: answers a superseded response
	}
	if detail == nil {
		if p != nil && sent.nonce != "" {
			p.mu.Lock()
			delete(p.rejected, typeURL)
			if key.delta { // delta requests carry no version: the ACK is of the response
				p.typeState(typeURL).setAcked(sent.version, time.Now())
			}
			if d, ok := p.conv.acked(typeURL, sent.version); ok {
				s.metrics.convergence.Observe(d.Seconds())
				p.conv = nil
			}
			p.mu.Unlock()
		}
		return
	}
	s.metrics.nacks.Inc()
	s.metrics.rejected(typeURL)
	msg := detail.GetMessage()
	if sent.nonce == "" || p == nil {
		// The server ignores a request with a stale nonce.
		s.log.Debug("proxy rejected superseded config", "node", node, "type", typeURL, "nonce", nonce, "error", msg)
		return
	}
	now := time.Now()
	sources := s.sources(msg)
	p.mu.Lock()
	r := p.rejected[typeURL]
	first := r == nil || r.Version != sent.version
	if first {
		r = &Rejection{Node: node, TypeURL: typeURL, Version: sent.version, Sources: sources, First: now}
		if p.rejected == nil {
			p.rejected = map[string]*Rejection{}
		}
		p.rejected[typeURL] = r
		p.typeState(typeURL).lastNACK = r
	}
	r.Error, r.Last = msg, now
	r.Count++
	p.mu.Unlock()
	log := s.log.Debug
	if first {
		log = s.log.Warn
	}
	log("proxy rejected config; not re-sending it until the proxy's config changes", "node", node, "type", typeURL,
		"version", sent.version, "nonce", nonce, "error", msg, "sources", strings.Join(sources, "; "))
}

// sources maps a proxy's error message back to the config it came from,
// with the newest mesh snapshot (the one the rejected config was
// generated from, unless a newer one arrived meanwhile).
func (s *Server) sources(msg string) []string {
	cur := s.current()
	if cur == nil {
		return nil
	}
	var out []string
	for _, m := range generate.Origins(cur.m, msg) {
		out = append(out, fmt.Sprintf("%s (%s:%d)", m, m.File, m.Line))
	}
	return out
}

// Rejections lists the connected proxies' standing rejections: config they
// NACKed and have not since replaced with an accepted version. Sorted by
// node and type.
func (s *Server) Rejections() []Rejection {
	s.mu.Lock()
	ps := make([]*proxy, 0, len(s.proxies))
	for _, p := range s.proxies {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	var out []Rejection
	for _, p := range ps {
		p.mu.Lock()
		for _, r := range p.rejected {
			out = append(out, *r)
		}
		p.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Rejection) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.TypeURL, b.TypeURL))
	})
	return out
}

// streamRequest registers the stream's proxy on its first request and, for
// a proxy not seen before, writes its first snapshot before returning so
// the request can be answered at once. A malformed node ends the stream
// with InvalidArgument.
func (s *Server) streamRequest(key streamKey, node *core.Node) (*proxy, error) {
	s.mu.Lock()
	if p, known := s.streams[key]; known {
		s.mu.Unlock()
		return p, nil
	}
	id, err := parseNode(node)
	if err != nil {
		s.mu.Unlock()
		s.log.Warn("rejecting stream", "node", node.GetId(), "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	p, ok := s.proxies[id.ID]
	fresh := !ok || !reflect.DeepEqual(p.id, id)
	if fresh {
		// New node, or a node id reconnecting with a different identity:
		// start over. Streams of the old identity stay counted on the old
		// proxy, whose close no longer touches the node's snapshot.
		np := newProxy(id)
		if ok {
			p.mu.Lock()
			p.gone = true
			p.mu.Unlock()
		}
		p = np
		s.proxies[id.ID] = p
	}
	p.streams++
	s.streams[key] = p
	s.metrics.proxies.Set(float64(len(s.proxies)))
	s.mu.Unlock()

	if fresh {
		s.log.Info("proxy connected", "node", id.ID, "namespace", id.Namespace, "workload", id.WorkloadName, "ips", id.IPs)
		if s.opts.OnConnect != nil {
			s.opts.OnConnect(id)
		}
		if cur := s.current(); cur != nil {
			if err := s.acquire(); err != nil {
				return nil, status.Error(codes.Unavailable, err.Error())
			}
			s.write(p, cur, time.Time{})
			s.release()
		}
	}
	return p, nil
}

// streamClosed forgets a stream and, with its proxy's last stream, the
// proxy and its snapshot.
func (s *Server) streamClosed(key streamKey) {
	if gone := s.forgetStream(key); gone != nil && s.opts.OnDisconnect != nil {
		s.opts.OnDisconnect(*gone)
	}
}

// forgetStream is streamClosed under the server's lock; it returns the
// identity of the proxy whose last stream this was, or nil.
func (s *Server) forgetStream(key streamKey) *contract.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.streams[key]
	delete(s.streams, key)
	delete(s.sent, key)
	if !ok || p == nil {
		return nil
	}
	p.streams--
	if p.streams > 0 || s.proxies[p.id.ID] != p {
		return nil
	}
	delete(s.proxies, p.id.ID)
	s.metrics.proxies.Set(float64(len(s.proxies)))
	// Under s.mu, so a reconnect of the same node cannot set its new
	// snapshot before this one is cleared.
	p.mu.Lock()
	p.gone = true
	p.snap = nil
	p.mu.Unlock()
	s.log.Info("proxy disconnected", "node", p.id.ID)
	id := p.id
	return &id
}

// parseNode reads and checks the identity a proxy sends.
func parseNode(n *core.Node) (contract.Identity, error) {
	id, err := contract.ParseNode(n)
	if err != nil {
		return contract.Identity{}, fmt.Errorf("xds node: %w", err)
	}
	if id.ID == "" {
		return contract.Identity{}, fmt.Errorf("xds node: id is empty")
	}
	return id, nil
}
