package config

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// watcher runs Watch on dir for the test's lifetime and exposes its snapshots.
type watcher struct {
	snaps chan *Snapshot
	calls atomic.Int64
}

func startWatch(t *testing.T, dir string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{snaps: make(chan *Snapshot, 1000)}
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, dir, NewStore(testOptions()), func(s *Snapshot) {
			w.calls.Add(1)
			select {
			case w.snaps <- s:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v", err)
		}
	})
	return w
}

// waitFor returns the first snapshot satisfying ok, failing the test if
// none arrives within timeout.
func (w *watcher) waitFor(t *testing.T, timeout time.Duration, what string, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		select {
		case s := <-w.snaps:
			if ok(s) {
				return s
			}
		case <-ctx.Done():
			t.Fatalf("no snapshot with %s within %v", what, timeout)
			return nil
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func hasWeights(name, want string) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		for _, vs := range s.VirtualServices {
			if vs.Name == name {
				var ws []int32
				for _, d := range vs.Spec.GetHttp()[0].GetRoute() {
					ws = append(ws, d.GetWeight())
				}
				return fmt.Sprint(ws) == want
			}
		}
		return false
	}
}

func hasKey(key string, present bool) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		for _, k := range keys(s) {
			if k == key {
				return present
			}
		}
		return !present
	}
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "dr.yaml"), reviewsDR)
	vs := filepath.Join(dir, "vs.yaml")
	writeFile(t, vs, vsYAML("reviews", "90", "10"))
	w := startWatch(t, dir)
	first := w.waitFor(t, time.Second, "the initial config", hasWeights("reviews", "[90 10]"))
	if first.Version != 1 {
		t.Errorf("first Version = %d", first.Version)
	}

	// An edit is in force well within a second.
	writeFile(t, vs, vsYAML("reviews", "50", "50"))
	w.waitFor(t, time.Second, "the edit", hasWeights("reviews", "[50 50]"))

	// Editors write a temporary file and rename it over the original.
	tmp := filepath.Join(dir, ".vs.yaml.swp")
	writeFile(t, tmp, vsYAML("reviews", "20", "80"))
	if err := os.Rename(tmp, vs); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, time.Second, "the renamed-over file", hasWeights("reviews", "[20 80]"))

	// A bad edit keeps the last good version and reports why.
	writeFile(t, vs, vsYAML("reviews", "20", "-80"))
	s := w.waitFor(t, time.Second, "a diagnostic", func(s *Snapshot) bool { return len(s.Diagnostics) == 1 })
	if !hasWeights("reviews", "[20 80]")(s) {
		t.Error("the last good version is not in force after a bad edit")
	}

	// New subdirectories and files in them are picked up.
	sub := filepath.Join(dir, "team", "a")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sub, "other.yml"), vsYAML("other", "1"))
	w.waitFor(t, time.Second, "the file in a new subdirectory", hasKey("VirtualService/default/other", true))
	writeFile(t, filepath.Join(sub, "other.yml"), vsYAML("other", "2"))
	w.waitFor(t, time.Second, "an edit in the subdirectory", hasWeights("other", "[2]"))

	// Deleting a file removes its resources.
	if err := os.RemoveAll(filepath.Join(dir, "team")); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, time.Second, "the removal", hasKey("VirtualService/default/other", false))
}

func TestWatchDebouncesBursts(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "dr.yaml"), reviewsDR)
	vs := filepath.Join(dir, "vs.yaml")
	writeFile(t, vs, vsYAML("reviews", "1"))
	w := startWatch(t, dir)
	w.waitFor(t, time.Second, "the initial config", hasWeights("reviews", "[1]"))
	before := w.calls.Load()
	for i := range 100 {
		writeFile(t, vs, vsYAML("reviews", fmt.Sprint(1000+i)))
	}
	w.waitFor(t, 2*time.Second, "the last write", hasWeights("reviews", "[1099]"))
	if n := w.calls.Load() - before; n > 10 {
		t.Errorf("100 writes caused %d onChange calls, want at most 10", n)
	}
}

func TestWatchMissingDir(t *testing.T) {
	err := Watch(context.Background(), filepath.Join(t.TempDir(), "nope"), NewStore(testOptions()), func(*Snapshot) {
		t.Error("onChange called for a missing directory")
	})
	if err == nil {
		t.Fatal("Watch of a missing directory succeeded")
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a.yaml", "b.yml", "c.txt", "sub/d.YAML", ".hidden/e.yaml", "..data/f.yaml"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, "x: 1\n")
	}
	if err := os.Symlink(filepath.Join(dir, "..data", "f.yaml"), filepath.Join(dir, "f.yaml")); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range sortedKeys(got.Files) {
		rel, _ := filepath.Rel(dir, p)
		names = append(names, rel)
	}
	checkStrings(t, "files", names, []string{"a.yaml", "b.yml", "f.yaml", "sub/d.YAML"})
}

// TestReadDirProblems: links are followed (to files and directories), and
// what cannot be read is reported, never silently skipped: a dangling
// link, a link loop, a named pipe called *.yaml (which is never opened),
// a directory loop through links.
func TestReadDirProblems(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	writeFile(t, filepath.Join(dir, "ok.yaml"), "x: 1\n")
	writeFile(t, filepath.Join(elsewhere, "linked.yaml"), "x: 2\n")
	if err := os.MkdirAll(filepath.Join(elsewhere, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(elsewhere, "sub", "deep.yaml"), "x: 3\n")
	links := map[string]string{
		"linked.yaml":  filepath.Join(elsewhere, "linked.yaml"),
		"linkdir":      filepath.Join(elsewhere, "sub"),
		"dangling.yml": filepath.Join(dir, "gone.yaml"),
		"loop-a.yaml":  filepath.Join(dir, "loop-b.yaml"),
		"loop-b.yaml":  filepath.Join(dir, "loop-a.yaml"),
		"self":         dir, // a directory loop
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range sortedKeys(got.Files) {
		rel, _ := filepath.Rel(dir, p)
		names = append(names, rel)
	}
	checkStrings(t, "files", names, []string{"linkdir/deep.yaml", "linked.yaml", "ok.yaml"})
	var problems []string
	for _, p := range sortedKeys(got.Problems) {
		rel, _ := filepath.Rel(dir, p)
		problems = append(problems, fmt.Sprintf("%s %s: %s", rel, got.Problems[p].Code, got.Problems[p].Message))
	}
	checkStrings(t, "problems", problems, []string{
		"dangling.yml WF0103: dangling symbolic link: its target " + filepath.Join(dir, "gone.yaml") + " does not exist",
		"loop-a.yaml WF0103: symbolic link loop (-> " + filepath.Join(dir, "loop-b.yaml") + ")",
		"loop-b.yaml WF0103: symbolic link loop (-> " + filepath.Join(dir, "loop-a.yaml") + ")",
		"pipe.yaml WF0104: not a regular file (a named pipe); it is not read",
		"self WF0103: directory loop through symbolic links: " + filepath.Join(dir, "self") + " was read already; not followed",
	})
}

// TestUnreadableFileKeepsItsResources: replacing a file with a dangling
// link (or a loop, or a pipe) keeps its last good resources in force and
// says why, as broken YAML does; deleting the file removes them.
func TestUnreadableFileKeepsItsResources(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "services.yaml")
	writeFile(t, path, weDoc("vm", "10.0.0.1"))
	s := NewStore(testOptions())
	load := func() *Snapshot {
		t.Helper()
		d, err := ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s.LoadDir(d)
	}
	if snap := load(); len(snap.WorkloadEntries) != 1 {
		t.Fatalf("not loaded: %v", snap.Diagnostics)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere.yaml"), path); err != nil {
		t.Fatal(err)
	}
	snap := load()
	if len(snap.WorkloadEntries) != 1 {
		t.Error("a dangling link deleted the file's resources")
	}
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		"error: " + path + ": dangling symbolic link: its target " + filepath.Join(dir, "nowhere.yaml") + " does not exist; its last good resources stay in force",
	})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if snap := load(); len(snap.WorkloadEntries) != 0 || len(snap.Diagnostics) != 0 {
		t.Errorf("after deletion: %d WorkloadEntries, diagnostics %v", len(snap.WorkloadEntries), snap.Diagnostics)
	}
}

// TestReadDirCache: a watch's reload takes from its cache only files stat
// says are unchanged and that were old enough when read to be trusted,
// and sees every change: an edit in place at the same size and with the
// old modification time put back, a rename over the file, a link
// pointed elsewhere, a ConfigMap volume's ..data swapped (Kubernetes'
// atomic writer), a file rewritten within the clock tick it was read in.
func TestReadDirCache(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	write := func(name, content string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		if !mtime.IsZero() {
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("a.yaml", "x: 1\n", old)
	write("b.yaml", "x: 2\n", old)
	write("target1.yaml.txt", "x: 3\n", old)
	write("target2.yaml.txt", "x: 4\n", old)
	if err := os.Symlink(filepath.Join(dir, "target1.yaml.txt"), filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	// Files' change times cannot be set: the ones above are trusted
	// once older than the cache's window, fresh.yaml is not.
	cache := &fileCache{racy: 200 * time.Millisecond}
	time.Sleep(300 * time.Millisecond)
	write("fresh.yaml", "x: 5\n", time.Time{})
	read := func() map[string]string {
		t.Helper()
		d, err := readDir(dir, cache)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for p, b := range d.Files {
			got[filepath.Base(p)] = string(b)
		}
		return got
	}
	check := func(step string, got map[string]string, want map[string]string) {
		t.Helper()
		if !maps.Equal(got, want) {
			t.Errorf("%s: read %v, want %v", step, got, want)
		}
	}
	want := map[string]string{"a.yaml": "x: 1\n", "b.yaml": "x: 2\n", "c.yaml": "x: 3\n", "fresh.yaml": "x: 5\n"}
	check("first read", read(), want)
	if _, ok := cache.files[filepath.Join(dir, "a.yaml")]; !ok {
		t.Fatal("an hour-old file is not in the cache: the test checks nothing")
	}
	if _, ok := cache.files[filepath.Join(dir, "fresh.yaml")]; ok {
		t.Error("a file written just now is in the cache: a rewrite in the same clock tick would go unseen")
	}
	check("unchanged", read(), want)

	write("a.yaml", "x: 9\n", old) // same size, same mtime: ctime changed
	want["a.yaml"] = "x: 9\n"
	check("edited in place", read(), want)

	tmp := filepath.Join(dir, ".b.tmp")
	writeFile(t, tmp, "x: 8\n")
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	want["b.yaml"] = "x: 8\n"
	check("renamed over", read(), want)

	if err := os.Remove(filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "target2.yaml.txt"), filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	want["c.yaml"] = "x: 4\n"
	check("link pointed elsewhere", read(), want)

	write("fresh.yaml", "x: 6\n", time.Time{}) // likely within the tick of the last read
	want["fresh.yaml"] = "x: 6\n"
	check("fresh file rewritten", read(), want)

	// A ConfigMap volume: cm.yaml -> ..data/cm.yaml, ..data -> a
	// timestamped directory, swapped by renaming a new link over ..data.
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(filepath.Join(name, "cm.yaml"), content, old)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_12_06_01", "x: 7\n")
	if err := os.Symlink(filepath.Join("..data", "cm.yaml"), filepath.Join(dir, "cm.yaml")); err != nil {
		t.Fatal(err)
	}
	want["cm.yaml"] = "x: 7\n"
	check("ConfigMap volume", read(), want)
	time.Sleep(300 * time.Millisecond) // older than the window: cached
	check("ConfigMap volume again", read(), want)
	if _, ok := cache.files[filepath.Join(dir, "cm.yaml")]; !ok {
		t.Error("the ConfigMap's file is not in the cache: its swap checks nothing")
	}
	version("..2026_12_06_02", "x: 0\n")
	want["cm.yaml"] = "x: 0\n"
	check("ConfigMap volume swapped", read(), want)

	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	delete(want, "a.yaml")
	check("removed", read(), want)
	if _, ok := cache.files[filepath.Join(dir, "a.yaml")]; ok {
		t.Error("a removed file stays in the cache")
	}
}
