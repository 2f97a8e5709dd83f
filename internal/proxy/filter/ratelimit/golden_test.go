package ratelimit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"

	_ "weft.dev/weft/internal/xds/contract" // the typed configs the generator emits
)

// TestGeneratorOutputCompiles: every local rate limit config the
// generator's golden case emits (the filter's and each route's: limits,
// descriptors, an exempt rule, a partly enforced one) is one this filter
// accepts, so a RateLimit that validates is never NACKed.
func TestGeneratorOutputCompiles(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "xds", "generate", "testdata", "local_rate_limit", "listeners.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		t.Fatal(err)
	}
	fac := NewFactory(nil)
	filters, routes := 0, 0
	for _, raw := range raws {
		var l listener.Listener
		if err := protojson.Unmarshal(raw, &l); err != nil {
			t.Fatal(err)
		}
		for _, fc := range l.GetFilterChains() {
			for _, nf := range fc.GetFilters() {
				var m hcm.HttpConnectionManager
				if nf.GetTypedConfig().UnmarshalTo(&m) != nil {
					continue
				}
				for _, hf := range m.GetHttpFilters() {
					if hf.GetName() == Name {
						filters++
						if _, err := fac.New(hf.GetTypedConfig()); err != nil {
							t.Errorf("%s: http filter: %v", l.GetName(), err)
						}
					}
				}
				for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						if cfg := r.GetTypedPerFilterConfig()[Name]; cfg != nil {
							routes++
							if _, err := fac.ParsePerRoute(cfg); err != nil {
								t.Errorf("%s: route %s: %v", l.GetName(), r.GetName(), err)
							}
						}
					}
				}
			}
		}
	}
	if filters == 0 || routes < 3 {
		t.Errorf("found %d filters and %d route configs in the golden case, want some of each", filters, routes)
	}
}
