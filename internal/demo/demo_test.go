package demo

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"weft.dev/weft/internal/testenv"

	"go.uber.org/goleak"

	"weft.dev/weft/examples"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// canaryCopy writes the embedded examples/canary to a temp dir, moved to
// 127.78.10.0/24 so the test never collides with a `weft demo` a developer
// is running.
func canaryCopy(t *testing.T) string {
	dir := t.TempDir()
	err := fs.WalkDir(examples.Canary, "canary", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := examples.Canary.ReadFile(path)
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte("127.0.10."), []byte("127.78.10."))
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// plaintextAnswered sends a plaintext HTTP request to addr on a new
// connection and reports whether any response came back.
func plaintextAnswered(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: backend\r\n\r\n"); err != nil {
		return false
	}
	n, _ := c.Read(make([]byte, 16))
	return n > 0
}

var splitLine = regexp.MustCompile(`(?m)^\s+(no header|x-canary: true|live)\s+(\d+) requests\s+(.*)$`)

// shares parses "v1  901 ( 90.1%)  v2   99 (  9.9%)" into counts by version.
func shares(s string) map[string]int {
	out := map[string]int{}
	f := strings.Fields(strings.NewReplacer("(", " ", ")", " ", "%", " ").Replace(s))
	for i := 0; i+1 < len(f); i++ {
		if strings.HasPrefix(f[i], "v") {
			if n, err := strconv.Atoi(f[i+1]); err == nil {
				out[f[i]] = n
			}
		}
	}
	return out
}

// TestDemoGrayRelease runs the demo as a user would, checks the split it
// reports, edits the weights live, and sees the new split take over.
func TestDemoGrayRelease(t *testing.T) {
	dir := canaryCopy(t)
	out := &testenv.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigDir: dir, From: "frontend", To: "backend", CanaryHeader: "x-canary",
			Requests: 1000, XDSAddress: "127.0.0.1:0", StatusAddr: "127.0.0.1:0", Out: out,
			ReportPeriod: 200 * time.Millisecond})
	}()
	waitOutput := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.NewTimer(30 * time.Second)
		defer deadline.Stop()
		for {
			if s := out.String(); ok(s) {
				return s
			}
			select {
			case err := <-done:
				t.Fatalf("demo exited before %s: %v\n%s", what, err, out.String())
			case <-deadline.C:
				t.Fatalf("demo output lacks %s:\n%s", what, out.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	s := waitOutput("the curl lines", func(s string) bool { return strings.Contains(s, "Try it:") })
	for _, m := range splitLine.FindAllStringSubmatch(s, -1) {
		got := shares(m[3])
		switch m[1] {
		case "no header": // 1,000 requests: σ ≈ 0.95 points, ±5 is > 5σ
			if v1 := got["v1"]; v1 < 850 || v1 > 950 || got["v1"]+got["v2"] != 1000 {
				t.Errorf("90/10 split: got %v", got)
			}
		case "x-canary: true":
			if got["v2"] != 100 || len(got) != 1 {
				t.Errorf("canary header: want all 100 on v2, got %v", got)
			}
		}
	}
	for _, want := range []string{"curl -s -H 'Host: backend' -H 'x-canary: true' http://127.78.10.1:15001/", filepath.Join(dir, "backend.yaml"),
		"spiffe://cluster.local/ns/default/sa/frontend", "spiffe://cluster.local/ns/default/sa/backend"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// Mutual TLS, STRICT mesh-wide: the banner says so for each sidecar,
	// and a plaintext request straight to a sidecar is refused.
	if n := strings.Count(s, "mTLS: STRICT"); n != 3 {
		t.Errorf("demo banner says \"mTLS: STRICT\" %d times, want 3 (one per sidecar):\n%s", n, s)
	}
	if answered := plaintextAnswered(t, "127.78.10.2:8080"); answered {
		t.Error("a plaintext request to backend-v1's sidecar was answered; the demo runs STRICT")
	}

	// Edit the weights as the demo suggests: all traffic to v2.
	path := filepath.Join(dir, "backend.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("weight: 90"), []byte("weight: 0"), 1)
	b = bytes.Replace(b, []byte("weight: 10"), []byte("weight: 100"), 1)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mark := len(out.String())
	waitOutput("a live report with everything on v2", func(s string) bool {
		for _, m := range splitLine.FindAllStringSubmatch(s[mark:], -1) {
			if m[1] == "live" && shares(m[3])["v2"] == 100 {
				return true
			}
		}
		return false
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo: %v", err)
	}
	if !strings.Contains(out.String(), "stopping") {
		t.Errorf("demo did not report stopping")
	}
}
