package route

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// FuzzCompile feeds Compile arbitrary protobuf bytes decoded as a
// RouteConfiguration (seeds: the generator's golden route
// configurations). Compile returns a table or an error, the same twice;
// a table's weighted routes draw from cumulative weights that grow with
// each cluster and end at the total they draw from; and routing requests
// to each virtual host does not panic. (The data plane's fuzz targets
// cover routes inside whole resource sets.)
func FuzzCompile(f *testing.F) {
	golden, err := filepath.Glob(filepath.Join("..", "..", "xds", "generate", "testdata", "*", "routes.json"))
	if err != nil || len(golden) == 0 {
		f.Fatalf("no golden route configurations: %v", err)
	}
	for _, path := range golden {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(data, &raws); err != nil {
			f.Fatalf("%s: %v", path, err)
		}
		for _, raw := range raws {
			var rc route.RouteConfiguration
			if err := protojson.Unmarshal(raw, &rc); err != nil {
				f.Fatalf("%s: %v", path, err)
			}
			b, err := proto.Marshal(&rc)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var rc route.RouteConfiguration
		if proto.Unmarshal(data, &rc) != nil {
			return
		}
		tab, err := Compile(&rc, nil)
		_, err2 := Compile(&rc, nil)
		if fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("compiling the same configuration twice: %v, then %v", err, err2)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		checkWeights(t, tab)
		for _, vh := range rc.GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				r := httptest.NewRequest("GET", "http://x/", nil)
				r.Host = d
				if re := tab.Route(r); re != nil {
					re.PickCluster(r)
				}
				tab.Match(r)
			}
		}
	})
}

// checkWeights checks what a compiled table promises the request path: a
// weighted route picks among its clusters by cumulative weights that grow
// with each cluster and end at the total it draws from.
func checkWeights(t *testing.T, tab *Table) {
	for _, vh := range tab.vhs {
		for _, re := range vh.routes {
			if len(re.weighted) == 0 {
				continue
			}
			var last uint32
			for i, wc := range re.weighted {
				if wc.upTo <= last {
					t.Fatalf("route %q of %q: weighted cluster %d (%s) ends at %d, not above %d", re.Name, tab.name, i, wc.name, wc.upTo, last)
				}
				last = wc.upTo
			}
			if last != re.weightTotal {
				t.Fatalf("route %q of %q: weights end at %d, total %d", re.Name, tab.name, last, re.weightTotal)
			}
		}
	}
}
