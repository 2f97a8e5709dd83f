package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/xds/h2rpc"
)

// An ADS stream over h2rpc (transport.go) has no goroutine of its own
// while it is idle. The connection's reader hands each request message
// to Message, which queues it and, unless one runs, starts the stream's
// request goroutine; that goroutine decodes and handles the queued
// requests in order (under the stream's lock, sending what they ask
// for) and ends when the queue is empty. Pushes start push goroutines as
// before (ads.go). The stream ends (stop) when the proxy ends it or its
// connection is lost, when a request cannot be served, when a push
// fails, or when the server stops — each writing the stream's status,
// except when the proxy is gone.

// maxQueuedRequests bounds a stream's requests waiting to be handled: a
// proxy sends one per type it is answering, so a longer queue is a
// client that does not wait for answers.
const maxQueuedRequests = 256

// wireStream is one ADS stream served over h2rpc.
type wireStream struct {
	s         *Server
	hs        *h2rpc.Stream
	st        *adsStream
	authorize func(context.Context, *core.Node) error
	ctx       context.Context // done when the stream stops
	cancel    context.CancelFunc
	unhook    func() bool // stops the server-stop hook

	qmu     sync.Mutex
	queue   [][]byte
	running bool // the request goroutine runs
	eof     bool // the proxy half-closed: stop once the queue is handled
	over    bool // stopping: handle nothing more

	// work counts the request goroutine and the push goroutines.
	work sync.WaitGroup
	// The request goroutine's alone.
	started bool
	node    *core.Node // the first request's node, when authorized

	stopOnce sync.Once
}

// openStream takes the ADS streams of an h2rpc connection; other calls
// go to the endpoint's gRPC server.
func (s *Server) openStream(hs *h2rpc.Stream, ep Endpoint) h2rpc.StreamHandler {
	var delta bool
	switch hs.Method() {
	case adsMethodPrefix + "StreamAggregatedResources":
	case adsMethodPrefix + "DeltaAggregatedResources":
		delta = true
	default:
		return nil
	}
	w := &wireStream{s: s, hs: hs, st: s.newStream(delta), authorize: ep.AuthorizeNode}
	w.ctx, w.cancel = context.WithCancel(hs.Context())
	st := w.st
	st.send = w.send
	s.metrics.streams.Inc()
	st.wmu.Lock()
	st.end = func(err error) { go w.stop(err, true) }
	st.startFn = func() { w.work.Go(func() { s.pushLoop(w.ctx, st) }) }
	st.wmu.Unlock()
	w.unhook = context.AfterFunc(s.serveContext(), func() { w.stop(nil, true) })
	return w
}

// Message queues a request (on the connection's reader goroutine).
func (w *wireStream) Message(b []byte) {
	w.qmu.Lock()
	if w.over || w.eof {
		w.qmu.Unlock()
		return
	}
	if len(w.queue) >= maxQueuedRequests {
		w.over = true
		w.qmu.Unlock()
		go w.stop(status.Errorf(codes.ResourceExhausted, "more than %d requests waiting to be handled", maxQueuedRequests), true)
		return
	}
	w.queue = append(w.queue, b)
	start := !w.running
	if start {
		w.running = true
		w.work.Add(1)
	}
	w.qmu.Unlock()
	if start {
		go w.serve()
	}
}

// Closed: the proxy ended its side (io.EOF: the stream then ends with OK
// once its requests are handled, as gRPC's handler returning nil would)
// or the stream is gone.
func (w *wireStream) Closed(err error) {
	if !errors.Is(err, io.EOF) {
		go w.stop(nil, false)
		return
	}
	w.qmu.Lock()
	w.eof = true
	idle := !w.running
	w.qmu.Unlock()
	if idle {
		go w.stop(nil, true)
	}
}

// serve is the request goroutine.
func (w *wireStream) serve() {
	defer w.work.Done()
	for {
		w.qmu.Lock()
		if len(w.queue) == 0 || w.over {
			w.running = false
			eof := w.eof && !w.over
			w.queue = nil
			w.qmu.Unlock()
			if eof {
				go w.stop(nil, true)
			}
			return
		}
		b := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		w.qmu.Unlock()

		err := w.handle(b)
		if err != nil {
			w.qmu.Lock()
			w.over, w.running, w.queue = true, false, nil
			w.qmu.Unlock()
			go w.stop(err, true)
			return
		}
	}
}

// handle decodes and serves one request.
func (w *wireStream) handle(b []byte) error {
	st := w.st
	var msg nodeRequest
	var req adsRequest
	if st.key.delta {
		m := new(discovery.DeltaDiscoveryRequest)
		msg, req = m, deltaRequest{m}
	} else {
		m := new(discovery.DiscoveryRequest)
		msg, req = m, sotwRequest{m}
	}
	if err := proto.Unmarshal(b, msg); err != nil {
		return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	verified := false
	if !w.started {
		w.started = true
		if w.authorize != nil {
			node := msg.GetNode()
			if err := w.authorize(w.ctx, node); err != nil {
				w.s.log.Warn("ADS stream refused", "node", node.GetId(), "error", err)
				if _, ok := status.FromError(err); !ok {
					err = status.Error(codes.PermissionDenied, err.Error())
				}
				return err
			}
			w.node, verified = node, true
		}
	} else if w.node != nil && msg.GetNode() != nil && !proto.Equal(msg.GetNode(), w.node) {
		err := status.Errorf(codes.PermissionDenied, "node %q: a stream may not change its node (it began as %q)", msg.GetNode().GetId(), w.node.GetId())
		w.s.log.Warn("ADS stream ended", "node", w.node.GetId(), "error", err)
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if verified {
		st.verified = true
	}
	if err := w.s.handle(st, req); err != nil {
		if isDone(w.s.serveContext().Done()) {
			return nil // a send cut short by the shutdown
		}
		return err
	}
	return nil
}

// send encodes a response with the server's codec and writes it; it
// returns once the response is on the connection.
func (w *wireStream) send(r any) error {
	bs, err := wireCodecV.Marshal(r)
	if err != nil {
		return err
	}
	defer bs.Free()
	var small [4][]byte
	pieces := small[:0]
	for _, b := range bs {
		pieces = append(pieces, b.ReadOnlyData())
	}
	return w.hs.Send(pieces...)
}

var wireCodecV = newWireCodec()

// stop ends the stream once: with err's status (OK for nil) when finish
// is set, then waits for its goroutines and forgets it.
func (w *wireStream) stop(err error, finish bool) {
	w.stopOnce.Do(func() {
		w.unhook()
		w.qmu.Lock()
		w.over, w.queue = true, nil
		w.qmu.Unlock()
		st := w.st
		st.wmu.Lock()
		if err == nil {
			err = st.pushErr
		}
		st.closed = true // no push goroutine starts from now on
		st.wmu.Unlock()
		if isDone(w.s.serveContext().Done()) {
			err = nil // the server stops: a clean end, so the proxy moves on at once
		}
		if finish {
			// The status is written under the stream's lock, never
			// beside a Send: a request being handled or a push under way
			// finishes first, up to endWait; a Send blocked longer (a
			// proxy that does not read) is reset.
			locked := make(chan struct{})
			go func() { st.mu.Lock(); close(locked) }()
			t := time.NewTimer(endWait)
			select {
			case <-locked:
			case <-t.C:
				w.hs.Reset(http2.ErrCodeCancel)
				<-locked
			}
			t.Stop()
			_ = w.hs.FinishErr(err)
			st.mu.Unlock()
		}
		w.cancel()
		w.work.Wait()
		w.s.closeStream(st)
		w.s.metrics.streams.Dec()
	})
}
