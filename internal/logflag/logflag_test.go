package logflag

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestLogger(t *testing.T) {
	for _, tc := range []struct {
		level string
		want  slog.Level
	}{{"debug", slog.LevelDebug}, {"info", slog.LevelInfo}, {"WARN", slog.LevelWarn}, {"error", slog.LevelError}} {
		var buf bytes.Buffer
		l, err := Logger(&buf, tc.level)
		if err != nil {
			t.Fatalf("%s: %v", tc.level, err)
		}
		if !l.Enabled(context.Background(), tc.want) || l.Enabled(context.Background(), tc.want-1) {
			t.Errorf("%s: logger not at %v", tc.level, tc.want)
		}
		l.Log(context.Background(), tc.want, "hello", "k", "v")
		if !strings.Contains(buf.String(), "msg=hello k=v") {
			t.Errorf("%s: logged %q, want key=value text", tc.level, buf.String())
		}
	}
	if _, err := Logger(&bytes.Buffer{}, "loud"); err == nil || err.Error() != `--log-level "loud": want debug, info, warn or error` {
		t.Errorf("bad level: %v", err)
	}
}

func TestAdd(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	v := Add(fs)
	if *v != "info" {
		t.Errorf("default %q", *v)
	}
	if err := fs.Parse([]string{"--log-level", "debug"}); err != nil || *v != "debug" {
		t.Errorf("parse: %v, %q", err, *v)
	}
}
