package xdsload

import (
	"context"
	"errors"
	"fmt"
	"sync"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Why the simulator reads responses off the wire: 2,000 simulated proxies
// share one core here, where a real mesh gives each proxy its own. Decoding
// every response into Go protos (each resource's bytes copied into an Any,
// each name and version into a new string) and keeping a string map per
// proxy made the simulator, not the control plane, what a run measured:
// its heap grew to gigabytes at 2,000 proxies and its collections stalled
// keepalive pings. A simulated proxy needs only what an ACK needs — type,
// nonce, the names and versions of resources and removals — and, to time
// a change, the resource bytes to look for its marker in. So responses are
// kept as the bytes gRPC received, walked with protowire, and names and
// versions are interned once for the whole fleet.

// Decode is how much of each response a simulated proxy decodes.
type Decode string

// The Decode modes.
const (
	// DecodeEnvelope walks the response's envelope on the wire (type,
	// nonce, resource names and versions, removals) and leaves each
	// resource's bytes as received, shared by nothing and kept by no one
	// past the response. The default.
	DecodeEnvelope Decode = "envelope"
	// DecodeFull also unmarshals every resource into its Go type
	// (Cluster, Listener, ClusterLoadAssignment, RouteConfiguration,
	// VirtualHost), as a proxy that applies them must, and drops it after
	// the response: what a real proxy pays per response, here paid by
	// every simulated proxy on the simulator's cores.
	DecodeFull Decode = "full"
)

// ParseDecode reads "envelope" or "full".
func ParseDecode(s string) (Decode, error) {
	switch d := Decode(s); d {
	case DecodeEnvelope, DecodeFull:
		return d, nil
	}
	return "", fmt.Errorf("decode %q: want envelope or full", s)
}

// rawCodec marshals requests as protobuf and keeps each response as the
// bytes received (a rawMessage), for the walkers below.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("xdsload codec: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("xdsload codec: cannot unmarshal into %T", v)
	}
	m.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
	return nil
}

// rawMessage is one response as received. Call free once done with it.
type rawMessage struct{ buf mem.Buffer }

func (m *rawMessage) bytes() []byte {
	if m.buf == nil {
		return nil
	}
	return m.buf.ReadOnlyData()
}

func (m *rawMessage) free() {
	if m.buf != nil {
		m.buf.Free()
		m.buf = nil
	}
}

// rawStream is an ADS stream (delta or state of the world) whose
// responses arrive as rawMessages.
type rawStream struct{ grpc.ClientStream }

var (
	sotwDesc  = &discovery.AggregatedDiscoveryService_ServiceDesc.Streams[0]
	deltaDesc = &discovery.AggregatedDiscoveryService_ServiceDesc.Streams[1]
)

// openStream opens an ADS stream of the given protocol on conn.
func openStream(ctx context.Context, conn grpc.ClientConnInterface, p Protocol) (rawStream, error) {
	desc, method := deltaDesc, discovery.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName
	if p == SotW {
		desc, method = sotwDesc, discovery.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName
	}
	cs, err := conn.NewStream(ctx, desc, method, grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(64<<20))
	return rawStream{cs}, err
}

// recv receives the next response into m (free it after use).
func (s rawStream) recv(m *rawMessage) error { return s.RecvMsg(m) }

var errMalformed = errors.New("malformed protobuf")

// walk calls f with every length-delimited field of the message b (its
// number and payload, aliasing b), skipping the others.
func walk(b []byte, f func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			if err := f(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// envelope is what a simulated proxy reads of a response: its type and
// nonce (and, state of the world, version) and, per resource, the raw
// message to walk with eachResource.
type envelope struct {
	typeURL, nonce, version []byte
	resources               int // count of resources (not removals)
}

// Field numbers of DiscoveryResponse and DeltaDiscoveryResponse.
const (
	sotwVersion    = 1
	sotwResources  = 2
	sotwTypeURL    = 4
	sotwNonce      = 5
	deltaResources = 2
	deltaTypeURL   = 4
	deltaNonce     = 5
	deltaRemoved   = 6
	// Resource (delta) and Any.
	resVersion = 1
	resAny     = 2
	resName    = 3
	anyValue   = 2
)

// readEnvelope reads the envelope of a delta (delta true) or state of the
// world response.
func readEnvelope(b []byte, delta bool) (envelope, error) {
	var e envelope
	resources, typeURL, nonce := protowire.Number(sotwResources), protowire.Number(sotwTypeURL), protowire.Number(sotwNonce)
	if delta {
		resources, typeURL, nonce = deltaResources, deltaTypeURL, deltaNonce
	}
	err := walk(b, func(num protowire.Number, v []byte) error {
		switch {
		case num == resources:
			e.resources++
		case num == typeURL:
			e.typeURL = v
		case num == nonce:
			e.nonce = v
		case !delta && num == sotwVersion:
			e.version = v
		}
		return nil
	})
	return e, err
}

// deltaResource is one Resource of a DeltaDiscoveryResponse, aliasing the
// response's bytes.
type deltaResource struct {
	name, version, value []byte
	hasBody              bool // false for a TTL heartbeat
}

// eachDeltaResource calls f with every resource of a delta response b,
// then with every removed name (removed true).
func eachDeltaResource(b []byte, f func(r deltaResource, removed bool) error) error {
	return walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case deltaRemoved:
			return f(deltaResource{name: v}, true)
		case deltaResources:
			var r deltaResource
			err := walk(v, func(num protowire.Number, v []byte) error {
				switch num {
				case resName:
					r.name = v
				case resVersion:
					r.version = v
				case resAny:
					r.hasBody = true
					return walk(v, func(num protowire.Number, v []byte) error {
						if num == anyValue {
							r.value = v
						}
						return nil
					})
				}
				return nil
			})
			if err != nil {
				return err
			}
			if r.hasBody && len(r.name) == 0 { // the name is field 1 of all five types
				r.name, _ = firstBytes(r.value)
			}
			return f(r, false)
		}
		return nil
	})
}

// eachSotWResource calls f with the bytes of every resource (the Any's
// value) of a state-of-the-world response b.
func eachSotWResource(b []byte, f func(value []byte) error) error {
	return walk(b, func(num protowire.Number, v []byte) error {
		if num != sotwResources {
			return nil
		}
		var value []byte
		if err := walk(v, func(num protowire.Number, v []byte) error {
			if num == anyValue {
				value = v
			}
			return nil
		}); err != nil {
			return err
		}
		return f(value)
	})
}

// firstBytes reads field 1 of an encoded message: the name of a
// Cluster, Listener, RouteConfiguration or VirtualHost, the cluster_name
// of a ClusterLoadAssignment.
func firstBytes(b []byte) ([]byte, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			return v, true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return nil, false
}

// firstString is firstBytes as a string.
func firstString(b []byte) (string, bool) {
	v, ok := firstBytes(b)
	return string(v), ok
}

// decodeFull unmarshals one resource of type t (typeOrder) into its Go
// type, as a proxy applying it would, and drops it.
func decodeFull(t int, value []byte) error {
	var m proto.Message
	switch t {
	case 0:
		m = &cluster.Cluster{}
	case 1:
		m = &listener.Listener{}
	case 2:
		m = &endpoint.ClusterLoadAssignment{}
	case 3:
		m = &route.RouteConfiguration{}
	case vhdsIndex:
		m = &route.VirtualHost{}
	default:
		return nil
	}
	return proto.Unmarshal(value, m)
}

// interner gives every distinct string (resource name or version) a small
// id, once for the whole fleet: 2,000 proxies hold the same 3,000 cluster
// names, and a map of ids per proxy is a tenth of a map of strings. Safe
// for concurrent use; ids are never reused.
type interner struct {
	mu   sync.RWMutex
	ids  map[string]uint32
	strs []string
}

func newInterner() *interner { return &interner{ids: map[string]uint32{}} }

// id returns b's id, giving it one if it has none.
func (in *interner) id(b []byte) uint32 {
	in.mu.RLock()
	id, ok := in.ids[string(b)]
	in.mu.RUnlock()
	if ok {
		return id
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if id, ok := in.ids[string(b)]; ok {
		return id
	}
	s := string(b)
	id = uint32(len(in.strs))
	in.strs = append(in.strs, s)
	in.ids[s] = id
	return id
}

// lookup returns b's id if it has one.
func (in *interner) lookup(b []byte) (uint32, bool) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	id, ok := in.ids[string(b)]
	return id, ok
}

// str returns the string of id.
func (in *interner) str(id uint32) string {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return in.strs[id]
}

// strings returns the strings of ids.
func (in *interner) strings(ids []uint32) []string {
	in.mu.RLock()
	defer in.mu.RUnlock()
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = in.strs[id]
	}
	return out
}
