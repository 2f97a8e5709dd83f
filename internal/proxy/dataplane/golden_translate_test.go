package dataplane

import (
	"testing"

	"weft.dev/weft/internal/xds/contract"
)

// TestGoldensTranslate: every configuration the xDS generator's golden
// cases show — the captured proxies' virtual listeners, tcp_proxy chains
// and passthrough clusters included — is accepted by the data plane.
func TestGoldensTranslate(t *testing.T) {
	d := newDataplane(t, contract.Identity{}, nil)
	for i, r := range goldenResources(t) {
		t.Logf("golden %d: %v", i, sortedKeys(r.Listeners))
		rt, err := d.translate(r, nil)
		if err != nil {
			t.Errorf("golden %d (listeners %v): %v", i, sortedKeys(r.Listeners), err)
			continue
		}
		for _, c := range rt.clusters {
			c.CloseIdle()
		}
	}
}
