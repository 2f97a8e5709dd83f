package xdsclient

import (
	"context"
	"fmt"
	"maps"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// Protocol is the ADS variant the client speaks.
type Protocol string

const (
	// ProtocolDelta is incremental ADS (DeltaAggregatedResources): the
	// control plane sends only the resources that changed and names those
	// removed, and a reconnecting client tells it the versions it has
	// (initial_resource_versions) so it is sent only the differences. The
	// default.
	ProtocolDelta Protocol = "delta"
	// ProtocolSotW is state-of-the-world ADS (StreamAggregatedResources):
	// every response carries every resource of its type.
	ProtocolSotW Protocol = "sotw"
)

// withDefault returns p, or ProtocolDelta when p is empty, or an error
// naming an unknown protocol.
func (p Protocol) withDefault() (Protocol, error) {
	switch p {
	case "":
		return ProtocolDelta, nil
	case ProtocolDelta, ProtocolSotW:
		return p, nil
	}
	return "", fmt.Errorf("xdsclient: unknown protocol %q (want %q or %q)", string(p), ProtocolDelta, ProtocolSotW)
}

// session is one protocol's state machine: it survives reconnects and
// serves one stream at a time (state for SotW, deltaState for delta).
type session interface {
	// runStream opens one stream and serves it until it breaks or ctx is
	// done; see state.runStream.
	runStream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, onOpen func()) (healthy bool, err error)
}

var (
	_ session = (*state)(nil)
	_ session = (*deltaState)(nil)
)

// newSession returns the state machine of the configured protocol.
func (c *Client) newSession() session {
	if c.opts.Protocol == ProtocolSotW {
		return newState(c)
	}
	return newDeltaState(c)
}

// ReceiveStats count what the control plane sent, by type URL: how many
// responses, how many resources they carried (a state-of-the-world
// response carries every resource of its type, a delta response only
// those that changed), how many removals (delta only) and their encoded
// size in bytes.
type ReceiveStats struct {
	Responses, Resources, Removed, Bytes map[string]uint64
}

// Total sums a per-type counter.
func Total(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// receiveCounters back ReceiveStats; safe for concurrent use.
type receiveCounters struct {
	mu sync.Mutex
	s  ReceiveStats
}

// add counts one response of typeURL.
func (r *receiveCounters) add(typeURL string, resources, removed, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s.Responses == nil {
		r.s = ReceiveStats{Responses: map[string]uint64{}, Resources: map[string]uint64{}, Removed: map[string]uint64{}, Bytes: map[string]uint64{}}
	}
	r.s.Responses[typeURL]++
	r.s.Resources[typeURL] += uint64(resources)
	r.s.Removed[typeURL] += uint64(removed)
	r.s.Bytes[typeURL] += uint64(bytes)
}

func (r *receiveCounters) snapshot() ReceiveStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := func(m map[string]uint64) map[string]uint64 {
		if m == nil {
			return map[string]uint64{}
		}
		return maps.Clone(m)
	}
	return ReceiveStats{Responses: cp(r.s.Responses), Resources: cp(r.s.Resources), Removed: cp(r.s.Removed), Bytes: cp(r.s.Bytes)}
}

// Received returns what the control plane has sent so far, over every
// stream. Safe for concurrent use; never blocks for long.
func (c *Client) Received() ReceiveStats { return c.recv.snapshot() }

// Protocol returns the ADS variant the client speaks.
func (c *Client) Protocol() Protocol { return c.opts.Protocol }
