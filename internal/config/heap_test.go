package config

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
)

// TestConfigHeap reports the live heap a loaded config holds: a
// measurement, not a check, run by hand on a directory of YAML, e.g. the
// 1,000-service mesh of bench/meshgen:
//
//	go run ./bench/meshgen -dir /tmp/mesh -services 1000 -endpoints 3
//	WEFT_CONFIG_DIR=/tmp/mesh go test -run TestConfigHeap -v ./internal/config
//
// WEFT_HEAP_PROFILE=file also writes a heap profile of every allocation.
func TestConfigHeap(t *testing.T) {
	dir := os.Getenv("WEFT_CONFIG_DIR")
	if dir == "" {
		t.Skip("WEFT_CONFIG_DIR not set")
	}
	files := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	prof := os.Getenv("WEFT_HEAP_PROFILE")
	if prof != "" {
		runtime.MemProfileRate = 1
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := NewStore(Options{})
	snap := s.Load(files)
	files = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("live heap of the loaded config: %.1f MiB (%d diagnostics)", float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), len(snap.Diagnostics))
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.KeepAlive(s)
	runtime.KeepAlive(snap)
}
