package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// ReleaseWhenQuiet hands the heap's free memory back to the operating
// system (debug.FreeOSMemory: a collection, then every free page
// returned) once activity has reported the same value for quiet, and
// again after each later change followed by such a quiet spell, until ctx
// is done. activity is any count that moves while the process works (a
// server's responses sent, say); it is read every quarter of quiet.
//
// For a process whose work comes in bursts on a large live heap: after a
// burst the heap holds as much garbage again as is live (GOGC=100), and
// a quiet process collects rarely (the runtime forces one every two
// minutes) and returns little of it, so its RSS stays at the burst's
// level while it waits for the next one. Released, it is what is live
// until the next burst grows the heap again. The cost is one collection
// per quiet spell, and the page faults of growing the heap back.
//
// prepare, if set, is called before each release, to drop what the
// process keeps only for reuse; released, if set, after it, with the
// heap's resident bytes (in use and free but not returned) before and
// after.
func ReleaseWhenQuiet(ctx context.Context, activity func() uint64, quiet time.Duration, prepare func(), released func(before, after uint64)) {
	if quiet <= 0 {
		return
	}
	t := time.NewTicker(max(quiet/4, time.Millisecond))
	defer t.Stop()
	last, since, done := activity(), time.Now(), false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if a := activity(); a != last {
				last, since, done = a, now, false
				continue
			}
			if done || now.Sub(since) < quiet {
				continue
			}
			before := heapResident()
			if prepare != nil {
				prepare()
			}
			debug.FreeOSMemory()
			done = true
			if released != nil {
				released(before, heapResident())
			}
		}
	}
}

// heapResident is the heap's memory the process holds from the operating
// system: objects, free slots in spans in use, and free spans not yet
// returned.
func heapResident() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			n += x.Value.Uint64()
		}
	}
	return n
}
