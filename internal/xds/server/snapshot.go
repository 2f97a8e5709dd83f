package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/generate"
)

// typeOrder fixes the order of the per-type versions buildSnapshot returns.
var typeOrder = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

// buildSnapshot turns resources generated from m into a cache snapshot
// whose version for each type is a hash of that type's resources, so a
// type whose content did not change keeps its version and is not re-sent.
func buildSnapshot(m *mesh.Snapshot, r generate.Resources) (*cachev3.Snapshot, []string, error) {
	snap, versions, err := snapshotOf(m, r)
	if err != nil {
		return nil, nil, err
	}
	if err := snap.Consistent(); err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	return snap, versions, nil
}

// snapshotOf is buildSnapshot without the consistency check, for a
// proxyless client's snapshot, which holds only what it names: a listener
// can be there before the route configuration it refers to is asked for.
//
// It also fills the snapshot's per-resource versions (VersionMap), which
// delta xDS compares with what a stream was sent, or with the
// initial_resource_versions of a reconnecting proxy, to send only what
// differs. go-control-plane would otherwise compute them itself, marshalling
// every resource a second time, under its cache-wide lock, at every
// SetSnapshot of a node with a delta stream. They are content hashes
// (cachev3.HashResource of the deterministic encoding), so a restarted or
// another control plane gives the same resource the same version and a
// reconnecting proxy is sent only real differences.
func snapshotOf(m *mesh.Snapshot, r generate.Resources) (*cachev3.Snapshot, []string, error) {
	snap := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	byType := r.ByType()
	versions := make([]string, 0, len(typeOrder))
	for _, typ := range typeOrder {
		items := byType[typ]
		perName := make(map[string]string, len(items))
		v, err := hashResources(m, items, perName)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", typ, err)
		}
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, items)
		snap.VersionMap[typ] = perName
		versions = append(versions, v)
	}
	return snap, versions, nil
}

// hashResources is a short hex digest of the resources' deterministic
// encodings, in order (generators sort them). When perName is not nil it
// also records there each resource's delta version, by name. Each
// resource's digests are kept for the life of m (mesh.Snapshot.Memo): a
// resource shared by many proxies (generate's memo.go) is encoded once per
// push, not once per proxy.
func hashResources(m *mesh.Snapshot, items []types.Resource, perName map[string]string) (string, error) {
	h := sha256.New()
	for _, it := range items {
		d := resourceDigest(m, it)
		if d.err != nil {
			return "", d.err
		}
		h.Write(d.sum[:])
		if perName != nil {
			perName[cachev3.GetResourceName(it)] = d.delta
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// digestKey keys a resource's digests in mesh.Snapshot.Memo: the resource
// itself (a pointer), which the memo keeps alive, so it is never reused.
type digestKey struct{ r types.Resource }

type digests struct {
	sum [sha256.Size]byte // of the length-prefixed encoding: our per-type versions
	// delta is the very hash go-control-plane puts in each delta
	// Resource.version (it computes that one apart, lazily): a different
	// scheme in VersionMap would never match what proxies send back in
	// initial_resource_versions, and a reconnecting proxy would be sent
	// everything.
	delta string
	err   error
}

// resourceDigest is r's digests, memoized in m when m is not nil.
func resourceDigest(m *mesh.Snapshot, r types.Resource) digests {
	compute := func() any {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return digests{err: fmt.Errorf("marshal %s: %w", cachev3.GetResourceName(r), err)}
		}
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h := sha256.New()
		h.Write(n[:])
		h.Write(b)
		d := digests{delta: cachev3.HashResource(b)}
		h.Sum(d.sum[:0])
		return d
	}
	if m == nil {
		return compute().(digests)
	}
	return m.Memo(digestKey{r}, compute).(digests)
}
