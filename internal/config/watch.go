package config

import (
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
	out := &Dir{Files: map[string][]byte{}, Problems: map[string]*FileProblem{}}
	root, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("config: read dir %s: %w", dir, err)
	}
	if !root.IsDir() {
		return nil, fmt.Errorf("config: read dir %s: not a directory", dir)
	}
	r := dirReader{out: out, visited: []os.FileInfo{root}}
	if err := r.walk(dir, 0); err != nil {
		return nil, fmt.Errorf("config: read dir %s: %w", dir, err)
	}
	return out, nil
}

// dirReader is one ReadDir walk.
type dirReader struct {
	out     *Dir
	visited []os.FileInfo // directories entered, to detect symbolic link loops
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
			r.read(p)
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
		r.read(p)
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

// read reads one regular config file.
func (r *dirReader) read(p string) {
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
	files, err := ReadDir(dir)
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
			files, err := ReadDir(dir)
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
