package binary

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHeapProfilerOffByDefault: the built weft-proxy starts with the Go
// heap profiler off (its start line says heap_profile_rate=0), on with
// --heap-profiler, at GODEBUG's memprofilerate when the environment sets
// one; POST /heapprofiler?enable=y on the admin endpoint turns it on.
func TestHeapProfilerOffByDefault(t *testing.T) {
	bin := filepath.Join(binaries(t), "weft-proxy")
	c := &http.Client{Timeout: 5 * time.Second}
	rate := regexp.MustCompile(`msg="proxy starting".* heap_profile_rate=(\d+)`)
	run := func(godebug string, args ...string) (string, string) {
		t.Helper()
		t.Setenv("GODEBUG", godebug)
		admin := newPrefix() + "1:15000"
		p := start(t, bin, append([]string{"--xds-plaintext", "--xds-address", "127.0.0.1:1", "--workload", "w", "--outbound", "",
			"--admin-address", admin, "--log-level", "info"}, args...)...)
		got := p.waitOutput(rate, 20*time.Second)
		return got, admin
	}
	got, admin := run("")
	if got != "0" {
		t.Errorf("by default: heap_profile_rate=%s, want 0", got)
	}
	var resp *http.Response
	eventually(t, 10*time.Second, "POST /heapprofiler on "+admin, func() error {
		var err error
		resp, err = c.Post("http://"+admin+"/heapprofiler?enable=y", "", nil)
		return err
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profiler on") {
		t.Errorf("POST /heapprofiler?enable=y: %d %q", resp.StatusCode, body)
	}
	if got, _ := run("", "--heap-profiler"); got != "524288" {
		t.Errorf("--heap-profiler: heap_profile_rate=%s, want 524288", got)
	}
	if got, _ := run("memprofilerate=4096"); got != "4096" {
		t.Errorf("GODEBUG=memprofilerate=4096: heap_profile_rate=%s, want 4096", got)
	}
}
