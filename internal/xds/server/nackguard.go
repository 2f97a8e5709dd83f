package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// nackGuard is the SnapshotCache the ADS server uses. It exists because
// go-control-plane's SnapshotCache answers a state-of-the-world request at
// once whenever its version_info differs from the node's snapshot version,
// and a NACK carries the last version the proxy *accepted*: the cache
// re-sends the snapshot the proxy has just rejected, which is rejected
// again, thousands of times a second.
//
// So a NACK whose rejected response (the stream's last for the type, whose
// version the subscription records for each resource it carried) has the
// node's current version for the type is held here instead of reaching the
// cache: there is nothing new to send. It is handed to the cache, as the
// proxy sent it, when the node gets a snapshot that differs in any type,
// not only in the rejected one: a proxy applies all types together and
// NACKs every type of the set that failed, so a version rejected alongside
// a bad listener can be fine next to a fixed one, and must be sent again
// (the cache then answers at once, or holds the watch as usual if the
// proxy already has that version).
//
// Every other request passes through untouched, and so does delta xDS:
// its cache diffs against what it sent, so it never re-sends after a NACK.
type nackGuard struct {
	cachev3.SnapshotCache
	hash cachev3.NodeHash

	mu   sync.Mutex                         // serializes SetSnapshot with holding and releasing
	held map[string]map[*heldWatch]struct{} // by node id
}

var _ cachev3.SnapshotCache = (*nackGuard)(nil)

// heldWatch is a NACK's watch, held until the node's snapshot changes and
// then given to the cache. Guarded by nackGuard.mu.
type heldWatch struct {
	req      *cachev3.Request
	sub      cachev3.Subscription
	resp     chan cachev3.Response
	versions []string // the node's snapshot versions when it was held
	cancel   func()   // the cache's watch, once released
	done     bool     // cancelled by the server
}

func newNACKGuard(c cachev3.SnapshotCache, hash cachev3.NodeHash) *nackGuard {
	return &nackGuard{SnapshotCache: c, hash: hash, held: map[string]map[*heldWatch]struct{}{}}
}

// CreateWatch holds a NACK of the node's current version; see nackGuard.
func (g *nackGuard) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, resp chan cachev3.Response) (func(), error) {
	rejected, ok := rejectedVersion(sub)
	if req.GetErrorDetail() == nil || !ok || rejected == req.GetVersionInfo() {
		return g.SnapshotCache.CreateWatch(req, sub, resp)
	}
	node := g.hash.ID(req.GetNode())
	g.mu.Lock()
	defer g.mu.Unlock()
	snap, err := g.GetSnapshot(node)
	if err != nil || snap.GetVersion(req.GetTypeUrl()) != rejected {
		return g.SnapshotCache.CreateWatch(req, sub, resp) // something newer to send
	}
	w := &heldWatch{req: req, sub: sub, resp: resp, versions: snapshotVersions(snap)}
	if g.held[node] == nil {
		g.held[node] = map[*heldWatch]struct{}{}
	}
	g.held[node][w] = struct{}{}
	return func() { g.cancel(node, w) }, nil
}

func (g *nackGuard) cancel(node string, w *heldWatch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w.done = true
	delete(g.held[node], w)
	if len(g.held[node]) == 0 {
		delete(g.held, node)
	}
	if w.cancel != nil {
		w.cancel()
	}
}

// SetSnapshot sets the node's snapshot and releases its held watches if
// any type's version changed.
func (g *nackGuard) SetSnapshot(ctx context.Context, node string, snap cachev3.ResourceSnapshot) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	errs := []error{g.SnapshotCache.SetSnapshot(ctx, node, snap)}
	versions := snapshotVersions(snap)
	for w := range g.held[node] {
		if equal(w.versions, versions) {
			continue
		}
		delete(g.held[node], w)
		// A response goes to resp, the server's buffered channel for this
		// watch, which nothing else writes to: it cannot block.
		cancel, err := g.SnapshotCache.CreateWatch(w.req, w.sub, w.resp)
		if err != nil {
			errs = append(errs, fmt.Errorf("releasing held %s watch: %w", w.req.GetTypeUrl(), err))
			continue
		}
		w.cancel = cancel
	}
	if len(g.held[node]) == 0 {
		delete(g.held, node)
	}
	return errors.Join(errs...)
}

// ClearSnapshot forgets the node, held watches included (its streams are
// gone).
func (g *nackGuard) ClearSnapshot(node string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.SnapshotCache.ClearSnapshot(node)
	delete(g.held, node)
}

// heldWatches counts the watches held for node, for tests.
func (g *nackGuard) heldWatches(node string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held[node])
}

// rejectedVersion is the version of the last response sent on the stream
// for the subscription's type, which a NACK rejects: go-control-plane's
// state-of-the-world server records each resource it returned with the
// version of the response that carried it. ok is false when that response
// carried nothing (or nothing still subscribed) or the versions disagree.
func rejectedVersion(sub cachev3.Subscription) (version string, ok bool) {
	for _, v := range sub.ReturnedResources() {
		if ok && v != version {
			return "", false
		}
		version, ok = v, true
	}
	return version, ok && version != ""
}

// snapshotVersions lists snap's version of every type the server serves.
func snapshotVersions(snap cachev3.ResourceSnapshot) []string {
	vs := make([]string, len(typeOrder))
	for i, t := range typeOrder {
		vs[i] = snap.GetVersion(t)
	}
	return vs
}
