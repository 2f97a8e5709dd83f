package controlplane

import (
	"encoding/json"
	"net/http"
	"strings"

	"weft.dev/weft/internal/analyze"
	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/explain"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
)

// analyzeHandler serves GET /debug/analyze: the analysis of the config in
// force against the live registry (weft analyze --control-plane).
func (c *ControlPlane) analyzeHandler(w http.ResponseWriter, _ *http.Request) {
	m := c.current.Load()
	if m == nil {
		m = mesh.Build(nil, nil, c.meshOptions())
	}
	// The newest config snapshot carries the newest diagnostics even when
	// they changed nothing in force.
	cfg := c.store.Snapshot()
	if cfg.Version != m.Config.Version {
		m = mesh.Build(cfg, static.Build(cfg, c.opts.DomainSuffix), c.meshOptions())
	}
	ds := analyze.Mesh(m, analyze.Options{})
	if ds == nil {
		ds = []config.Diagnostic{}
	}
	writeJSON(w, struct {
		Version     string              `json:"version"`
		Diagnostics []config.Diagnostic `json:"diagnostics"`
	}{m.Version, ds})
}

// explainHandler serves GET /debug/explain?proxy=&host=&path=&method=&header=k:v:
// what a connected proxy does with a request (weft explain).
func (c *ControlPlane) explainHandler(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, err := c.xds.Identity(q.Get("proxy"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	req := explain.Request{Host: q.Get("host"), Path: q.Get("path"), Method: q.Get("method"), Headers: map[string]string{}}
	for _, h := range q["header"] {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			http.Error(w, "header "+h+": want name:value", http.StatusBadRequest)
			return
		}
		req.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	m := c.current.Load()
	if m == nil {
		http.Error(w, "no config applied yet", http.StatusServiceUnavailable)
		return
	}
	e, err := explain.Explain(m, id, req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(e)
}
