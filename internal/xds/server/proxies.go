package server

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"weft.dev/weft/internal/xds/contract"
)

// proxy is one connected node. Its identity is fixed for its lifetime;
// streams is guarded by Server.mu, the rest by mu.
type proxy struct {
	id      contract.Identity
	streams int

	mu       sync.Mutex
	gone     bool     // its last stream closed; never write its snapshot again
	seq      uint64   // sequence of the mesh snapshot last written
	versions []string // per-type versions last written
}

// streamKey tells state-of-the-world and delta streams apart:
// go-control-plane numbers them independently.
type streamKey struct {
	delta bool
	id    int64
}

// callbacks wires go-control-plane's stream events to proxy tracking. They
// run on each stream's goroutine; request callbacks may block while the
// proxy's first snapshot is generated (bounded by the push semaphore).
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error {
			s.metrics.streams.Inc()
			return nil
		},
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			s.metrics.streams.Inc()
			return nil
		},
		StreamClosedFunc: func(id int64, _ *core.Node) {
			s.metrics.streams.Dec()
			s.streamClosed(streamKey{id: id})
		},
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) {
			s.metrics.streams.Dec()
			s.streamClosed(streamKey{delta: true, id: id})
		},
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			if req.GetErrorDetail() != nil {
				s.nack(req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
			}
			return s.streamRequest(streamKey{id: id}, req.GetNode())
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			if req.GetErrorDetail() != nil {
				s.nack(req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
			}
			return s.streamRequest(streamKey{delta: true, id: id}, req.GetNode())
		},
	}
}

func (s *Server) nack(node, typeURL, nonce, msg string) {
	s.metrics.nacks.Inc()
	s.log.Warn("proxy rejected config", "node", node, "type", typeURL, "nonce", nonce, "error", msg)
}

// streamRequest registers the stream's proxy on its first request and, for
// a proxy not seen before, writes its first snapshot before returning so
// the cache can answer the request at once. A malformed node ends the
// stream with InvalidArgument.
func (s *Server) streamRequest(key streamKey, node *core.Node) error {
	s.mu.Lock()
	if _, known := s.streams[key]; known {
		s.mu.Unlock()
		return nil
	}
	id, err := parseNode(node)
	if err != nil {
		s.mu.Unlock()
		s.log.Warn("rejecting stream", "node", node.GetId(), "error", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	p, ok := s.proxies[id.ID]
	fresh := !ok || !reflect.DeepEqual(p.id, id)
	if fresh {
		// New node, or a node id reconnecting with a different identity:
		// start over. Streams of the old identity stay counted on the old
		// proxy, whose close no longer touches the node's snapshot.
		np := &proxy{id: id}
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
		if cur := s.current(); cur != nil {
			if err := s.acquire(); err != nil {
				return status.Error(codes.Unavailable, err.Error())
			}
			s.write(p, cur)
			s.release()
		}
	}
	return nil
}

// streamClosed forgets a stream and, with its proxy's last stream, the
// proxy and its cache snapshot.
func (s *Server) streamClosed(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.streams[key]
	delete(s.streams, key)
	if !ok || p == nil {
		return
	}
	p.streams--
	if p.streams > 0 || s.proxies[p.id.ID] != p {
		return
	}
	delete(s.proxies, p.id.ID)
	s.metrics.proxies.Set(float64(len(s.proxies)))
	// Under s.mu, so a reconnect of the same node cannot set its new
	// snapshot before this one is cleared.
	p.mu.Lock()
	p.gone = true
	s.cache.ClearSnapshot(p.id.ID)
	p.mu.Unlock()
	s.log.Info("proxy disconnected", "node", p.id.ID)
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
