package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultQueueLines is how many lines a sink holds waiting to be written;
// a line that finds the queue full is dropped.
const DefaultQueueLines = 4096

// Metric names, documented in docs/observability.md.
const (
	MetricDropped = "weft_proxy_access_log_lines_dropped_total"
	MetricWritten = "weft_proxy_access_log_lines_written_total"
	MetricErrors  = "weft_proxy_access_log_write_errors_total"
)

// Sinks opens and owns the proxy's access log files: one Sink per path,
// shared by every logger (and configuration) that writes there, so a
// config update reopens nothing and keeps the order of lines. Its writers
// run until Close.
type Sinks struct {
	log        *slog.Logger
	queueLines int
	dropped    *prometheus.CounterVec
	written    *prometheus.CounterVec
	errors     *prometheus.CounterVec
	open       func(path string) (io.WriteCloser, error)

	mu     sync.Mutex
	byPath map[string]*Sink
	closed bool
	wg     sync.WaitGroup
}

// SinksOptions configure NewSinks.
type SinksOptions struct {
	// Registerer gets the sinks' counters; nil: a private registry.
	Registerer prometheus.Registerer
	Logger     *slog.Logger // nil: discard
	// QueueLines bounds each sink's queue; 0 means DefaultQueueLines.
	QueueLines int
	// Open opens a path for appending; nil means os.OpenFile with
	// O_APPEND|O_CREATE|O_WRONLY, 0644, with /dev/stdout and /dev/stderr
	// the process's own streams. Tests use it to slow a sink down.
	Open func(path string) (io.WriteCloser, error)
}

// NewSinks returns an empty set of sinks. Errors come from registering
// its metrics.
func NewSinks(o SinksOptions) (*Sinks, error) {
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Sinks{log: o.Logger, queueLines: o.QueueLines, byPath: map[string]*Sink{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.queueLines <= 0 {
		s.queueLines = DefaultQueueLines
	}
	s.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricDropped,
		Help: "Access log lines dropped because the sink's queue was full (the sink writes slower than requests finish)."}, []string{"path"})
	s.written = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricWritten,
		Help: "Access log lines written to the sink."}, []string{"path"})
	s.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricErrors,
		Help: "Failed writes to an access log sink (the lines of the failed write are lost)."}, []string{"path"})
	for _, c := range []prometheus.Collector{s.dropped, s.written, s.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if o.Open != nil {
		s.open = o.Open
	}
	return s, nil
}

// open is the default opener (SinksOptions.Open).
func defaultOpen(path string) (io.WriteCloser, error) {
	switch path {
	case "/dev/stdout":
		return nopCloser{os.Stdout}, nil
	case "/dev/stderr":
		return nopCloser{os.Stderr}, nil
	}
	return os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Open returns the sink of path, opening it (and starting its writer) the
// first time. Called when a configuration is translated; safe for
// concurrent use.
func (s *Sinks) Open(path string) (*Sink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("access log sinks are closed")
	}
	if k := s.byPath[path]; k != nil {
		return k, nil
	}
	open := s.open
	if open == nil {
		open = defaultOpen
	}
	w, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("access log %s: %w", path, err)
	}
	k := &Sink{
		path: path, q: make(chan *[]byte, s.queueLines), stop: make(chan struct{}),
		dropped: s.dropped.WithLabelValues(path), written: s.written.WithLabelValues(path), errors: s.errors.WithLabelValues(path),
	}
	s.byPath[path] = k
	s.wg.Go(func() { k.run(w, s.log) })
	return k, nil
}

// Close stops every writer once it has written what its queue holds, and
// closes the files. Lines logged after Close are dropped.
func (s *Sinks) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, k := range s.byPath {
		k.closing.Store(true)
		close(k.stop)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Sink is one access log file with its queue and writer goroutine.
type Sink struct {
	path    string
	q       chan *[]byte
	stop    chan struct{}
	closing atomic.Bool
	dropped prometheus.Counter
	written prometheus.Counter
	errors  prometheus.Counter
}

// linePool recycles line buffers between request goroutines and writers.
var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledLine: bigger buffers are left to the garbage collector.
const maxPooledLine = 64 << 10

func putLine(b *[]byte) {
	if cap(*b) <= maxPooledLine {
		*b = (*b)[:0]
		linePool.Put(b)
	}
}

// write queues a line (taking ownership of b) or drops it when the queue
// is full. Never blocks.
func (k *Sink) write(b *[]byte) {
	if k.closing.Load() {
		k.dropped.Inc()
		putLine(b)
		return
	}
	select {
	case k.q <- b:
	default:
		k.dropped.Inc()
		putLine(b)
	}
}

// run writes queued lines, flushing whenever the queue runs empty, until
// stop; then it writes what is left and closes w.
func (k *Sink) run(w io.WriteCloser, log *slog.Logger) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var pending float64 // lines in bw not yet flushed
	warned := false
	flush := func() {
		if bw.Buffered() == 0 {
			return
		}
		if err := bw.Flush(); err != nil {
			k.errors.Inc()
			if !warned {
				warned = true
				log.Warn("access log write failed; its lines are lost (further failures are only counted)", "path", k.path, "metric", MetricErrors, "err", err)
			}
			bw.Reset(w)
			pending = 0
			return
		}
		k.written.Add(pending)
		pending = 0
	}
	take := func(b *[]byte) {
		if bw.Available() < len(*b) {
			flush()
		}
		bw.Write(*b) // errors surface at Flush
		pending++
		putLine(b)
	}
	defer func() {
		flush()
		w.Close()
	}()
	for {
		select {
		case b := <-k.q:
			take(b)
			// What the queue holds, at most one queue's worth: a writer
			// whose queue refills as fast as it empties still flushes
			// (and a full queue drops lines rather than grow the batch).
			for n := 0; n < cap(k.q); n++ {
				select {
				case b := <-k.q:
					take(b)
				default:
					n = cap(k.q)
				}
			}
			flush()
		case <-k.stop:
			for {
				select {
				case b := <-k.q:
					take(b)
				default:
					return
				}
			}
		}
	}
}
