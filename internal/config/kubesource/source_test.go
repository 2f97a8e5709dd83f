package kubesource

import (
	"log/slog"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/config"
)

// newOffline is a Source that is never run: its handlers are driven by
// hand, as its informers would drive them.
func newOffline(t *testing.T) (*Source, cache.ResourceEventHandler) {
	t.Helper()
	s, err := New(Options{Config: &rest.Config{Host: "https://127.0.0.1:1"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w := watchedKind{kind: kinds[0], gvr: kinds[0].gvr("v1")}
	return s, s.handler(w)
}

func changed(s *Source) bool {
	select {
	case <-s.Changed():
		return true
	default:
		return false
	}
}

func poked(s *Source) bool {
	select {
	case <-s.w.pokeCh:
		return true
	default:
		return false
	}
}

func TestHandlerKeepsFiles(t *testing.T) {
	s, h := newOffline(t)
	path := FilePath(config.KindVirtualService, "shop", "reviews")

	// The initial list: no Changed before sync (Run signals once synced).
	h.OnAdd(vsObject("reviews", 90, 10), true)
	if changed(s) {
		t.Error("Changed before sync")
	}
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()

	files := s.Files()
	if _, ok := files[path]; !ok || len(files) != 1 {
		t.Fatalf("files = %v", files)
	}
	if g := s.servedGenerations()[path]; g != 3 {
		t.Errorf("served generation = %d, want 3", g)
	}

	// A status write (ours): no change of Files, but the writer looks.
	u := vsObject("reviews", 90, 10)
	u.SetResourceVersion("2000")
	u.Object["status"] = map[string]any{"observedGeneration": int64(3)}
	h.OnUpdate(vsObject("reviews", 90, 10), u)
	if changed(s) {
		t.Error("a status-only update changed Files")
	}
	if !poked(s) {
		t.Error("a status-only update did not wake the status writer")
	}

	// A spec change is a change.
	edit := vsObject("reviews", 50, 50)
	edit.SetGeneration(4)
	h.OnUpdate(u, edit)
	if !changed(s) {
		t.Error("a spec change did not signal Changed")
	}
	if string(s.Files()[path]) == string(files[path]) {
		t.Error("Files still has the old content")
	}
	if g := s.servedGenerations()[path]; g != 4 {
		t.Errorf("served generation = %d, want 4", g)
	}

	// A delete, also as a tombstone after a missed watch event.
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "shop/reviews", Obj: edit})
	if !changed(s) || len(s.Files()) != 0 {
		t.Errorf("after delete: changed %v, files %v", changed(s), s.Files())
	}
	if st := s.Status(); st.Objects != 0 || !st.Synced {
		t.Errorf("status = %+v", st)
	}
}
