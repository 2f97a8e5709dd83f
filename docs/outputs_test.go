package docs_test

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
)

var update = flag.Bool("update", false, "rewrite the documented weft validate outputs from what weft validate prints now")

// outputFiles are the pages whose mistake examples show weft validate's output.
var outputFiles = []string{"configuration.md", "security.md", "rate-limiting.md"}

// TestMistakeOutputs keeps the documented errors true: wherever a page
// shows a ```yaml block marked invalid followed by a ```text block, the
// text block must be exactly what `weft validate config/` prints on stdout
// with the YAML saved as config/example.yaml. Run with -update to rewrite
// the text blocks after a change to the messages.
func TestMistakeOutputs(t *testing.T) {
	checked := 0
	for _, name := range outputFiles {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		changed := false
		for i := 0; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) != invalidMarker {
				continue
			}
			open := nextNonBlank(lines, i+1)
			if open < 0 || strings.TrimSpace(lines[open]) != "```yaml" {
				continue
			}
			end := closing(lines, open+1)
			textOpen := nextNonBlank(lines, end+1)
			if textOpen < 0 || strings.TrimSpace(lines[textOpen]) != "```text" {
				continue
			}
			textEnd := closing(lines, textOpen+1)
			body := strings.Join(lines[open+1:end], "\n") + "\n"
			want := validateOutput(body)
			got := lines[textOpen+1 : textEnd]
			checked++
			if strings.Join(got, "\n") == strings.Join(want, "\n") {
				i = textEnd
				continue
			}
			if !*update {
				t.Errorf("%s:%d: the documented output is not what weft validate prints (go test ./docs -run TestMistakeOutputs -update):\ndocumented:\n\t%s\nprinted:\n\t%s",
					name, textOpen+1, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
				i = textEnd
				continue
			}
			lines = append(lines[:textOpen+1], append(want, lines[textEnd:]...)...)
			changed = true
			i = textOpen + len(want)
		}
		if changed {
			if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if checked < 5 {
		t.Errorf("checked %d documented outputs, want at least 5: did the docs change shape?", checked)
	}
}

// validateOutput is what `weft validate config/` prints on stdout for one
// file config/example.yaml (cmd/weft/validate.go).
func validateOutput(yaml string) []string {
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"config/example.yaml": []byte(yaml)})
	var out []string
	errs, warns, infos := 0, 0, 0
	for _, d := range snap.Diagnostics {
		out = append(out, string(d.Severity)+": "+d.Error())
		switch d.Severity {
		case config.SeverityError:
			errs++
		case config.SeverityWarning:
			warns++
		default:
			infos++
		}
	}
	sum := fmt.Sprintf("%d VirtualService, %d DestinationRule, %d ServiceEntry, %d WorkloadEntry; %d error(s), %d warning(s)",
		len(snap.VirtualServices), len(snap.DestinationRules), len(snap.ServiceEntries), len(snap.WorkloadEntries), errs, warns)
	if infos > 0 {
		sum += fmt.Sprintf(", %d info", infos)
	}
	return append(out, sum)
}

func nextNonBlank(lines []string, from int) int {
	for i := from; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "" {
			return i
		}
	}
	return -1
}

func closing(lines []string, from int) int {
	for i := from; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) == "```" {
			return i
		}
	}
	return len(lines)
}
