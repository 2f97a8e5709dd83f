//go:build linux

package residency

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PageOutExecutable hands back the resident pages of the executable's
// read-only mappings. Pages only this process maps are reclaimed (madvise
// MADV_PAGEOUT: the memory is free at once); then a mapping none of whose
// pages was ever copied on write (smaps: Anonymous 0 kB) is unmapped from
// this process (MADV_DONTNEED), which leaves the pages other processes of
// the same file share in the page cache, unmapped here: clean cache the
// kernel can drop first, not this process's memory. Writable mappings
// (initialised data) are left alone: their changed pages are anonymous
// memory, and without swap they stay. An error means nothing could be
// advised (smaps unreadable, the kernel without MADV_PAGEOUT).
func PageOutExecutable() (Result, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return Result{}, fmt.Errorf("residency: the executable: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return Result{}, fmt.Errorf("residency: %w", err)
	}
	all := exeMappings(smaps, exe)
	// No read-ahead on a fault in the writable mapping either (initialised
	// data, whose pages are the file's until written): a fault there on a
	// page never written reads the file around it, and with a block
	// device's read-ahead of several MiB (8 MiB on the machine that found
	// it) one such fault brought 11 MiB of the binary back into the page
	// cache right after the hand-back had dropped it, where fault-around
	// then mapped it into the RSS (docs/proxy.md, start-up pages). Advice
	// only: a kernel that refuses it changes nothing else.
	for _, r := range all {
		if r.writable {
			_, _, _ = unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_RANDOM)
		}
	}
	ranges := readOnly(all)
	if len(ranges) == 0 {
		return Result{}, fmt.Errorf("residency: no read-only mapping of %s in /proc/self/smaps", exe)
	}
	res := Result{ResidentBefore: residentIn(smaps, exe)}
	var firstErr error
	for _, r := range ranges {
		_, _, pe := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_PAGEOUT)
		var de syscall.Errno
		if r.clean {
			// Private file pages that were never written: dropping them
			// from this address space loses nothing, the next access
			// maps the file's page again. (Also where the kernel has no
			// MADV_PAGEOUT.)
			_, _, de = unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED)
		}
		if pe != 0 && (!r.clean || de != 0) {
			if firstErr == nil {
				firstErr = fmt.Errorf("residency: madvise(MADV_PAGEOUT) on %s: %w", exe, pe)
			}
			continue
		}
		// No read-ahead from here on (MADV_RANDOM): a page faulted back
		// in is read alone, not with the 128 KiB or more around it that
		// start-up's sequential faults made the kernel read and map. What
		// serving touches is then what stays resident (a small sidecar's
		// binary under load: 11.5 -> 7.5 MiB); code first run later takes
		// a page fault per 4 KiB page (docs/proxy.md, start-up pages).
		// Advice only: a kernel that refuses it changes nothing else.
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_RANDOM)
		res.Mappings++
		res.Bytes += int64(r.end - r.start)
	}
	if res.Mappings == 0 {
		return res, firstErr
	}
	dropCache()
	res.ResidentAfter = residentBytes(exe)
	return res, nil
}

// dropCache asks the kernel to drop the executable's pages that are in
// the page cache but mapped by no process (posix_fadvise
// POSIX_FADV_DONTNEED; pages someone maps, and dirty ones, stay). Those
// are start-up pages the madvise left unmapped, pages of the file another
// process read, and the read-ahead around what was faulted in. Left
// cached, they come back into this process's RSS without being used: a
// page fault on a file mapping also maps the cached pages around it
// (Linux's fault-around, 64 KiB by default; MADV_RANDOM does not stop
// it), and a loaded sidecar's binary measured 10.2-10.5 MiB resident with
// its file cached against 5.3-5.4 without. Advice only: an error changes
// nothing else.
func dropCache() {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

type addrRange struct {
	start, end uintptr
	clean      bool // no page copied on write (Anonymous: 0 kB)
	writable   bool // "rw-p": initialised data
}

// readOnly returns the mappings of rs that are not writable.
func readOnly(rs []addrRange) []addrRange {
	var out []addrRange
	for _, r := range rs {
		if !r.writable {
			out = append(out, r)
		}
	}
	return out
}

// exeMappings returns the readable mappings of path in a /proc/PID/smaps
// (or maps) text: read-only ones ("r-xp", "r--p") and writable ones
// ("rw-p", writable set); clean when smaps says none of their pages is
// anonymous (a maps text never says so).
func exeMappings(smaps []byte, path string) []addrRange {
	var out []addrRange
	cur := -1 // index in out of the mapping whose fields follow, or -1
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if !isHeader(f) {
			// Anonymous:             0 kB
			if cur >= 0 && f[0] == "Anonymous:" && len(f) >= 2 {
				out[cur].clean = f[1] == "0"
			}
			continue
		}
		// 00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/weft-proxy
		cur = -1
		if len(f) < 6 || strings.Join(f[5:], " ") != path {
			continue
		}
		perms := f[1]
		if len(perms) < 2 || perms[0] != 'r' {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, addrRange{start: uintptr(start), end: uintptr(end), writable: perms[1] == 'w'})
		cur = len(out) - 1
	}
	return out
}

// isHeader reports whether the fields of a /proc/PID/smaps line are a
// mapping's header ("start-end perms offset dev inode [path]") rather
// than one of its "Key: value" lines.
func isHeader(f []string) bool {
	return len(f) >= 5 && !strings.HasSuffix(f[0], ":") && strings.Contains(f[0], "-")
}

// residentBytes sums the Rss of every mapping of path in
// /proc/self/smaps; 0 when it cannot be read.
func residentBytes(path string) int64 {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	return residentIn(smaps, path)
}

// residentIn sums the Rss lines of the mappings of path in a
// /proc/PID/smaps text.
func residentIn(smaps []byte, path string) int64 {
	var total int64
	in := false
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if isHeader(f) {
			// A mapping's header line.
			in = len(f) >= 6 && strings.Join(f[5:], " ") == path
			continue
		}
		if in && f[0] == "Rss:" && len(f) >= 2 {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				total += kb << 10
			}
		}
	}
	return total
}
