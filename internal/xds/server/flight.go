package server

import (
	"context"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Defaults for the bytes-in-flight bound.
const (
	DefaultMaxBytesInFlight = 64 << 20
	// flightExpiry is how long a response counts against the bound
	// without an answer: a proxy that stops reading holds its share only
	// this long, so a few stuck proxies cannot stall everyone else's
	// pushes.
	flightExpiry = 10 * time.Second
	// flightSweep is how often waiting streams are woken even when no
	// answer freed room: a wake-up can be spent by a stream that then had
	// nothing to send, and room held by proxies that never answer frees
	// only by expiry, which no answer announces. Without the sweep the
	// waiting streams could wait for ever.
	flightSweep = time.Second
)

// flightBudget bounds the bytes of responses sent and not yet answered
// (ACKed or NACKed), across all streams. gRPC encodes a whole response
// into memory before writing it, and keeps it until the peer's flow
// control lets it out: when 2,000 proxies connect at once and each is
// sent its 4 MB configuration, or a 900 KB route configuration changes,
// all of it would sit in the control plane's memory at once, waiting for
// proxies to read. With the bound, streams take turns: a stream with
// nothing in flight whose response does not fit sends it when an answer
// frees room (it is woken), and keeps handling its proxy's requests
// meanwhile.
//
// The bound admits streams, not responses: a stream that already has a
// response in flight may send the rest of its set, because proxies
// (weft-proxy, Envoy) answer a response only once the set it belongs to
// is complete — clusters are ACKed after their endpoints arrive. Holding
// back the endpoints of a proxy whose clusters hold the room would wait
// forever. And when nothing is in flight any response goes, however
// large, so there is always progress.
type flightBudget struct {
	limit int64

	mu   sync.Mutex
	used int64
	held map[flightKey]flightEntry
	// perStream counts each stream's entries in held: whether a stream
	// is admitted is asked twice per response sent, and looking for each
	// type's key hashed six type URLs each time (3 % of the control
	// plane's CPU in an endpoint change at 1,000 proxies).
	perStream map[*adsStream]int
	// expiresFrom is a time no held response expires before, so a
	// stream that finds the room full looks for expired responses only
	// once one may be there. Each such stream used to scan every
	// response in flight: in a push round to 2,000 proxies, where most
	// streams find the room full, that was 5 % of the control plane's
	// CPU. Zero: nothing was held since the last look.
	expiresFrom time.Time
	waiting     []*adsStream // FIFO, each stream once
	queued      map[*adsStream]bool
}

type flightKey struct {
	st      *adsStream
	typeURL string
}

type flightEntry struct {
	n       int64
	expires time.Time
}

func newFlightBudget(limit int64) *flightBudget {
	return &flightBudget{limit: limit, held: map[flightKey]flightEntry{}, perStream: map[*adsStream]int{}, queued: map[*adsStream]bool{}}
}

// take counts n bytes for st's response of typeURL, or, when they do not
// fit, queues st to be woken when room frees and returns false.
func (b *flightBudget) take(st *adsStream, typeURL string, n int64) bool {
	if b.limit <= 0 {
		return true
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	admitted := b.admittedLocked(st)
	if !admitted && b.queued[st] {
		// Waiting for its turn: a stream gets in with its first response
		// (clusters, in push order), not past the queue with a smaller one
		// (listeners). Its proxy would hold those unanswered until it had
		// its clusters, which could then wait for answers nobody can give.
		return false
	}
	if !admitted && b.used > 0 && b.used+n > b.limit {
		b.reclaimLocked(now)
		if b.used > 0 && b.used+n > b.limit {
			if !b.queued[st] {
				b.queued[st] = true
				b.waiting = append(b.waiting, st)
			}
			return false
		}
	}
	k := flightKey{st, typeURL}
	if old, ok := b.held[k]; ok {
		b.used -= old.n
	} else {
		b.perStream[st]++
	}
	e := flightEntry{n: n, expires: now.Add(flightExpiry)}
	if b.expiresFrom.IsZero() || e.expires.Before(b.expiresFrom) {
		b.expiresFrom = e.expires
	}
	b.held[k] = e
	b.used += n
	return true
}

// admittedLocked reports whether st has a response in flight.
func (b *flightBudget) admittedLocked(st *adsStream) bool { return b.perStream[st] > 0 }

// forgetLocked removes k, held, from what is in flight.
func (b *flightBudget) forgetLocked(k flightKey, e flightEntry) {
	delete(b.held, k)
	b.used -= e.n
	if b.perStream[k.st]--; b.perStream[k.st] <= 0 {
		delete(b.perStream, k.st)
	}
}

// give returns what st's response of typeURL held, once it is answered.
func (b *flightBudget) give(st *adsStream, typeURL string) {
	if b.limit <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k := flightKey{st, typeURL}
	if e, ok := b.held[k]; ok {
		b.forgetLocked(k, e)
		b.wakeLocked()
	}
}

// drop returns everything a closed stream held.
func (b *flightBudget) drop(st *adsStream) {
	if b.limit <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.perStream[st] > 0 {
		for k, e := range b.held {
			if k.st == st {
				b.forgetLocked(k, e)
			}
		}
	}
	if b.queued[st] {
		delete(b.queued, st)
		b.waiting = slicesDeleteStream(b.waiting, st)
	}
	b.wakeLocked()
}

// sweep forgets expired responses and wakes waiting streams while there
// is room; Serve calls it every flightSweep until ctx is done.
func (b *flightBudget) sweep(ctx context.Context) {
	if b.limit <= 0 {
		return
	}
	t := time.NewTicker(flightSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.sweepOnce(now)
		}
	}
}

// sweepOnce is one round of sweep.
func (b *flightBudget) sweepOnce(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) == 0 {
		return
	}
	b.reclaimLocked(now)
	if b.used == 0 {
		// Nothing in flight: whoever is first may send, however large
		// (take).
		b.wakeOneLocked()
	}
	b.wakeLocked()
}

// reclaimLocked forgets responses unanswered for longer than flightExpiry.
// It looks at them only once one may have expired (expiresFrom), and
// then notes when the first of those left will.
func (b *flightBudget) reclaimLocked(now time.Time) {
	if b.expiresFrom.IsZero() || !now.After(b.expiresFrom) {
		return
	}
	var next time.Time
	for k, e := range b.held {
		if now.After(e.expires) {
			b.forgetLocked(k, e)
		} else if next.IsZero() || e.expires.Before(next) {
			next = e.expires
		}
	}
	b.expiresFrom = next
}

// wakeLocked wakes waiting streams while there is room: each tries again
// and queues itself anew if its response still does not fit.
func (b *flightBudget) wakeLocked() {
	const batch = 4 // woken per freed response; enough to keep the room used
	for i := 0; i < batch && len(b.waiting) > 0 && b.used < b.limit; i++ {
		b.wakeOneLocked()
	}
}

// wakeOneLocked wakes the first waiting stream, if any.
func (b *flightBudget) wakeOneLocked() {
	if len(b.waiting) == 0 {
		return
	}
	st := b.waiting[0]
	b.waiting = b.waiting[1:]
	delete(b.queued, st)
	st.notify()
	if len(b.waiting) == 0 {
		b.waiting = nil // let the array go
	}
}

func slicesDeleteStream(s []*adsStream, st *adsStream) []*adsStream {
	out := s[:0]
	for _, x := range s {
		if x != st {
			out = append(out, x)
		}
	}
	return out
}

// sotwSize is about the encoded size of a state-of-the-world response.
func sotwSize(rs []*anypb.Any) int64 {
	n := int64(64)
	for _, r := range rs {
		n += int64(len(r.GetValue())+len(r.GetTypeUrl())) + 8
	}
	return n
}

// deltaSize is about the encoded size of a delta response.
func deltaSize(rs []*discovery.Resource, removed []string) int64 {
	n := int64(64)
	for _, r := range rs {
		n += int64(len(r.GetResource().GetValue())+len(r.GetResource().GetTypeUrl())+len(r.GetName())+len(r.GetVersion())) + 16
	}
	for _, r := range removed {
		n += int64(len(r)) + 2
	}
	return n
}
