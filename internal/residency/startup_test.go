package residency

import (
	"context"
	"testing"
	"time"
)

func TestStartupOver(t *testing.T) {
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if StartupOver(ctx, ready, 0) {
		t.Errorf("start-up over with ready open and ctx done")
	}
	close(ready)
	if StartupOver(ctx, ready, time.Hour) {
		t.Errorf("start-up over with ctx done before the delay")
	}
	if !StartupOver(context.Background(), ready, 0) {
		t.Errorf("start-up not over with ready closed and no delay")
	}
}
