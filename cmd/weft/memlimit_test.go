package main

import (
	"strings"
	"testing"
)

func TestMemoryLimitFlag(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"0", 0}, {"180Mi", 180 << 20}, {"1G", 1e9}} {
		got, err := memoryLimit(c.in)
		if err != nil || got != c.want {
			t.Errorf("memoryLimit(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	if _, err := memoryLimit("auto"); err != nil {
		t.Errorf("memoryLimit(auto): %v", err)
	}
	for _, bad := range []string{"lots", "1Mi"} {
		if _, err := memoryLimit(bad); err == nil || !strings.Contains(err.Error(), `--memory-limit "`+bad+`"`) {
			t.Errorf("memoryLimit(%q): want an error naming the flag and value, got %v", bad, err)
		}
	}
	_, err := run(t, "serve", "--memory-limit", "lots", "--config", "examples/canary")
	if err == nil || !strings.Contains(err.Error(), `--memory-limit "lots"`) {
		t.Fatalf("serve --memory-limit lots: want a clear error, got %v", err)
	}
}
