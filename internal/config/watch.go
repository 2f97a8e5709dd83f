package config

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce timing of Watch: reload once events have been quiet for
// quietPeriod, and never later than maxDelay after the first one.
const (
	quietPeriod = 100 * time.Millisecond
	maxDelay    = 500 * time.Millisecond
)

// maxDepth bounds how deep ReadDir descends, symbolic links included.
const maxDepth = 32

// ReadDir reads every *.yaml and *.yml file under dir, recursively, keyed
// by its path (dir joined with the relative path). Hidden files and
// directories (names starting with ".", such as Kubernetes' ..data) are
// skipped. Symbolic links are followed, to files and to directories, with
// loops detected. A config file that cannot be read — a dangling or
// looping link, a read error, a file over MaxFileSize, or something that
// is not a regular file (a named pipe is never opened) — is listed in
// Problems, so that its last good resources stay in force instead of being
// deleted. ReadDir fails only when dir itself cannot be read.
func ReadDir(dir string) (*Dir, error) {
	return readDir(dir, nil)
}

// readDir is ReadDir that, with a cache, takes from it the files stat says
// are unchanged since it read them, and leaves in it what it read.
func readDir(dir string, cache *fileCache) (*Dir, error) {
	out := &Dir{Files: map[string][]byte{}, Problems: map[string]*FileProblem{}}
	root, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("config: read dir %s: %w", dir, err)
	}
	if !root.IsDir() {
		return nil, fmt.Errorf("config: read dir %s: not a directory", dir)
	}
	r := dirReader{out: out, visited: []os.FileInfo{root}, cache: cache}
	if cache != nil {
		r.next = map[string]cachedFile{}
		r.trustBefore = time.Now().Add(-cmp.Or(cache.racy, racyWindow)).UnixNano()
	}
	if err := r.walk(dir, 0); err != nil {
		return nil, fmt.Errorf("config: read dir %s: %w", dir, err)
	}
	if cache != nil {
		cache.files = r.next
	}
	return out, nil
}

// dirReader is one ReadDir walk.
type dirReader struct {
	out     *Dir
	visited []os.FileInfo // directories entered, to detect symbolic link loops

	cache       *fileCache // nil: read every file
	next        map[string]cachedFile
	trustBefore int64 // UnixNano: files changed since may change unseen by stat
}

// fileCache is what a watch read of each config file, with what stat said
// of the file then, so that a reload reads only the files that changed:
// at 4,000 files, reading them all again was most of a reload's I/O
// (six system calls a file, one with the cache).
//
// A file whose modification or change time is within racyWindow of the
// reading is not taken from the cache: file times have the kernel's
// coarse clock (milliseconds), so a file rewritten at the same size in
// the tick it was read in would look unchanged ("racy git"). Such a file
// is read again until it is older.
type fileCache struct {
	files map[string]cachedFile
	racy  time.Duration // 0: racyWindow
}

type cachedFile struct {
	sig  fileSig
	data []byte
}

// fileSig is what stat says of a file that changes when its content
// does: which file it is (device, inode: a rename over it, as
// Kubernetes' atomic writer does, is another file), its size and times.
type fileSig struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // UnixNano
}

const racyWindow = 2 * time.Second

func sigOf(fi os.FileInfo) (fileSig, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileSig{}, false
	}
	return fileSig{
		dev: uint64(st.Dev), ino: uint64(st.Ino), size: st.Size,
		mtime: time.Unix(st.Mtim.Unix()).UnixNano(), ctime: time.Unix(st.Ctim.Unix()).UnixNano(),
	}, true
}

func (r *dirReader) problem(path string, code Code, format string, args ...any) {
	r.out.Problems[path] = &FileProblem{Code: code, Message: fmt.Sprintf(format, args...)}
}

// walk reads the directory at path; an error is returned only for path
// itself at depth 0.
func (r *dirReader) walk(path string, depth int) error {
	entries, err := os.ReadDir(path)
	if err != nil {
		if depth == 0 {
			return err
		}
		r.problem(path, CodeUnreadableFile, "cannot read directory: %v", err)
		return nil
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(path, e.Name())
		mode := e.Type()
		if mode&fs.ModeSymlink != 0 {
			r.link(p, depth)
			continue
		}
		switch {
		case mode.IsDir():
			r.enter(p, depth)
		case !isConfigFile(p):
		case mode.IsRegular():
			r.read(p, nil)
		default:
			r.problem(p, CodeNotRegularFile, "not a regular file (%s); it is not read", modeName(mode))
		}
	}
	return nil
}

// link follows a symbolic link found at p.
func (r *dirReader) link(p string, depth int) {
	target, _ := os.Readlink(p)
	fi, err := os.Stat(p)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ELOOP):
		r.problem(p, CodeUnreadableFile, "symbolic link loop (-> %s)", target)
		return
	case errors.Is(err, fs.ErrNotExist):
		if isConfigFile(p) {
			r.problem(p, CodeUnreadableFile, "dangling symbolic link: its target %s does not exist", target)
		}
		return
	default:
		r.problem(p, CodeUnreadableFile, "cannot follow symbolic link -> %s: %v", target, err)
		return
	}
	switch {
	case fi.IsDir():
		r.enter(p, depth)
	case !isConfigFile(p):
	case fi.Mode().IsRegular():
		r.read(p, fi)
	default:
		r.problem(p, CodeNotRegularFile, "symbolic link to something that is not a regular file (%s); it is not read", modeName(fi.Mode()))
	}
}

// enter walks a subdirectory unless it was entered before (a symbolic
// link loop) or is too deep.
func (r *dirReader) enter(p string, depth int) {
	fi, err := os.Stat(p)
	if err != nil {
		r.problem(p, CodeUnreadableFile, "cannot read directory: %v", err)
		return
	}
	for _, v := range r.visited {
		if os.SameFile(v, fi) {
			r.problem(p, CodeUnreadableFile, "directory loop through symbolic links: %s was read already; not followed", p)
			return
		}
	}
	if depth+1 > maxDepth {
		r.problem(p, CodeUnreadableFile, "more than %d directories deep; not read", maxDepth)
		return
	}
	r.visited = append(r.visited, fi)
	_ = r.walk(p, depth+1)
}

// read reads one regular config file; fi is what stat said of it, if
// the caller asked.
func (r *dirReader) read(p string, fi os.FileInfo) {
	var (
		sig    fileSig
		cached bool
	)
	if r.cache != nil {
		if fi == nil {
			fi, _ = os.Stat(p)
		}
		if fi != nil {
			sig, cached = sigOf(fi)
		}
		if c, ok := r.cache.files[p]; cached && ok && c.sig == sig {
			r.out.Files[p] = c.data
			r.next[p] = c
			return
		}
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return // removed while we were reading: it is simply gone
		}
		r.problem(p, CodeUnreadableFile, "cannot read: %v", err)
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	switch {
	case err != nil:
		r.problem(p, CodeUnreadableFile, "cannot read: %v", err)
	case len(data) > MaxFileSize:
		r.problem(p, CodeFileTooLarge, "the file is over the %s limit per file; it is not read (split it into several files)", byteSize(MaxFileSize))
	default:
		r.out.Files[p] = data
		// Only a file that has not changed for a while, and was the
		// same file when opened (not replaced between stat and open),
		// may be taken from the cache next time.
		if cached && sig.mtime < r.trustBefore && sig.ctime < r.trustBefore {
			if ofi, err := f.Stat(); err == nil {
				if osig, ok := sigOf(ofi); ok && osig == sig && int64(len(data)) == sig.size {
					r.next[p] = cachedFile{sig: sig, data: data}
				}
			}
		}
	}
}

func modeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	}
	return m.Type().String()
}

func isConfigFile(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".yaml" || ext == ".yml"
}

// Watch loads dir into s, calls onChange with the first snapshot, then
// watches dir and its subdirectories and reloads after every burst of
// changes (file writes, creations, deletions, renames over a file),
// calling onChange whenever the snapshot's content changed. A change is in
// force within about maxDelay. onChange is called from Watch's goroutine,
// never concurrently, and should not block for long.
//
// Watch blocks until ctx is done and then returns nil; it returns an error
// early only when dir cannot be watched or read at start. Its goroutines
// end before it returns.
func Watch(ctx context.Context, dir string, s *Store, onChange func(*Snapshot)) error {
	var last *Snapshot
	return WatchDir(ctx, dir, s.log, func(files *Dir) {
		if snap := s.LoadDir(files); last == nil || !sameContent(last, snap) {
			last = snap
			onChange(snap)
		}
	})
}

// WatchDir reads dir, calls onRead with its content, then watches dir and
// its subdirectories and reads it again after every burst of changes,
// calling onRead with each new reading (which may equal the previous one).
// It is Watch without a Store, for callers that merge the directory with
// other config sources before loading. onRead is called from WatchDir's
// goroutine, never concurrently. WatchDir blocks until ctx is done and
// returns nil; it returns an error early only when dir cannot be watched
// or read at start. A nil log means slog.Default().
func WatchDir(ctx context.Context, dir string, log *slog.Logger, onRead func(*Dir)) error {
	if log == nil {
		log = slog.Default()
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watch %s: %w", dir, err)
	}
	defer w.Close()
	// Watch before the first read so no change falls between the two.
	if err := addTree(w, dir); err != nil {
		return fmt.Errorf("config: watch %s: %w", dir, err)
	}
	cache := &fileCache{}
	files, err := readDir(dir, cache)
	if err != nil {
		return err
	}
	onRead(files)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var first time.Time // first event of the pending burst; zero when none
	schedule := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		at := now.Add(quietPeriod)
		if limit := first.Add(maxDelay); at.After(limit) {
			at = limit
		}
		timer.Reset(time.Until(at))
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() && !strings.HasPrefix(filepath.Base(ev.Name), ".") {
					// Files may have landed in it before the watch did; the
					// reload reads them.
					if err := addTree(w, ev.Name); err != nil {
						log.Warn("cannot watch directory", "dir", ev.Name, "err", err)
					}
				}
			}
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// Events may have been lost (e.g. queue overflow): reload anyway.
			log.Warn("watch error", "dir", dir, "err", err)
			schedule()
		case <-timer.C:
			first = time.Time{}
			// New links may point to directories not watched yet; adding a
			// watched path again is a no-op.
			_ = addTree(w, dir)
			files, err := readDir(dir, cache)
			if err != nil {
				log.Error("cannot reload config; keeping the current snapshot", "dir", dir, "err", err)
				continue
			}
			onRead(files)
		}
	}
}

// SameContent reports whether two snapshots hold the same resources and
// diagnostics (their versions aside): loading again changed nothing a
// consumer would see.
func SameContent(a, b *Snapshot) bool { return sameContent(a, b) }

// addTree watches dir and every non-hidden directory below it, following
// symbolic links to directories (each directory once), and the directory
// holding the target of each symbolic link to a config file, so an edit
// of a linked file is seen too.
func addTree(w *fsnotify.Watcher, dir string) error {
	root, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if err := w.Add(dir); err != nil {
		return err
	}
	visited := []os.FileInfo{root}
	var walk func(path string, depth int)
	walk = func(path string, depth int) {
		entries, err := os.ReadDir(path)
		if err != nil || depth >= maxDepth {
			return
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if e.Type().IsRegular() {
				continue // a file: nothing to watch (no stat for each of thousands)
			}
			p := filepath.Join(path, e.Name())
			fi, err := os.Stat(p)
			if err != nil {
				continue
			}
			if !fi.IsDir() {
				if e.Type()&fs.ModeSymlink != 0 && isConfigFile(p) {
					if target, err := filepath.EvalSymlinks(p); err == nil {
						_ = w.Add(filepath.Dir(target))
					}
				}
				continue
			}
			if slices.ContainsFunc(visited, func(v os.FileInfo) bool { return os.SameFile(v, fi) }) {
				continue
			}
			visited = append(visited, fi)
			_ = w.Add(p) // a directory that vanished meanwhile is read (or not) by the reload
			walk(p, depth+1)
		}
	}
	walk(dir, 0)
	return nil
}
