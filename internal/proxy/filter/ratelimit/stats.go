package ratelimit

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the local rate limit filters' counters, Envoy's
// <stat_prefix>.http_local_rate_limit.{enabled,ok,rate_limited,enforced},
// shown in Prometheus form as Envoy's admin shows them:
// envoy_<stat_prefix>_http_local_rate_limit_rate_limited and so on
// (counters, no _total suffix; Istio's examples use the prefix
// http_local_rate_limiter). One set per stat prefix per proxy: filters
// with the same prefix add to the same counters, and a prefix's counters
// stay once created (they are few: one per prefix configs have used).
// Registered once per proxy; safe for concurrent use.
type Stats struct {
	mu       sync.Mutex
	byPrefix map[string]*counters
}

// counters are one stat prefix's counters.
type counters struct {
	v     [4]atomic.Uint64 // by stat index
	descs [4]*prometheus.Desc
}

// Stat indexes, in statNames order.
const (
	statEnabled = iota
	statOK
	statRateLimited
	statEnforced
)

var statNames = [4]struct{ name, help string }{
	{"enabled", "Requests the local rate limit filter was enabled for (filter_enabled)."},
	{"ok", "Requests under the limit of their token buckets."},
	{"rate_limited", "Requests over a token bucket's limit, enforced or not."},
	{"enforced", "Requests refused (429) because they were over the limit and the limit was enforced (filter_enforced)."},
}

// NewStats registers the counters with reg. They appear as stat prefixes
// are used.
func NewStats(reg prometheus.Registerer) (*Stats, error) {
	s := &Stats{byPrefix: map[string]*counters{}}
	if err := reg.Register(s); err != nil {
		return nil, err
	}
	return s, nil
}

// forPrefix returns prefix's counters, creating them. nil Stats count
// nothing.
func (s *Stats) forPrefix(prefix string) *counters {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.byPrefix[prefix]; c != nil {
		return c
	}
	c := &counters{}
	base := "envoy_" + promName(prefix) + "_http_local_rate_limit_"
	for i, n := range statNames {
		c.descs[i] = prometheus.NewDesc(base+n.name, n.help, nil, nil)
	}
	s.byPrefix[prefix] = c
	return c
}

// promName is Envoy's Prometheus name sanitising: anything but letters,
// digits and '_' becomes '_'.
func promName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

// Describe implements prometheus.Collector. It describes nothing: the
// metric names depend on configuration, so the collector is unchecked.
func (s *Stats) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (s *Stats) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	cs := make([]*counters, 0, len(s.byPrefix))
	for _, c := range s.byPrefix {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		for i := range c.v {
			ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.CounterValue, float64(c.v[i].Load()))
		}
	}
}

// inc adds one to stat i; nil counters count nothing.
func (c *counters) inc(i int) {
	if c != nil {
		c.v[i].Add(1)
	}
}
