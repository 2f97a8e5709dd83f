package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce timing of Watch: reload once events have been quiet for
// quietPeriod, and never later than maxDelay after the first one.
const (
	quietPeriod = 100 * time.Millisecond
	maxDelay    = 500 * time.Millisecond
)

// ReadDir reads every *.yaml and *.yml file under dir, recursively, keyed
// by its path (dir joined with the relative path). Hidden files and
// directories (names starting with ".", such as Kubernetes' ..data) are
// skipped; symbolic links to regular files are followed.
func ReadDir(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isConfigFile(path) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			fi, err := os.Stat(path)
			if err != nil || !fi.Mode().IsRegular() {
				return nil // dangling or not a file: nothing to load
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		paths = append(paths, path)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("config: read dir %s: %w", dir, err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while we were reading
			}
			return nil, fmt.Errorf("config: read %s: %w", p, err)
		}
		files[p] = b
	}
	return files, nil
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
	last := s.Load(files)
	onChange(last)

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
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					// Files may have landed in it before the watch did; the
					// reload reads them.
					if err := addTree(w, ev.Name); err != nil {
						s.log.Warn("cannot watch directory", "dir", ev.Name, "err", err)
					}
				}
			}
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// Events may have been lost (e.g. queue overflow): reload anyway.
			s.log.Warn("watch error", "dir", dir, "err", err)
			schedule()
		case <-timer.C:
			first = time.Time{}
			files, err := ReadDir(dir)
			if err != nil {
				s.log.Error("cannot reload config; keeping the current snapshot", "dir", dir, "err", err)
				continue
			}
			if snap := s.Load(files); !sameContent(last, snap) {
				last = snap
				onChange(snap)
			}
		}
	}
}

// addTree watches dir and every non-hidden directory below it.
func addTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
}
