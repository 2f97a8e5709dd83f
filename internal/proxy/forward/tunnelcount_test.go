package forward

import (
	"context"
	"testing"
	"time"
)

// TestTunnelCount: a wait returns at once with nothing open, gives up
// with its context, lets a tunnel start while it waits, and returns
// when the last one ends.
func TestTunnelCount(t *testing.T) {
	var c tunnelCount
	if err := c.wait(context.Background()); err != nil {
		t.Fatalf("wait with nothing open: %v", err)
	}
	c.add()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.wait(ctx); err == nil {
		t.Fatal("wait returned nil with a tunnel open")
	}
	got := make(chan error, 1)
	go func() { got <- c.wait(context.Background()) }()
	c.add() // starts while someone waits
	c.done()
	select {
	case err := <-got:
		t.Fatalf("wait returned %v with a tunnel still open", err)
	case <-time.After(20 * time.Millisecond):
	}
	c.done()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after the last tunnel ended")
	}
}
