package telemetry

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// FamilySource is a set of metric families built on demand, one family at
// a time, instead of all at once as a prometheus.Collector's are: a
// sidecar of a large mesh has a few hundred thousand per-cluster series,
// and a registry's Gather holds every one of them in memory before the
// first byte of a scrape is written.
//
// Names returns the family names, sorted; it must return the same names
// every time. Family builds the named family with its metrics sorted as a
// prometheus.Registry sorts them (by label values), or returns nil when it
// has no metric. Both may be called from any goroutine, concurrently.
type FamilySource interface {
	Names() []string
	Family(name string) *dto.MetricFamily
}

// Registry is a prometheus.Registry plus families registered as
// FamilySources. Gather merges both, as one slice; GatherEach hands out
// the families one by one in name order, building each FamilySource
// family only when its turn comes, so a scrape written as it is gathered
// (the admin endpoint's /stats/prometheus) holds one large family at a
// time. Both show the same families and series. Safe for concurrent use.
type Registry struct {
	*prometheus.Registry

	mu      sync.Mutex
	sources []FamilySource
	names   map[string]FamilySource // family name -> its source
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{Registry: prometheus.NewRegistry(), names: map[string]FamilySource{}}
}

// FamilyRegisterer is implemented by registries that take FamilySources
// (Registry). Callers given a plain prometheus.Registerer register a
// Collector instead.
type FamilyRegisterer interface {
	// RegisterFamilies adds src. If a source with the same first family
	// name was registered before, it returns that one and no error; if
	// some, but not all, names are taken, an error naming the first.
	RegisterFamilies(src FamilySource) (FamilySource, error)
}

var _ FamilyRegisterer = (*Registry)(nil)

// RegisterFamilies implements FamilyRegisterer.
func (r *Registry) RegisterFamilies(src FamilySource) (FamilySource, error) {
	names := src.Names()
	if len(names) == 0 {
		return nil, errors.New("telemetry: a family source without families")
	}
	if !slices.IsSorted(names) {
		return nil, fmt.Errorf("telemetry: family source %T: names are not sorted", src)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if got, ok := r.names[names[0]]; ok && slices.Equal(got.Names(), names) {
		return got, nil
	}
	for _, n := range names {
		if _, ok := r.names[n]; ok {
			return nil, fmt.Errorf("telemetry: metric family %s is registered twice", n)
		}
	}
	for _, n := range names {
		r.names[n] = src
	}
	r.sources = append(r.sources, src)
	return src, nil
}

// Gather implements prometheus.Gatherer: every family of the registry and
// of the sources, sorted by name.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) {
	var out []*dto.MetricFamily
	err := r.GatherEach(func(f *dto.MetricFamily) error {
		out = append(out, f)
		return nil
	})
	return out, err
}

// GatherEach calls emit with every family in name order, as Gather would
// return them. A source's family is built just before emit sees it and
// is not kept. A gathering error of the registry is returned after every
// family that could be gathered was emitted (as promhttp's
// ContinueOnError does); an error from emit stops at once and is returned.
func (r *Registry) GatherEach(emit func(*dto.MetricFamily) error) error {
	return r.GatherEachSource(emit, func(name string, src FamilySource) error {
		if f := src.Family(name); f != nil && len(f.GetMetric()) > 0 {
			return emit(f)
		}
		return nil
	})
}

// GatherEachSource is GatherEach handing each family of a source to
// source unbuilt, with the source it comes from, in its place in the
// name order: the caller builds it (Family), writes it some other way
// (TextFamilySource) or leaves it out. An error from emit or source
// stops at once and is returned.
func (r *Registry) GatherEachSource(emit func(*dto.MetricFamily) error, source func(name string, src FamilySource) error) error {
	own, gatherErr := r.Registry.Gather()
	r.mu.Lock()
	var streamed []string
	for n := range r.names {
		streamed = append(streamed, n)
	}
	byName := make(map[string]FamilySource, len(r.names))
	for n, s := range r.names {
		byName[n] = s
	}
	r.mu.Unlock()
	slices.Sort(streamed)
	i := 0
	for _, n := range streamed {
		for ; i < len(own) && own[i].GetName() < n; i++ {
			if err := emit(own[i]); err != nil {
				return err
			}
		}
		if i < len(own) && own[i].GetName() == n {
			// A collector's family of the same name: keep the registry's
			// (the source's would be a second family of one name).
			continue
		}
		if err := source(n, byName[n]); err != nil {
			return err
		}
	}
	for ; i < len(own); i++ {
		if err := emit(own[i]); err != nil {
			return err
		}
	}
	return gatherErr
}
