package xdsclient

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/xdswire"
)

// serveStream is the event loop both state machines run on an open
// stream, until ctx is done, the stream fails, or handling fails. Each
// response from recvCh is handled as it arrives, and what else has
// already arrived with it is taken in too, so a burst is applied once
// (maybeApply(false)); an incomplete set is applied anyway once the
// deadline the state keeps (deadline(); zero: none) passes
// (maybeApply(true)). what names the stream in errors. healthy reports
// whether a response arrived. From a response of at least LargeResponse
// bytes until the state has nothing left to apply (waiting() false: the
// first set can take several responses to complete), the loop works
// within heavy's call (Options.HeavyWork; nil: none).
func serveStream[M any](ctx context.Context, what string, recvCh <-chan inbound[M], errCh <-chan error,
	deadline func() time.Time, handle func(inbound[M]) error, maybeApply func(force bool) error,
	waiting func() bool, heavy func() (done func())) (healthy bool, err error) {
	var done func() // heavy's, while a large response is taken in
	defer func() {
		if done != nil {
			done()
		}
	}()
	take := func(r inbound[M]) error {
		if done == nil && heavy != nil && r.size >= LargeResponse {
			done = heavy()
		}
		return handle(r)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var timeout <-chan time.Time
		if d := deadline(); !d.IsZero() {
			timer.Reset(time.Until(d))
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case err := <-errCh:
			return healthy, fmt.Errorf("receiving from %s: %w", what, err)
		case r := <-recvCh:
			healthy = true
			if err := take(r); err != nil {
				return healthy, err
			}
		drain:
			for {
				select {
				case r := <-recvCh:
					if err := take(r); err != nil {
						return healthy, err
					}
				default:
					break drain
				}
			}
			err := maybeApply(false)
			if done != nil && !waiting() {
				done()
				done = nil
			}
			if err != nil {
				return healthy, err
			}
		case <-timeout:
			err := maybeApply(true)
			if done != nil && !waiting() {
				done()
				done = nil
			}
			if err != nil {
				return healthy, err
			}
		}
		timer.Stop()
	}
}

// LargeResponse is the size of a response from which its handling is
// heavy work (Options.HeavyWork): a sidecar's first configuration in a
// mesh of some hundred services, a reconnect that did not resume, a
// large change. Endpoint and route updates of a few services are far
// below it.
const LargeResponse = 64 << 10

// inbound is a response and the length of its encoding, which the
// statistics count (protocol.go).
type inbound[M any] struct {
	msg  M
	size int
}

// recvSized returns stream's receive function: each response decoded
// into a message from fresh, with its length as the codec saw it
// (xdswire.Sized; the connection's codec is xdswire.Codec).
func recvSized[M proto.Message](stream grpc.ClientStream, fresh func() M) func() (inbound[M], error) {
	return func() (inbound[M], error) {
		in := xdswire.Sized{Msg: fresh()}
		if err := stream.RecvMsg(&in); err != nil {
			return inbound[M]{}, err
		}
		return inbound[M]{msg: in.Msg.(M), size: in.Len}, nil
	}
}

// startReceiving starts the only reader of a stream: it calls recv until
// it fails (the error goes to errCh) or ctx is done, handing each
// response to recvCh. wait returns once the reader has ended; cancel ctx
// first, which unblocks recv.
func startReceiving[R any](ctx context.Context, recv func() (R, error)) (recvCh <-chan R, errCh <-chan error, wait func()) {
	rc := make(chan R)
	ec := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := recv()
			if err != nil {
				ec <- err
				return
			}
			select {
			case rc <- r:
			case <-ctx.Done():
				return
			}
		}
	})
	return rc, ec, wg.Wait
}
