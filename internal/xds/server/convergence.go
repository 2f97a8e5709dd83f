package server

import "time"

// convergence follows one push to one proxy until the proxy has ACKed
// every type the push changed for it: pilot_proxy_convergence_time.
// Guarded by the proxy's mutex.
type convergence struct {
	since   time.Time         // the first mesh change of the push reached the server
	pending map[string]string // type URL -> version still to be ACKed
}

// newConvergence returns the convergence of a push that replaces prev
// (nil before the first) with next; nil when no type changed. An earlier
// push still unACKed is dropped, not merged: a type the proxy never
// subscribed would otherwise hold it open and inflate the next one.
func newConvergence(since time.Time, prev, next *nodeSnapshot) *convergence {
	c := &convergence{since: since, pending: map[string]string{}}
	for _, t := range typeOrder {
		if v := next.version(t); prev == nil || prev.version(t) != v {
			c.pending[t] = v
		}
	}
	if len(c.pending) == 0 {
		return nil
	}
	return c
}

// acked notes an ACK of version of typeURL; once every changed type is
// ACKed it returns the time since the change and true. A nil convergence
// is done already.
func (c *convergence) acked(typeURL, version string) (time.Duration, bool) {
	if c == nil {
		return 0, false
	}
	if v, ok := c.pending[typeURL]; ok && v == version {
		delete(c.pending, typeURL)
	}
	if len(c.pending) > 0 {
		return 0, false
	}
	return time.Since(c.since), true
}
