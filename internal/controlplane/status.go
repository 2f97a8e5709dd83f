package controlplane

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/server"
)

// Status is the body of GET /status.
type Status struct {
	// Version is the mesh snapshot version in force ("" before the first).
	Version       string `json:"version"`
	ConfigVersion uint64 `json:"configVersion"`
	Resources     struct {
		VirtualServices  int `json:"virtualServices"`
		DestinationRules int `json:"destinationRules"`
		ServiceEntries   int `json:"serviceEntries"`
		WorkloadEntries  int `json:"workloadEntries"`
		// The security resources.
		PeerAuthentications    int `json:"peerAuthentications"`
		AuthorizationPolicies  int `json:"authorizationPolicies"`
		RequestAuthentications int `json:"requestAuthentications"`
		Services               int `json:"services"`
		Endpoints              int `json:"endpoints"`
	} `json:"resources"`
	// CA says where the mesh CA's root comes from.
	CA struct {
		Mode            string `json:"mode"`
		TrustDomain     string `json:"trustDomain"`
		WorkloadCertTTL string `json:"workloadCertTTL"`
	} `json:"ca"`
	ConnectedProxies int    `json:"connectedProxies"`
	Pushes           uint64 `json:"pushes"`
	// Diagnostics are the config store's current errors and warnings: a
	// file that failed to load is named here even though the last good
	// version of its resources stays in force.
	Diagnostics []config.Diagnostic `json:"diagnostics"`
	// Rejections are configs that proxies NACKed and that no later accepted
	// version has replaced: the control plane holds them back instead of
	// re-sending, and the proxies keep serving their last good config.
	Rejections []server.Rejection `json:"rejections"`
	// JWKS lists the JWT key sources the RequestAuthentications in force
	// use: whether their keys were ever fetched (until then those rules
	// reject every token), when, and the last error (the last good keys
	// stay in force meanwhile).
	JWKS []jwks.Status `json:"jwks"`
	// ConfigSources are the config sources besides the directory (the
	// Kubernetes API server): synced, connected, last error.
	ConfigSources []config.SourceStatus `json:"configSources"`
	// Registries are the service registries besides ServiceEntries
	// (Kubernetes, Consul). While one cannot be reached its last known
	// services and endpoints keep serving, and it says so here.
	Registries []registry.SourceStatus `json:"registries"`
	// RegistryConflicts are hosts that several registries define
	// differently (ports, protocols): which definition is in force and
	// which is ignored.
	RegistryConflicts []string `json:"registryConflicts"`
}

func (c *ControlPlane) statusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, c.status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/snapshot", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, c.debugSnapshot())
	})
	mux.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, c.debugProxies())
	})
	mux.HandleFunc("GET /debug/analyze", c.analyzeHandler) // debug.go
	mux.HandleFunc("GET /debug/explain", c.explainHandler) // debug.go
	mux.HandleFunc("POST /debug/token", c.tokenHandler)    // security.go
	mux.HandleFunc("GET /debug/root-cert", c.rootCertHandler)
	// Go's profiler, as istiod serves it on its monitoring port.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// status reads the latest state; safe from any goroutine.
func (c *ControlPlane) status() Status {
	var st Status
	cfg := c.store.Snapshot() // newest, diagnostics included even when nothing else changed
	st.ConfigVersion = cfg.Version
	st.Diagnostics = cfg.Diagnostics
	if st.Diagnostics == nil {
		st.Diagnostics = []config.Diagnostic{}
	}
	st.Resources.VirtualServices = len(cfg.VirtualServices)
	st.Resources.DestinationRules = len(cfg.DestinationRules)
	st.Resources.ServiceEntries = len(cfg.ServiceEntries)
	st.Resources.WorkloadEntries = len(cfg.WorkloadEntries)
	st.Resources.PeerAuthentications = len(cfg.PeerAuthentications)
	st.Resources.AuthorizationPolicies = len(cfg.AuthorizationPolicies)
	st.Resources.RequestAuthentications = len(cfg.RequestAuthentications)
	if m := c.current.Load(); m != nil {
		st.Version = m.Version
		svcs := m.Registry.Services()
		st.Resources.Services = len(svcs)
		for _, s := range svcs {
			st.Resources.Endpoints += len(m.Registry.Endpoints(s.Hostname, 0))
		}
	}
	st.Rejections = c.xds.Rejections()
	if st.Rejections == nil {
		st.Rejections = []server.Rejection{}
	}
	st.JWKS = c.jwks.Status()
	st.CA.Mode, st.CA.TrustDomain, st.CA.WorkloadCertTTL = c.ca.Mode(), c.ca.TrustDomain(), c.ca.WorkloadCertTTL().String()
	st.ConnectedProxies = c.xds.ConnectedProxies()
	st.Pushes = c.xds.Pushes()
	st.ConfigSources = []config.SourceStatus{}
	for _, s := range c.opts.ConfigSources {
		st.ConfigSources = append(st.ConfigSources, s.Status())
	}
	st.Registries = []registry.SourceStatus{}
	for _, r := range c.registries() {
		st.Registries = append(st.Registries, r.Status())
	}
	st.RegistryConflicts = c.registryConflicts()
	return st
}

// DebugProxies is the body of GET /debug/proxies, what `weft proxy-status`
// shows and how `weft proxy-config` finds a proxy's admin address.
type DebugProxies struct {
	// Version is the mesh snapshot version in force ("" before the first).
	Version string `json:"version"`
	// Proxies are the connected proxies, sorted by node id, each with its
	// identity, admin address and per-type xDS sync state.
	Proxies []server.ProxyStatus `json:"proxies"`
}

// debugProxies reads the connected proxies' state; safe from any goroutine.
func (c *ControlPlane) debugProxies() DebugProxies {
	out := DebugProxies{Proxies: c.xds.ProxyStatuses()}
	if m := c.current.Load(); m != nil {
		out.Version = m.Version
	}
	return out
}

// debugSnapshot lists the services and the VirtualService/DestinationRule
// each resolves to, for humans debugging routing.
func (c *ControlPlane) debugSnapshot() any {
	type svc struct {
		Host            string   `json:"host"`
		Ports           []uint32 `json:"ports"`
		Endpoints       int      `json:"endpoints"`
		VirtualServices []string `json:"virtualServices,omitempty"`
		DestinationRule string   `json:"destinationRule,omitempty"`
	}
	out := struct {
		Version  string `json:"version"`
		Services []svc  `json:"services"`
	}{Services: []svc{}}
	m := c.current.Load()
	if m == nil {
		return out
	}
	out.Version = m.Version
	for _, s := range m.Registry.Services() {
		e := svc{Host: s.Hostname, Endpoints: len(m.Registry.Endpoints(s.Hostname, 0))}
		for _, p := range s.Ports {
			e.Ports = append(e.Ports, p.Number)
		}
		for _, vs := range m.Routes.ForHost(s.Hostname) {
			e.VirtualServices = append(e.VirtualServices, vs.Namespace+"/"+vs.Name)
		}
		if dr := m.Subsets.ForHost(s.Hostname); dr != nil {
			e.DestinationRule = dr.Namespace + "/" + dr.Name
		}
		out.Services = append(out.Services, e)
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}
