// Package residency hands back to the kernel the pages of the process's
// own executable that only its start-up needed.
//
// A Go binary's read-only mappings (code, read-only data, the function
// tables) are mostly touched once: package initialisation registers every
// protobuf descriptor the xDS API links in, the first config is decoded,
// translated or generated, and little of that runs again. The kernel keeps
// those file-backed pages resident until memory gets tight, so they count
// in the process's RSS. Paging them out once start-up is over leaves
// resident what the running process uses; a page needed again later is
// read back in, as at start. weft-proxy does it a second after its first
// config is applied, `weft serve` 30 s after its first config is
// published; both have --keep-startup-pages to keep them.
//
// Pages mapped by this process alone are reclaimed (MADV_PAGEOUT). Pages
// other processes of the same file map too — several sidecars of one node
// running one binary — the kernel does not reclaim; this process unmaps
// them (MADV_DONTNEED on a mapping none of whose pages was copied on
// write), so once every process has, start-up-only pages are clean,
// unmapped page cache, which the kernel drops first when memory is needed.
// Nothing that would need swap is touched. The mappings, the writable one
// (initialised data) included, are then advised MADV_RANDOM: a page
// needed again is read back alone, without the read-ahead around it that
// would make neighbouring pages resident too (Linux 6.16 and later read
// ahead on a fault in the code mapping regardless).
// Last, the file's cached pages that no process maps are dropped
// (posix_fadvise POSIX_FADV_DONTNEED): left cached, a page fault maps the
// cached pages around the one it needs too (fault-around), and a loaded
// sidecar's binary was 3–5 MiB more resident whenever its file was
// cached. Where the kernel lacks MADV_PAGEOUT (Linux before 5.4) only the
// unmapping is done; where the platform is not Linux, nothing happens.
package residency

import (
	"context"
	"log/slog"
	"time"
)

// Result says what PageOutExecutable did.
type Result struct {
	// Mappings is how many read-only mappings of the executable were
	// advised, Bytes their total length.
	Mappings int
	Bytes    int64
	// ResidentBefore and ResidentAfter are the executable's resident
	// bytes (its mappings' Rss in /proc/self/smaps) around the advice;
	// 0 when smaps cannot be read.
	ResidentBefore, ResidentAfter int64
}

// StartupOver waits until ready is closed and delay has passed since: the
// moment a caller deems its start-up over. It returns false if ctx ends
// first.
func StartupOver(ctx context.Context, ready <-chan struct{}, delay time.Duration) bool {
	select {
	case <-ready:
	case <-ctx.Done():
		return false
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// settleDelay is how long after a hand-back Settle drops the
// executable's cached pages again.
var settleDelay = 3 * time.Second

// Settle asks the kernel, three seconds after a Release, once more to drop
// the executable's pages that are cached but mapped by no process, and
// returns; it returns at once when ctx ends. The drop right after the
// hand-back (PageOutExecutable) leaves many of the pages it just
// unmapped in the page cache: measured on Linux 6.18, 15 of a sidecar's
// 26 MiB binary stayed cached, 2-6 MiB once dropped again three seconds
// later, and a page fault maps the cached pages around it (fault-around,
// 64 KiB), so what stays cached comes back into the RSS unused: 8.1-8.6
// MiB of a loaded sidecar's binary resident against 6.3-6.5.
func Settle(ctx context.Context) {
	t := time.NewTimer(settleDelay)
	defer t.Stop()
	select {
	case <-t.C:
		dropCache()
	case <-ctx.Done():
	}
}

// Release runs PageOutExecutable and logs, at debug level, what it did or
// why it could not.
func Release(log *slog.Logger) {
	res, err := PageOutExecutable()
	if err != nil {
		log.Debug("start-up pages stay resident", "error", err)
		return
	}
	log.Debug("start-up pages paged out", "mappings", res.Mappings,
		"resident_before_bytes", res.ResidentBefore, "resident_after_bytes", res.ResidentAfter)
}
