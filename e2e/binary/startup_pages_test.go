package binary

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStartupPagesHandedBack: the built weft-proxy, once its first config
// is applied, hands back the pages of its binary that start-up touched
// (docs/proxy.md, "Start-up pages"): it says so at debug level, and its
// binary's resident pages, read from /proc/PID/smaps by the test, are
// fewer than half of what it logged before, and each read-only mapping
// of it reads no more ahead (MADV_RANDOM: "rr" in its VmFlags). With
// --keep-startup-pages it does neither.
func TestStartupPagesHandedBack(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("start-up pages are handed back on Linux only")
	}
	bin := binaries(t)
	pre := newPrefix()
	cfg := canaryConfig(t, pre)
	plain := pre + "100:15010"
	start(t, filepath.Join(bin, "weft"), "serve", "--config", cfg, "--xds-address", pre+"100:15012",
		"--xds-plaintext-address", plain, "--status-address", pre+"100:15014")
	proxy := func(n int, extra ...string) *proc {
		return start(t, filepath.Join(bin, "weft-proxy"), append([]string{"--xds-plaintext", "--xds-address", plain,
			"--workload", "pages", "--ip", pre + strconv.Itoa(n), "--outbound", "", "--admin-address", pre + strconv.Itoa(n) + ":15000",
			"--log-level", "debug"}, extra...)...)
	}
	kept := proxy(30, "--keep-startup-pages")
	p := proxy(31)

	m := regexp.MustCompile(`msg="start-up pages paged out".* resident_before_bytes=(\d+) resident_after_bytes=(\d+)`)
	p.waitOutput(m, 30*time.Second)
	got := m.FindStringSubmatch(p.out.String())
	before, _ := strconv.ParseInt(got[1], 10, 64)
	bm := binaryMappings(t, p)
	now := bm.resident
	t.Logf("binary resident: %d KiB logged before, %d KiB logged after, %d KiB read now", before>>10, mustInt(got[2])>>10, now>>10)
	if before == 0 || now*2 >= before {
		t.Errorf("the binary's resident pages did not fall below half: %d bytes before, %d now", before, now)
	}
	if bm.readOnly == 0 || bm.randomRead != bm.readOnly {
		t.Errorf("%d of the binary's %d read-only mappings advised MADV_RANDOM, want all", bm.randomRead, bm.readOnly)
	}
	// The proxy started first has applied its config by now.
	kept.waitOutput(regexp.MustCompile(`msg="proxy starting"`), 10*time.Second)
	if strings.Contains(kept.out.String(), "start-up pages") {
		t.Errorf("--keep-startup-pages: the proxy handed its pages back")
	}
	if km := binaryMappings(t, kept); km.randomRead != 0 {
		t.Errorf("--keep-startup-pages: %d of the binary's mappings advised MADV_RANDOM", km.randomRead)
	}
}

func mustInt(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }

// mappings is what /proc/PID/smaps says of the mappings of a process's
// executable.
type mappings struct {
	resident             int64 // bytes, summed over the mappings' Rss
	readOnly, randomRead int   // read-only mappings, and those of them with "rr" in VmFlags
}

// binaryMappings reads the mappings of p's executable from its
// /proc/PID/smaps.
func binaryMappings(t *testing.T, p *proc) mappings {
	t.Helper()
	pid := p.cmd.Process.Pid
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var m mappings
	in, readOnly := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		switch {
		case len(fs) >= 5 && !strings.HasSuffix(fs[0], ":") && strings.Contains(fs[0], "-"):
			in = len(fs) >= 6 && strings.Join(fs[5:], " ") == exe
			readOnly = in && strings.HasPrefix(fs[1], "r-")
			if readOnly {
				m.readOnly++
			}
		case in && len(fs) >= 2 && fs[0] == "Rss:":
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			m.resident += kb << 10
		case readOnly && len(fs) > 0 && fs[0] == "VmFlags:" && slices.Contains(fs[1:], "rr"):
			m.randomRead++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}
