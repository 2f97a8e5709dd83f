package testenv

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A server that exits because its port was taken is reported for a
// restart on new ports, not as a failure.
func TestWaitReadyReportsATakenPort(t *testing.T) {
	p := start(t, t.TempDir(), "taken", "/bin/sh", nil, "-c",
		`echo 'listen tcp 127.0.0.1:36077: bind: address already in use' >&2; exit 1`)
	notReady := func(context.Context) error { return errors.New("not yet") }
	if waitReady(t, p, 10*time.Second, notReady) {
		t.Fatal("waitReady = true for a server that exited")
	}
}
