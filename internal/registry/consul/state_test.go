package consul

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// The source's bookkeeping, driven step by step as its watchers would:
// what is published, held and reported through an outage.
func TestSourceOutageBookkeeping(t *testing.T) {
	s, err := New(Options{Address: "127.0.0.1:1", Settle: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	order := []*api.ServiceEntry{inst(node("vm-1", "10.1.0.1", nil), "order", 8080, nil, nil, api.HealthPassing)}
	hasOrder := func() bool { return len(s.Snapshot().Endpoints("order.service.consul", 8080)) == 1 }
	changed := func() bool {
		select {
		case <-s.Changed():
			return true
		default:
			return false
		}
	}
	catalog := func(started, stopped []string) bool {
		seq, _ := s.startCatalogQuery(func() {})
		return s.catalogRead(seq, started, stopped)
	}

	// Unreachable at start: not synced, not connected, the error shown.
	s.fail("catalog", errors.New("dial tcp 127.0.0.1:1: connection refused"))
	if st := s.Status(); st.Synced || st.Connected || st.LastError == "" {
		t.Fatalf("status while unreachable at start = %+v", st)
	}
	// It answers: the first complete read is published at once (no settle
	// time: there was nothing to protect).
	if catalog([]string{"order"}, nil) {
		t.Fatal("outage goes on after a catalog read started in it")
	}
	s.serviceRead(ctx, "service order", "order", order)
	if st := s.Status(); !st.Synced || !st.Connected || st.LastError != "" || !hasOrder() || !changed() {
		t.Fatalf("after the first read: status %+v, snapshot:\n%s", st, dump(s.Snapshot()))
	}

	// A service watcher finds Consul gone; the agent comes back empty and
	// answers that watcher first: nothing is published.
	before := s.Snapshot()
	s.fail("service order", errors.New("EOF"))
	if st := s.Status(); st.Connected || st.LastError != "EOF" || !st.Synced {
		t.Errorf("status during the outage = %+v", st)
	}
	s.serviceRead(ctx, "service order", "order", nil)
	if s.Snapshot() != before || changed() {
		t.Fatalf("published during the outage:\n%s", dump(s.Snapshot()))
	}
	// The list read anew ends the outage; the settle time (1h) holds the
	// empty catalog back.
	if catalog(nil, []string{"order"}) {
		t.Fatal("outage goes on after a catalog read started in it")
	}
	if st := s.Status(); !st.Connected || st.LastError != "" {
		t.Errorf("status after the outage = %+v", st)
	}
	if s.Snapshot() != before || changed() {
		t.Fatalf("published while settling:\n%s", dump(s.Snapshot()))
	}

	// A refused query (an ACL's 403) is an error but no outage.
	s.fail("service payment", api.StatusError{Code: 403, Body: "Permission denied"})
	if _, outage := s.outageState(); outage {
		t.Errorf("a 403 started an outage")
	}
	if st := s.Status(); st.Connected || st.LastError == "" {
		t.Errorf("status after a 403 = %+v, want the error shown", st)
	}
	s.forget("service payment")
	if st := s.Status(); !st.Connected || st.LastError != "" {
		t.Errorf("status after the failing watcher ended = %+v", st)
	}
}
