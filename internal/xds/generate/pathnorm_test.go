package generate

import (
	"testing"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
)

// TestPathNormalization: the mesh config's pathNormalization sets every
// connection manager's path handling as Istio's
// buildHTTPConnectionManager does.
func TestPathNormalization(t *testing.T) {
	for _, tc := range []struct {
		mode      string // "" no mesh config field
		normalize bool
		merge     bool
		escaped   hcm.HttpConnectionManager_PathWithEscapedSlashesAction
	}{
		{"", true, false, hcm.HttpConnectionManager_KEEP_UNCHANGED},
		{"BASE", true, false, hcm.HttpConnectionManager_KEEP_UNCHANGED},
		{"DEFAULT", true, false, hcm.HttpConnectionManager_KEEP_UNCHANGED},
		{"NONE", false, false, hcm.HttpConnectionManager_KEEP_UNCHANGED},
		{"MERGE_SLASHES", true, true, hcm.HttpConnectionManager_KEEP_UNCHANGED},
		{"DECODE_AND_MERGE_SLASHES", true, true, hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			doc := "{}"
			if tc.mode != "" {
				doc = "pathNormalization: {normalization: " + tc.mode + "}"
			}
			mc, warns, err := config.ParseMeshConfig("mesh.yaml", []byte(doc))
			if err != nil || len(warns) > 0 {
				t.Fatalf("mesh config: %v %v", err, warns)
			}
			s := securityMesh(bookinfo, mesh.Options{MeshConfig: mc})
			m := &hcm.HttpConnectionManager{}
			withPathNormalization(s, m)
			if m.GetNormalizePath().GetValue() != tc.normalize || m.GetMergeSlashes() != tc.merge || m.GetPathWithEscapedSlashesAction() != tc.escaped {
				t.Errorf("normalize_path %v, merge_slashes %v, escaped slashes %v; want %v, %v, %v",
					m.GetNormalizePath().GetValue(), m.GetMergeSlashes(), m.GetPathWithEscapedSlashesAction(), tc.normalize, tc.merge, tc.escaped)
			}
		})
	}
}
