package cluster

import (
	"bufio"
	"maps"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/telemetry"
)

// The counter sets as a telemetry.FamilySource: a scrape of a sidecar of
// a 1,000-service mesh is ~177,000 series, 36 families of 3,000 clusters
// each. Built one family at a time they take ~1/36 of the memory that
// gathering them all at once (Collect) does; written straight as text
// (WriteFamilyText), as a scrape in the text format has them, they are
// not built at all. The families and series are the same every way
// (TestStatsFamiliesMatchCollect; admin's TestStreamedScrapeMatchesPromhttp
// for the text).

var _ telemetry.TextFamilySource = (*StatVecs)(nil)

// family is one envoy_cluster_* family of the counter sets.
type family struct {
	help string
	typ  dto.MetricType
	// value reads the family's statistic of one set (nil: upstream_rq_xx
	// and upstream_rq_time, which have series of their own).
	value func(*Stats) float64
	kind  int // familyValue, familyClasses, familyRqTime
}

const (
	familyValue = iota
	familyClasses
	familyRqTime
)

// familyIndex lists the families Collect exports, by name.
func (v *StatVecs) familyIndex() map[string]family {
	fs := map[string]family{}
	for i, n := range clusterCounterNames {
		fs["envoy_cluster_"+n] = family{help: "Envoy cluster statistic " + n + ".", typ: dto.MetricType_COUNTER,
			value: func(s *Stats) float64 { return s.counters()[i].Value() }}
	}
	for i, n := range clusterGaugeNames {
		fs["envoy_cluster_"+n] = family{help: "Envoy cluster statistic " + n + ".", typ: dto.MetricType_GAUGE,
			value: func(s *Stats) float64 { return s.gauges()[i].Value() }}
	}
	fs["envoy_cluster_upstream_rq_xx"] = family{typ: dto.MetricType_COUNTER, kind: familyClasses,
		help: "Envoy cluster statistic upstream_rq_<class>xx: upstream responses by status class (1-5)."}
	fs["envoy_cluster_upstream_rq_time"] = family{typ: dto.MetricType_HISTOGRAM, kind: familyRqTime, help: rqTimeHelp}
	return fs
}

// Names implements telemetry.FamilySource.
func (v *StatVecs) Names() []string { return slices.Sorted(maps.Keys(v.families)) }

// sorted returns the counter sets of every cluster name seen, sorted by
// name; made again only when a name was added (names are never removed),
// not for each of a scrape's 36 families. The caller must not modify it.
func (v *StatVecs) sorted() []*statRef {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.byNameSorted == nil && len(v.byName) > 0 {
		all := slices.Collect(maps.Values(v.byName))
		slices.SortFunc(all, func(a, b *statRef) int { return strings.Compare(a.name, b.name) })
		v.byNameSorted = all
	}
	return v.byNameSorted
}

// Family implements telemetry.FamilySource: the named statistic of every
// cluster name seen, sorted by name, zeros included, as Collect sends it.
func (v *StatVecs) Family(name string) *dto.MetricFamily {
	f, ok := v.families[name]
	if !ok {
		return nil
	}
	all := v.sorted()
	if len(all) == 0 {
		return nil
	}
	out := &dto.MetricFamily{Name: proto.String(name), Help: proto.String(f.help), Type: f.typ.Enum()}
	switch f.kind {
	case familyValue:
		// One allocation each for the series, their values and the name labels.
		ms := make([]dto.Metric, len(all))
		vals := make([]float64, len(all))
		pairs := make([]dto.LabelPair, len(all))
		labels := make([]*dto.LabelPair, len(all))
		out.Metric = make([]*dto.Metric, len(all))
		for i, r := range all {
			pairs[i] = dto.LabelPair{Name: nameLabel, Value: &all[i].name}
			labels[i] = &pairs[i]
			vals[i] = f.value(r.peek())
			ms[i].Label = labels[i : i+1 : i+1]
			if f.typ == dto.MetricType_GAUGE {
				ms[i].Gauge = &dto.Gauge{Value: &vals[i]}
			} else {
				ms[i].Counter = &dto.Counter{Value: &vals[i]}
			}
			out.Metric[i] = &ms[i]
		}
	case familyClasses:
		ms := make([]dto.Metric, 0, 5*len(all))
		vals := make([]float64, 0, 5*len(all))
		for _, r := range all {
			s := r.peek()
			name := &dto.LabelPair{Name: nameLabel, Value: &r.name}
			for c := 1; c <= 5; c++ {
				vals = append(vals, s.classes[c].Value())
				ms = append(ms, dto.Metric{Label: []*dto.LabelPair{name, classPairs[c]},
					Counter: &dto.Counter{Value: &vals[len(vals)-1]}})
			}
		}
		out.Metric = make([]*dto.Metric, len(ms))
		for i := range ms {
			out.Metric[i] = &ms[i]
		}
	case familyRqTime:
		out.Metric = make([]*dto.Metric, len(all))
		for i, r := range all {
			m := &dto.Metric{}
			if h := r.peek().RqTime.h.Load(); h != nil {
				if err := (*h).Write(m); err != nil {
					continue
				}
			} else {
				m.Label = []*dto.LabelPair{{Name: nameLabel, Value: &r.name}}
				m.Histogram = emptyRqTime // read only
			}
			out.Metric[i] = m
		}
		out.Metric = slices.DeleteFunc(out.Metric, func(m *dto.Metric) bool { return m == nil })
	}
	return out
}

// nameLabel is the name of the envoy_cluster_name label pair, shared.
var nameLabel = proto.String(NameLabel)

// WriteFamilyText implements telemetry.TextFamilySource: Family's
// family written as expfmt writes it, read series by series.
func (v *StatVecs) WriteFamilyText(w *bufio.Writer, name string) bool {
	f, ok := v.families[name]
	if !ok {
		return false
	}
	all := v.sorted()
	pair := dto.LabelPair{Name: nameLabel} // its Value points at each set's name in turn
	labels := []*dto.LabelPair{&pair, nil}
	wrote := false
	header := func() {
		if !wrote {
			telemetry.WriteTextHeader(w, name, f.help, f.typ)
			wrote = true
		}
	}
	for _, r := range all {
		pair.Value = &r.name
		s := r.peek()
		switch f.kind {
		case familyValue:
			header()
			telemetry.WriteTextSample(w, name, "", labels[:1], false, 0, f.value(s))
		case familyClasses:
			header()
			for c := 1; c <= 5; c++ {
				labels[1] = classPairs[c]
				telemetry.WriteTextSample(w, name, "", labels, false, 0, s.classes[c].Value())
			}
		case familyRqTime:
			if h := s.RqTime.h.Load(); h != nil {
				var m dto.Metric
				if err := (*h).Write(&m); err != nil {
					continue
				}
				header()
				telemetry.WriteTextHistogram(w, name, m.GetLabel(), m.GetHistogram())
				continue
			}
			header()
			telemetry.WriteTextHistogram(w, name, labels[:1], emptyRqTime)
		}
	}
	return wrote
}
