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
func snapshotOf(m *mesh.Snapshot, r generate.Resources) (*cachev3.Snapshot, []string, error) {
	snap := &cachev3.Snapshot{}
	byType := r.ByType()
	versions := make([]string, 0, len(typeOrder))
	for _, typ := range typeOrder {
		items := byType[typ]
		v, err := hashResources(m, items)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", typ, err)
		}
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, items)
		versions = append(versions, v)
	}
	return snap, versions, nil
}

// hashResources is a short hex digest of the resources' deterministic
// encodings, in order (generators sort them). Each resource's own digest
// is kept for the life of m (mesh.Snapshot.Memo): a resource shared by
// many proxies (generate's memo.go) is encoded once per push, not once
// per proxy.
func hashResources(m *mesh.Snapshot, items []types.Resource) (string, error) {
	h := sha256.New()
	for _, it := range items {
		d, err := resourceDigest(m, it)
		if err != nil {
			return "", err
		}
		h.Write(d[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// digestKey keys a resource's digest in mesh.Snapshot.Memo: the resource
// itself (a pointer), which the memo keeps alive, so it is never reused.
type digestKey struct{ r types.Resource }

type digestResult struct {
	sum [sha256.Size]byte
	err error
}

// resourceDigest is the SHA-256 of r's length-prefixed deterministic
// encoding, memoized in m when m is not nil.
func resourceDigest(m *mesh.Snapshot, r types.Resource) ([sha256.Size]byte, error) {
	compute := func() any {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return digestResult{err: fmt.Errorf("marshal %s: %w", cachev3.GetResourceName(r), err)}
		}
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h := sha256.New()
		h.Write(n[:])
		h.Write(b)
		var d digestResult
		h.Sum(d.sum[:0])
		return d
	}
	var d digestResult
	if m == nil {
		d = compute().(digestResult)
	} else {
		d = m.Memo(digestKey{r}, compute).(digestResult)
	}
	return d.sum, d.err
}
