// Package admin serves the proxy's admin endpoint: readiness, liveness,
// the config dump, Prometheus metrics and drain. It knows nothing of xDS
// or the data plane beyond the small Source interface.
package admin

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source is what the admin endpoint reports on.
//
// Ready is called on every /ready probe, concurrently with everything else:
// it must be a cheap, non-blocking read (an atomic), so readiness never
// depends on how busy config processing is. ConfigDump may take longer and
// is called concurrently too.
type Source interface {
	Ready() bool
	ConfigDump() ([]byte, error)
}

// DumpWriter is a Source that can write its config dump as it renders
// it (a sidecar of a large mesh dumps megabytes): /config_dump then
// streams it.
type DumpWriter interface {
	WriteConfigDump(w io.Writer) error
}

// Option adds to the admin handler.
type Option func(*handler)

// WithDrain enables POST /drain: once called, /ready answers 503 for good
// and hook (if not nil) runs once, e.g. to start a graceful shutdown.
func WithDrain(hook func()) Option {
	return func(h *handler) {
		h.drainEnabled = true
		h.drainHook = hook
	}
}

// WithLogger sets the logger for failed requests (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(h *handler) { h.log = l } }

// CertificateSet is one TLS context on GET /certs: the trust roots it
// verifies peers against and the certificate chain it presents (leaf
// first). Name is the secret name each list is served as.
type CertificateSet struct {
	CAName, ChainName string
	CA, Chain         []*x509.Certificate
}

// WithCerts serves GET /certs: the certificates f returns, as Envoy's
// admin /certs shows them. f is called on every request, concurrently;
// it must not block.
func WithCerts(f func() []CertificateSet) Option { return func(h *handler) { h.certs = f } }

// WithHandler mounts an extra handler at a net/http ServeMux pattern.
func WithHandler(pattern string, hd http.Handler) Option {
	return func(h *handler) { h.extra = append(h.extra, route{pattern, hd}) }
}

type route struct {
	pattern string
	h       http.Handler
}

type handler struct {
	src          Source
	log          *slog.Logger
	drainEnabled bool
	drainHook    func()
	draining     atomic.Bool
	certs        func() []CertificateSet
	extra        []route
}

// Handler returns the admin HTTP handler:
//
//	GET  /ready            200 "LIVE" once src is ready and not draining, else 503
//	GET  /healthz          200 always: the process is alive
//	GET  /config_dump      src.ConfigDump() as JSON
//	GET  /stats/prometheus the gatherer's metrics (an EachGatherer's written family by family)
//	POST /drain            with WithDrain: mark not ready
//	GET  /certs            the TLS certificates (empty list without WithCerts), read-only
//	GET  /debug/pprof/...  Go runtime profiles (the admin listener is loopback by default)
//	POST /heapprofiler     ?enable=y|n: the heap profiler's sampling on or off (heapprofiler.go)
//
// The handler is safe for concurrent use.
func Handler(src Source, gatherer prometheus.Gatherer, opts ...Option) http.Handler {
	h := &handler{src: src, log: slog.Default()}
	for _, o := range opts {
		o(h)
	}
	h.log = h.log.With("component", "admin")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", h.ready)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("OK\n"))
	})
	mux.HandleFunc("GET /config_dump", h.configDump)
	mux.HandleFunc("GET /certs", h.listCerts)
	mux.Handle("GET /stats/prometheus", metricsHandler(gatherer, h.log))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /heapprofiler", heapProfiler)
	if h.drainEnabled {
		mux.HandleFunc("POST /drain", h.drain)
	}
	for _, r := range h.extra {
		mux.Handle(r.pattern, r.h)
	}
	return mux
}

func (h *handler) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch {
	case h.draining.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("DRAINING\n"))
	case !h.src.Ready():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("PRE_INITIALIZING\n"))
	default:
		_, _ = w.Write([]byte("LIVE\n"))
	}
}

func (h *handler) configDump(w http.ResponseWriter, r *http.Request) {
	if dw, ok := h.src.(DumpWriter); ok {
		w.Header().Set("Content-Type", "application/json")
		if err := dw.WriteConfigDump(w); err != nil {
			// Written in part: the client sees a cut-off body.
			h.log.Warn("config dump: writing to the client failed", "error", err)
		}
		return
	}
	b, err := h.src.ConfigDump()
	if err != nil {
		h.log.Error("config dump failed", "error", err)
		http.Error(w, "config dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (h *handler) drain(w http.ResponseWriter, _ *http.Request) {
	if h.draining.CompareAndSwap(false, true) {
		h.log.Info("draining: readiness now fails")
		if h.drainHook != nil {
			h.drainHook()
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("OK\n"))
}

// certDetails is one certificate on /certs, with Envoy's field names
// (envoy.admin.v3.CertificateDetails).
type certDetails struct {
	Path                string    `json:"path"`
	SerialNumber        string    `json:"serial_number"`
	SubjectAltNames     []sanJSON `json:"subject_alt_names"`
	DaysUntilExpiration string    `json:"days_until_expiration"`
	ValidFrom           string    `json:"valid_from"`
	ExpirationTime      string    `json:"expiration_time"`
}

type sanJSON struct {
	URI string `json:"uri,omitempty"`
	DNS string `json:"dns,omitempty"`
	IP  string `json:"ip_address,omitempty"`
}

type certsJSON struct {
	Certificates []certSetJSON `json:"certificates"`
}

type certSetJSON struct {
	CACert    []certDetails `json:"ca_cert"`
	CertChain []certDetails `json:"cert_chain"`
}

func details(path string, cs []*x509.Certificate, now time.Time) []certDetails {
	out := []certDetails{}
	for _, c := range cs {
		d := certDetails{Path: path, SerialNumber: c.SerialNumber.Text(16), SubjectAltNames: []sanJSON{},
			DaysUntilExpiration: strconv.Itoa(max(0, int(c.NotAfter.Sub(now).Hours()/24))),
			ValidFrom:           c.NotBefore.UTC().Format(time.RFC3339), ExpirationTime: c.NotAfter.UTC().Format(time.RFC3339)}
		for _, u := range c.URIs {
			d.SubjectAltNames = append(d.SubjectAltNames, sanJSON{URI: u.String()})
		}
		for _, n := range c.DNSNames {
			d.SubjectAltNames = append(d.SubjectAltNames, sanJSON{DNS: n})
		}
		for _, ip := range c.IPAddresses {
			d.SubjectAltNames = append(d.SubjectAltNames, sanJSON{IP: ip.String()})
		}
		out = append(out, d)
	}
	return out
}

func (h *handler) listCerts(w http.ResponseWriter, _ *http.Request) {
	out := certsJSON{Certificates: []certSetJSON{}}
	if h.certs != nil {
		now := time.Now()
		for _, s := range h.certs() {
			out.Certificates = append(out.Certificates, certSetJSON{CACert: details(s.CAName, s.CA, now), CertChain: details(s.ChainName, s.Chain, now)})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
