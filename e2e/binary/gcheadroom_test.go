package binary

import (
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestGCHeadroom: the built weft-proxy lowers GOGC after its collections
// when its heap could grow more than --gc-headroom above what is live
// (a 256 KiB bound: the floor, 25, for any real heap), never lowers it
// when its heap is too small to reach the default 8 MiB bound, and
// leaves a GOGC from the environment alone. go_gc_gogc_percent on its
// admin endpoint says the value in force; scrapes allocate, so scraping
// drives the collections.
func TestGCHeadroom(t *testing.T) {
	bin := filepath.Join(binaries(t), "weft-proxy")
	c := &http.Client{Timeout: 5 * time.Second}
	started := regexp.MustCompile(`msg="proxy starting"`)
	// gogc starts a proxy and returns its GOGC once it has run at least
	// min collections since its first scrape, or the first time it is want.
	gogc := func(gogcEnv string, want float64, minGCs float64, args ...string) float64 {
		t.Helper()
		t.Setenv("GOGC", gogcEnv)
		admin := newPrefix() + "1:15000"
		p := start(t, bin, append([]string{"--xds-plaintext", "--xds-address", "127.0.0.1:1", "--workload", "w", "--outbound", "",
			"--admin-address", admin, "--log-level", "info"}, args...)...)
		p.waitOutput(started, 20*time.Second)
		var got, gcs0 float64 = -1, -1
		eventually(t, 20*time.Second, "collections of "+admin, func() error {
			fams, err := scrapeErr(c, admin)
			if err != nil {
				return err
			}
			got = fams["go_gc_gogc_percent"].GetMetric()[0].GetGauge().GetValue()
			gcs := float64(fams["go_gc_duration_seconds"].GetMetric()[0].GetSummary().GetSampleCount())
			if gcs0 < 0 {
				gcs0 = gcs
			}
			if got == want && gcs-gcs0 >= 1 || gcs-gcs0 >= minGCs {
				return nil
			}
			return fmt.Errorf("GOGC %v after %v collections", got, gcs-gcs0)
		})
		p.stop(10 * time.Second)
		return got
	}
	if got := gogc("", 25, 50, "--gc-headroom", "256Ki"); got != 25 {
		t.Errorf("--gc-headroom 256Ki: GOGC %v, want the floor 25", got)
	}
	// A heap too small to reach the 8 MiB bound is never lowered; the
	// test's scrapes make it busy for its size, so it may be raised
	// (at most to 800) to collect about once a second.
	if got := gogc("", -1, 3); got < 100 || got > 800 {
		t.Errorf("a small proxy with the default --gc-headroom: GOGC %v, want 100 to 800", got)
	}
	if got := gogc("200", -1, 3, "--gc-headroom", "256Ki"); got != 200 {
		t.Errorf("GOGC=200 in the environment: GOGC %v, want 200 kept", got)
	}
}
