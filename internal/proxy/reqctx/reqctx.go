// Package reqctx is the context of one request served by the proxy's
// HTTP/1.1 and HTTP/2 servers: a context.Context that costs one
// allocation to make and none to watch.
//
// A request made with context.WithCancel and watched with
// context.AfterFunc, as the proxy's hot path did, costs seven
// allocations: the cancelCtx and its CancelFunc, then for the watch the
// afterFuncCtx, its stop closure, the parent's Done channel, the
// parent's children map and its entry. A Context here is one struct:
// its Done channel is made only when someone asks for it, and AfterFunc
// (Watch) keeps the function in a slot of the struct and hands back a
// Stop value instead of a closure.
//
// A Context takes its values and its deadline from its parent, but not
// the parent's cancellation: whoever makes a Context cancels it, also
// when the parent is done (the HTTP/1.1 server watches its connection's
// context once per connection and cancels the request it serves; the
// HTTP/2 server cancels its connection's open streams).
package reqctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// slots is how many functions a Context holds without allocating; the
// proxy registers one (the upstream connection's interrupt) per try.
const slots = 2

// Context is a request's context. The zero value is not usable: make one
// with New.
type Context struct {
	parent context.Context // values and deadline, not cancellation

	done atomic.Value // chan struct{}: made on first Done, or closed on cancel

	mu   sync.Mutex
	err  error
	fns  [slots]watch
	more []watch // beyond slots
	ids  uint32  // the last watch's id
}

// watch is a function registered with Watch; id tells a Stop whether the
// slot still holds its function or was taken by another since.
type watch struct {
	f  func()
	id uint32
}

// New returns a Context whose values and deadline are those of parent.
// parent's cancellation is not followed: the caller cancels the Context
// when parent is done.
func New(parent context.Context) *Context {
	return &Context{parent: parent}
}

// Deadline returns the parent's deadline.
func (c *Context) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Value returns the parent's value for key. (context.Cause of a
// cancelled Context is its own error: Cause falls back to Err when the
// canceler it finds, the parent's, has no cause.)
func (c *Context) Value(key any) any { return c.parent.Value(key) }

// closed is the Done channel of a Context cancelled before anyone asked.
var closed = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Done returns a channel closed when the Context is cancelled. It is
// made on the first call; later calls are an atomic load.
func (c *Context) Done() <-chan struct{} {
	if d := c.done.Load(); d != nil {
		return d.(chan struct{})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.done.Load()
	if d == nil {
		if c.err != nil {
			d = closed
		} else {
			d = make(chan struct{})
		}
		c.done.Store(d)
	}
	return d.(chan struct{})
}

// Err returns nil until the Context is cancelled, then the error it was
// cancelled with.
func (c *Context) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// String names the Context, as the standard contexts do.
func (c *Context) String() string { return "reqctx.Context" }

// Cancel cancels the Context with context.Canceled.
func (c *Context) Cancel() { c.CancelWith(context.Canceled) }

// CancelWith cancels the Context with err (context.Canceled when nil),
// closes its Done channel and starts every function registered with
// AfterFunc, each on a goroutine of its own, as context.AfterFunc does.
// It may be called under the caller's locks. Only the first call has an
// effect.
func (c *Context) CancelWith(err error) {
	if err == nil {
		err = context.Canceled
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if d, _ := c.done.Load().(chan struct{}); d == nil {
		c.done.Store(closed)
	} else {
		close(d)
	}
	run, more := c.fns, c.more
	c.fns, c.more = [slots]watch{}, nil
	c.mu.Unlock()
	for _, w := range run {
		if w.f != nil {
			go w.f()
		}
	}
	for _, w := range more {
		if w.f != nil {
			go w.f()
		}
	}
}

// Watch arranges to call f on a goroutine of its own once c is
// cancelled, at once if it already is. The Stop it returns unregisters
// f; it allocates nothing while c holds at most two functions.
func (c *Context) Watch(f func()) Stop {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return Stop{}
	}
	c.ids++
	w := watch{f: f, id: c.ids}
	slot := -1
	for i := range c.fns {
		if c.fns[i].f == nil {
			c.fns[i], slot = w, i
			break
		}
	}
	for i := 0; slot < 0 && i < len(c.more); i++ {
		if c.more[i].f == nil { // a stopped one's place
			c.more[i], slot = w, slots+i
		}
	}
	if slot < 0 {
		c.more = append(c.more, w)
		slot = slots + len(c.more) - 1
	}
	c.mu.Unlock()
	return Stop{c: c, slot: slot, id: w.id}
}

// stop unregisters the function of watch id in slot and reports whether
// it was still registered (so will not run).
func (c *Context) stop(slot int, id uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var e *watch
	if slot < slots {
		e = &c.fns[slot]
	} else if i := slot - slots; i < len(c.more) {
		e = &c.more[i]
	}
	if e == nil || e.f == nil || e.id != id {
		return false
	}
	*e = watch{}
	return true
}

// Stop unregisters a function given to Watch or AfterFunc. The zero Stop stops
// nothing.
type Stop struct {
	c    *Context
	slot int
	id   uint32
	std  func() bool // from context.AfterFunc, for another context
}

// Stop keeps the function from running if it has not started, and
// reports whether it did so, as the stop function of context.AfterFunc.
func (s Stop) Stop() bool {
	switch {
	case s.c != nil:
		return s.c.stop(s.slot, s.id)
	case s.std != nil:
		return s.std()
	}
	return false
}

// AfterFunc is context.AfterFunc, without its allocations when ctx is a
// *Context.
func AfterFunc(ctx context.Context, f func()) Stop {
	if c, ok := ctx.(*Context); ok {
		return c.Watch(f)
	}
	return Stop{std: context.AfterFunc(ctx, f)}
}

// AfterFunc is what the context package looks for in a parent that is
// not one of its own types: a context derived from a Context (a timeout,
// say) registers its cancellation here instead of starting a goroutine
// that waits for both. Watch is the same without allocations.
func (c *Context) AfterFunc(f func()) (stop func() bool) { return c.Watch(f).Stop }
