package route

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/types/known/anypb"
)

// filterConfig is a route's compiled config for one HTTP filter.
type filterConfig struct {
	name string
	cfg  any
}

// compileFilterConfigs compiles a route's typed_per_filter_config for the
// filters the proxy implements, in name order; entries for other filters
// are ignored.
func compileFilterConfigs(tpfc map[string]*anypb.Any, filters FilterConfigParser) ([]filterConfig, error) {
	if len(tpfc) == 0 || filters == nil {
		return nil, nil
	}
	names := make([]string, 0, len(tpfc))
	for n := range tpfc {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []filterConfig
	for _, n := range names {
		cfg, known, err := filters.ParsePerRoute(n, tpfc[n])
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%s]: %w", n, err)
		}
		if known && cfg != nil {
			out = append(out, filterConfig{n, cfg})
		}
	}
	return out, nil
}

// FilterConfig returns the route's config for the HTTP filter named name
// (what the filter's parser made of typed_per_filter_config[name]), or
// nil.
func (re *Entry) FilterConfig(name string) any {
	for i := range re.filterConfigs {
		if re.filterConfigs[i].name == name {
			return re.filterConfigs[i].cfg
		}
	}
	return nil
}
