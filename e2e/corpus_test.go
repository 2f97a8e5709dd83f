package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/localmesh"
)

// corpusDir holds realistic config mistakes, one directory each, with the
// diagnostics they must produce (internal/config/mistakes_test.go checks
// those).
const corpusDir = "../internal/config/testdata/mistakes"

// TestConfigSafetyCorpusAgrees: for every mistake of the corpus, the
// running control plane reports exactly what `weft validate` reports for
// the same files — same severity, code, file, line, column, field and
// message — so what an operator checks before a change is what the mesh
// says after it.
func TestConfigSafetyCorpusAgrees(t *testing.T) {
	cases, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 40 {
		t.Fatalf("the corpus has %d cases, want at least 40", len(cases))
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			dir := t.TempDir()
			entries, err := os.ReadDir(filepath.Join(corpusDir, c.Name()))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() == "want" {
					continue
				}
				b, err := os.ReadFile(filepath.Join(corpusDir, c.Name(), e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// What weft validate prints for the directory.
			files, err := config.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := render(config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(files).Diagnostics)

			cp, err := localmesh.StartControlPlane(controlplane.Options{
				ConfigDir: dir, XDSAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cp.Stop()
			var got []string
			Eventually(t, 5*time.Second, "the control plane's first load", func() error {
				st, err := statusOf(client, cp.StatusAddr().String())
				if err != nil {
					return err
				}
				if st.ConfigVersion < 1 {
					return fmt.Errorf("config version %d", st.ConfigVersion)
				}
				got = render(st.Diagnostics)
				return nil
			})
			if !slices.Equal(got, want) {
				t.Errorf("the control plane and weft validate disagree:\ncontrol plane:\n\t%s\nvalidate:\n\t%s", join(got), join(want))
			}
			if len(want) == 0 {
				t.Errorf("the mistake is not reported at all")
			}
		})
	}
}

func render(ds []config.Diagnostic) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s %s %s", d.Severity, d.Code, d.Error()))
	}
	return out
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += "\n\t"
		}
		out += s
	}
	return out
}

func statusOf(c *http.Client, addr string) (controlplane.Status, error) {
	var st controlplane.Status
	resp, err := c.Get("http://" + addr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(body, &st)
}
