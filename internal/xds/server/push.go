package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/generate"
)

// versioned is a mesh snapshot with the order it arrived in, so a slow
// generation never overwrites the result of a newer one.
type versioned struct {
	m   *mesh.Snapshot
	seq uint64
}

func (s *Server) current() *versioned { return s.latest.Load() }

// debounce runs on Serve's goroutine until ctx is done. The first Update
// after a quiet spell (no push for Debounce) is pushed at once: a lone
// change, the common case, waits for nothing. An Update that follows a
// push within Debounce starts a burst: it waits for a quiet period of
// Debounce, but never longer than DebounceMax from the first Update of the
// burst, then the newest snapshot is pushed. A storm of changes is
// therefore pushed at most once per DebounceMax plus once at its end, and
// a burst of edits costs at most one push more than it would without the
// leading edge.
func (s *Server) debounce(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var first, last, pushed time.Time // pushed: when the last push ended
	pending := false
	arm := func(now time.Time) {
		wait := min(last.Add(s.opts.Debounce).Sub(now), first.Add(s.opts.DebounceMax).Sub(now))
		timer.Reset(wait)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.updated:
			now := time.Now()
			if !pending && now.Sub(pushed) >= s.opts.Debounce {
				s.push(ctx, now)
				pushed = time.Now()
				continue
			}
			if !pending {
				pending, first = true, now
			}
			last = now
			arm(now)
		case now := <-timer.C:
			if !pending {
				continue
			}
			if now.Sub(last) < s.opts.Debounce && now.Sub(first) < s.opts.DebounceMax {
				arm(now) // an Update arrived while the timer was firing
				continue
			}
			pending = false
			s.push(ctx, first)
			pushed = time.Now()
		}
	}
}

// push regenerates every connected proxy from the newest snapshot, at most
// PushConcurrency at a time, and returns when all are done or ctx is.
// since is when the first mesh change of the push reached the server
// (pilot_proxy_convergence_time is measured from it).
func (s *Server) push(ctx context.Context, since time.Time) {
	cur := s.current()
	if cur == nil {
		return
	}
	start := time.Now()
	s.mu.Lock()
	ps := make([]*proxy, 0, len(s.proxies))
	for _, p := range s.proxies {
		ps = append(ps, p)
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range ps {
		if err := s.acquireCtx(ctx); err != nil {
			break
		}
		wg.Go(func() {
			defer s.release()
			s.write(p, cur, since)
		})
	}
	wg.Wait()
	if ctx.Err() == nil {
		// Every proxy has what cur gives it: what cur carried over is in
		// its own memo, the rest of the snapshot before is garbage, and
		// of the shared outbound listeners and routes the encodings are
		// kept (sidecarSnapshot), the Go values not needed.
		cur.m.ReleaseCarry()
		generate.ForgetOutbound(cur.m)
	}
	s.sets.prune()
	s.metrics.pushRounds.Add(1)
	s.metrics.pushDuration.Observe(time.Since(start).Seconds())
	s.log.Debug("pushed", "mesh", cur.m.Version, "proxies", len(ps), "took", time.Since(start))
}

// write generates p's resources from cur and makes them what p is served,
// waking its streams, unless a newer snapshot was already written or
// nothing changed. Callers hold a semaphore token. A push passes since,
// when its first change reached the server, to measure the proxy's
// convergence (zero: not measured, as for a proxy that just connected).
func (s *Server) write(p *proxy, cur *versioned, since time.Time) {
	snap, versions, namesGen, err := s.generateFor(p, cur)
	if err != nil {
		s.log.Error("generated resources are unusable", "node", p.id.ID, "mesh", cur.m.Version, "error", err)
		s.metrics.errors.Inc()
		return
	}
	p.mu.Lock()
	if p.gone || cur.seq < p.seq || p.namesGen != namesGen {
		p.mu.Unlock()
		return // superseded; a proxyless client's new names are written by subscribe
	}
	p.seq, p.meshVersion = cur.seq, cur.m.Version
	if equal(p.versions, versions) {
		p.mu.Unlock()
		return
	}
	if !since.IsZero() {
		p.conv = newConvergence(since, p.snap, snap)
	}
	p.snap, p.versions = snap, versions
	// A rejection stands only while its version is what the proxy is
	// offered; a new version for the type supersedes it (and, if rejected
	// too, is recorded anew).
	for typeURL, r := range p.rejected {
		if snap.version(typeURL) != r.Version {
			delete(p.rejected, typeURL)
		}
	}
	for st := range p.live {
		st.notify()
	}
	p.mu.Unlock()
	s.metrics.proxyPushes.Inc()
}

var errStopped = errors.New("xds server is stopping")

// acquire takes a generation token, giving up when Serve is stopping.
func (s *Server) acquire() error {
	return s.acquireCtx(s.serveContext())
}

func (s *Server) acquireCtx(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return errStopped
	}
}

func (s *Server) release() { <-s.sem }

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
