//go:build linux

package residency

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const mapsFixture = `00400000-01a00000 r-xp 00000000 08:02 173521 /usr/local/bin/weft proxy
01a00000-02c00000 r--p 01600000 08:02 173521 /usr/local/bin/weft proxy
02c00000-02d00000 rw-p 02800000 08:02 173521 /usr/local/bin/weft proxy
02d00000-02e00000 rw-p 00000000 00:00 0
7f0000000000-7f0000021000 r--p 00000000 08:02 99 /usr/lib/libc.so.6
7ffd0000000-7ffd0021000 rw-p 00000000 00:00 0                          [stack]
`

func TestReadOnlyMappings(t *testing.T) {
	all := exeMappings([]byte(mapsFixture), "/usr/local/bin/weft proxy")
	if len(all) != 3 || !all[2].writable || all[2].start != 0x2c00000 {
		t.Errorf("the writable mapping of the file is not listed as such: %+v", all)
	}
	got := readOnly(all)
	want := []addrRange{{start: 0x400000, end: 0x1a00000}, {start: 0x1a00000, end: 0x2c00000}}
	if len(got) != len(want) {
		t.Fatalf("mappings = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := exeMappings([]byte(mapsFixture), "/usr/local/bin/weft"); len(got) != 0 {
		t.Errorf("a path that is a prefix of the mapped one matched: %+v", got)
	}
}

// In smaps, a mapping none of whose pages is anonymous is clean: it may
// be unmapped, not only paged out.
func TestReadOnlyMappingsClean(t *testing.T) {
	smaps := `00400000-01a00000 r-xp 00000000 08:02 173521 /bin/p
Size:              18432 kB
Rss:                4096 kB
Anonymous:             0 kB
01a00000-02c00000 r--p 01600000 08:02 173521 /bin/p
Rss:                1024 kB
Anonymous:             8 kB
02c00000-02d00000 rw-p 02800000 08:02 173521 /bin/p
Anonymous:            64 kB
`
	got := readOnly(exeMappings([]byte(smaps), "/bin/p"))
	want := []addrRange{{start: 0x400000, end: 0x1a00000, clean: true}, {start: 0x1a00000, end: 0x2c00000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("mappings = %+v, want %+v", got, want)
	}
}

func TestResidentIn(t *testing.T) {
	smaps := `00400000-01a00000 r-xp 00000000 08:02 173521 /bin/p
Size:              22528 kB
Rss:                4096 kB
Pss:                4096 kB
01a00000-02c00000 r--p 01600000 08:02 173521 /bin/p
Size:              18432 kB
Rss:                1024 kB
7f0000000000-7f0000021000 r--p 00000000 08:02 99 /usr/lib/libc.so.6
Rss:                 132 kB
VmFlags: rd mr mw me
`
	if got, want := residentIn([]byte(smaps), "/bin/p"), int64(5120<<10); got != want {
		t.Errorf("resident = %d, want %d", got, want)
	}
}

// TestPageOutExecutable pages out the test binary's own read-only pages:
// the advice must be taken, and, where the binary's file system can
// reclaim clean file pages (not tmpfs, whose pages need swap), fewer of
// them are resident afterwards.
func TestPageOutExecutable(t *testing.T) {
	res, err := PageOutExecutable()
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("the kernel has no MADV_PAGEOUT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Mappings == 0 || res.Bytes == 0 {
		t.Fatalf("nothing advised: %+v", res)
	}
	t.Logf("advised %d mappings, %d KiB; resident %d -> %d KiB", res.Mappings, res.Bytes>>10, res.ResidentBefore>>10, res.ResidentAfter>>10)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Every advised mapping reads no more ahead ("rr" in its VmFlags).
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	if n := randomReadMappings(smaps, exe); n != res.Mappings {
		t.Errorf("%d mappings of %s advised MADV_RANDOM, want %d", n, exe, res.Mappings)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(exe, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		t.Logf("%s is on tmpfs: its pages are not reclaimed without swap", exe)
		return
	}
	if res.ResidentBefore == 0 || res.ResidentAfter >= res.ResidentBefore {
		t.Errorf("resident bytes of the executable did not fall: %d -> %d", res.ResidentBefore, res.ResidentAfter)
	}
}

// randomReadMappings counts the read-only mappings of path in a
// /proc/PID/smaps text whose VmFlags say "rr" (MADV_RANDOM).
func randomReadMappings(smaps []byte, path string) int {
	n, in := 0, false
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case isHeader(f):
			in = len(f) >= 6 && strings.Join(f[5:], " ") == path && strings.HasPrefix(f[1], "r-")
		case in && len(f) > 0 && f[0] == "VmFlags:" && slices.Contains(f[1:], "rr"):
			n++
		}
	}
	return n
}

// TestPageOutDropsTheCachedFile: pages of the executable that are in the
// page cache but mapped by no one (here: the whole file, read as a file)
// are dropped from the cache, so that fault-around cannot map them back
// into the process. Where the file system can drop clean pages.
func TestPageOutDropsTheCachedFile(t *testing.T) {
	exe := droppableExecutable(t)
	if _, err := os.ReadFile(exe); err != nil { // every page cached
		t.Fatal(err)
	}
	before := cachedFraction(t, exe)
	if _, err := PageOutExecutable(); errors.Is(err, unix.EINVAL) {
		t.Skipf("the kernel has no MADV_PAGEOUT: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	after := cachedFraction(t, exe)
	t.Logf("%s: %.0f%% of its pages cached before, %.0f%% after", exe, 100*before, 100*after)
	if before < 0.9 || after > 0.75*before { // what start-up and this test touch stays mapped, and cached
		t.Errorf("cached pages of the executable: %.0f%% -> %.0f%%, want most of them dropped", 100*before, 100*after)
	}
}

// droppableExecutable is the test's executable, skipping the test where
// its pages cannot be dropped from the page cache (tmpfs), and written
// back to the disk as an installed executable is: the test binary was
// just linked, and the kernel drops no dirty page.
func droppableExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(exe, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs: its pages stay in memory", exe)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// cachedFraction is the share of path's pages in the page cache
// (mincore on a mapping of it that touches none).
func cachedFraction(t *testing.T, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(len(vec))
}

// TestSettleDropsWhatStaysCached: Settle drops, once its delay has
// passed, the executable's pages that are cached and mapped by no one
// (here: read again after the hand-back, as pages the first drop could
// not take stay), and returns without dropping when its context ends
// first.
func TestSettleDropsWhatStaysCached(t *testing.T) {
	exe := droppableExecutable(t)
	old := settleDelay
	settleDelay = 10 * time.Millisecond
	t.Cleanup(func() { settleDelay = old })

	if _, err := PageOutExecutable(); errors.Is(err, unix.EINVAL) {
		t.Skipf("the kernel has no MADV_PAGEOUT: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(exe); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Settle(ctx)
	if got := cachedFraction(t, exe); got < 0.9 {
		t.Fatalf("Settle with its context ended dropped pages: %.0f%% cached", 100*got)
	}
	Settle(context.Background())
	// What this test process maps stays cached (half or more of a test
	// binary, which is small and all of it running tests).
	if got := cachedFraction(t, exe); got > 0.85 {
		t.Errorf("after Settle %.0f%% of the executable's pages are cached, want those mapped by no one dropped", 100*got)
	}
}
