package forward

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestShadowHost(t *testing.T) {
	for in, want := range map[string]string{
		"reviews":                           "reviews-shadow",
		"reviews:9080":                      "reviews-shadow:9080",
		"reviews.default.svc.cluster.local": "reviews.default.svc.cluster.local-shadow",
		"10.0.0.1:80":                       "10.0.0.1-shadow:80",
		"[::1]:80":                          "[::1]-shadow:80",
		"[::1]":                             "[::1]-shadow",
	} {
		if got := shadowHost(in); got != want {
			t.Errorf("shadowHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReplayBody(t *testing.T) {
	small := strings.Repeat("a", 1000)
	rb := newReplayBody(strings.NewReader(small))
	v := rb.attempt()
	if b, _ := io.ReadAll(v); string(b) != small {
		t.Fatalf("first attempt read %d bytes", len(b))
	}
	v2 := rb.attempt()
	if v2 == nil {
		t.Fatal("a small body read to the end must be replayable")
	}
	if b, _ := io.ReadAll(v2); string(b) != small {
		t.Fatalf("replay read %d bytes", len(b))
	}
	if _, err := v.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("old attempt read after completion: %v, want EOF", err)
	}

	// Nothing read yet (a connect failure): the next attempt may have it.
	rb = newReplayBody(strings.NewReader(small))
	rb.attempt()
	if v := rb.attempt(); v == nil {
		t.Fatal("an unread body must be replayable")
	} else if b, _ := io.ReadAll(v); string(b) != small {
		t.Fatalf("read %d bytes", len(b))
	}

	// Partly read: not replayable.
	rb = newReplayBody(strings.NewReader(small))
	v = rb.attempt()
	v.Read(make([]byte, 10))
	if rb.attempt() != nil {
		t.Error("a partly sent body must not be replayed")
	}

	// Larger than the buffer: streams through, never replayed.
	big := bytes.Repeat([]byte("b"), retryBodyBufferLimit+1)
	rb = newReplayBody(bytes.NewReader(big))
	v = rb.attempt()
	if b, _ := io.ReadAll(v); len(b) != len(big) {
		t.Fatalf("streamed %d bytes, want %d", len(b), len(big))
	}
	if rb.attempt() != nil {
		t.Error("a body over the buffer limit must not be replayed")
	}
}

// TestRemoveConnectionHeaders: the fields a Connection header names are
// dropped whatever the case of the name, the common tokens without
// canonicalizing them (which would allocate) and any other with it.
func TestRemoveConnectionHeaders(t *testing.T) {
	src := http.Header{"Connection": {"keep-alive, X-Hop", "CLOSE,,  x-other-hop "}}
	dst := http.Header{
		"Keep-Alive": {"timeout=5"}, "Close": {"1"}, "X-Hop": {"a"}, "X-Other-Hop": {"b"},
		"X-Kept": {"c"}, "Content-Type": {"text/plain"},
	}
	removeConnectionHeaders(dst, src)
	if len(dst) != 2 || dst["X-Kept"] == nil || dst["Content-Type"] == nil {
		t.Fatalf("left %v, want X-Kept and Content-Type only", dst)
	}
	src = http.Header{"Connection": {"keep-alive"}}
	dst = http.Header{"Keep-Alive": {"timeout=5"}, "X-Kept": {"c"}}
	if n := testing.AllocsPerRun(100, func() { removeConnectionHeaders(dst, src) }); n != 0 {
		t.Errorf("%v allocations for Connection: keep-alive, want 0", n)
	}
}
