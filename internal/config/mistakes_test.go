package config_test

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
)

// TestMistakes loads every case under testdata/mistakes: a directory with
// the YAML files a user wrote (and the services they need) and a want
// file, one expected diagnostic per line:
//
//	<error|warning> <field path, or -> <message substring>
//
// Every want line must be matched by a diagnostic of the same severity and
// path whose message contains the substring, and every error must be
// wanted (warnings may come on top). A want file whose first line starts
// with "# needs-decoder" describes errors the new decoder will report
// (type and duration errors at the field path); such cases are skipped
// until it lands.
func TestMistakes(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "mistakes", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 40 {
		t.Fatalf("%d mistake cases, want at least 40", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			want, skip := readWant(t, filepath.Join(dir, "want"))
			if skip != "" {
				t.Skip(skip)
			}
			files := map[string][]byte{}
			yamls, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
			if err != nil || len(yamls) == 0 {
				t.Fatalf("no YAML files in %s (%v)", dir, err)
			}
			for _, f := range yamls {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				files[filepath.Base(f)] = b
			}
			snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(files)
			matched := make([]bool, len(snap.Diagnostics))
			for _, w := range want {
				found := false
				for i, d := range snap.Diagnostics {
					if string(d.Severity) == w.severity && d.Path == w.path && strings.Contains(d.Message, w.message) {
						matched[i], found = true, true
					}
				}
				if !found {
					t.Errorf("no diagnostic %s %s %q", w.severity, w.path, w.message)
				}
			}
			for i, d := range snap.Diagnostics {
				if d.Severity == config.SeverityError && !matched[i] {
					t.Errorf("unexpected %s", d.Error())
				}
			}
			if t.Failed() {
				for _, d := range snap.Diagnostics {
					t.Logf("got %s: %s", d.Severity, d.Error())
				}
			}
		})
	}
}

type wantDiag struct{ severity, path, message string }

// readWant parses a want file; skip is the reason to skip the case, or "".
func readWant(t *testing.T, path string) (want []wantDiag, skip string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 && strings.HasPrefix(line, "# needs-decoder") {
			skip = "needs the new decoder: " + strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, "# needs-decoder"), ":"))
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || (f[0] != "error" && f[0] != "warning") {
			t.Fatalf("%s:%d: want <error|warning> <path> <message substring>, have %q", path, n, line)
		}
		if f[1] == "-" {
			f[1] = ""
		}
		want = append(want, wantDiag{f[0], f[1], f[2]})
	}
	if len(want) == 0 {
		t.Fatalf("%s: no expected diagnostics", path)
	}
	return want, skip
}
