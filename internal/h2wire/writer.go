package h2wire

import (
	"errors"
	"net"
	"sync"
)

// Writer writes whole frames to a connection for any goroutine. Control
// frames (acknowledgements, window updates, resets) are queued and go
// out ahead of the next write, or at once when no write is under way, so
// the goroutine that reads the connection never waits for one.
type Writer struct {
	nc         net.Conn
	maxPending int
	fail       func(error)

	wmu  sync.Mutex
	werr error // the first write error; the connection is over

	mu      sync.Mutex
	control []byte
	spare   []byte // control's other buffer, given back after a write: queueing allocates nothing
	closed  bool
}

// maxSpare is the largest control buffer kept for reuse.
const maxSpare = 4 << 10

// ErrPeerNotReading is what a Writer fails with when more control frames
// wait than it may hold: the peer makes them without reading.
var ErrPeerNotReading = errors.New("http2: the peer does not read what it is sent")

// NewWriter writes to nc. More than maxPending bytes of control frames
// waiting, or a write error, calls fail (once per cause; it should close
// the connection).
func NewWriter(nc net.Conn, maxPending int, fail func(error)) *Writer {
	return &Writer{nc: nc, maxPending: maxPending, fail: fail}
}

// Queue adds control frames, written before the next write or now.
func (w *Writer) Queue(b []byte) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.control = append(w.control, b...)
	over := len(w.control) > w.maxPending
	w.mu.Unlock()
	if over {
		w.fail(ErrPeerNotReading)
		return
	}
	w.Flush()
}

// Flush writes the queued control frames unless a write holds the
// connection (which writes them after its own).
func (w *Writer) Flush() {
	for {
		if !w.wmu.TryLock() {
			return
		}
		b := w.take()
		if len(b) > 0 && w.werr == nil {
			if _, err := w.nc.Write(b); err != nil {
				w.werr = err
			}
		}
		w.giveBack(b)
		w.wmu.Unlock()
		w.mu.Lock()
		more := len(w.control) > 0 && !w.closed
		w.mu.Unlock()
		if !more {
			return
		}
	}
}

// Write writes b (whole frames) after the queued control frames, in one
// system call.
func (w *Writer) Write(b []byte) error {
	w.wmu.Lock()
	err := w.werr
	if err == nil {
		ctl := w.take()
		if len(ctl) > 0 {
			b = append(ctl, b...)
		}
		if _, err = w.nc.Write(b); err != nil {
			w.werr = err
		}
		w.giveBack(ctl)
	}
	w.wmu.Unlock()
	if err != nil {
		w.fail(err)
		return err
	}
	w.Flush()
	return nil
}

// take takes the queued control frames; w.wmu is held.
func (w *Writer) take() []byte {
	w.mu.Lock()
	b := w.control
	w.control, w.spare = w.spare, nil
	w.mu.Unlock()
	return b
}

// giveBack keeps b, written, as the next spare buffer; w.wmu is held.
func (w *Writer) giveBack(b []byte) {
	if cap(b) == 0 || cap(b) > maxSpare {
		return
	}
	w.mu.Lock()
	if w.spare == nil && !w.closed {
		w.spare = b[:0]
	}
	w.mu.Unlock()
}

// Close drops what is queued; later control frames are dropped.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	w.control, w.spare = nil, nil
	w.mu.Unlock()
}
