package server

import (
	"math/bits"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// wireCodec is the ADS server's gRPC codec. A response lists resources
// that are encoded already (the shared sets' encodings, made once per
// mesh snapshot); gRPC's proto codec would copy every byte of them into
// a new buffer per response — 891 KiB for a route configuration of 1,000
// services, once per proxy — and keep that copy until the proxy has read
// it. This codec writes a response's own fields into one small buffer
// and refers to each resource's encoding where it already is, so sending
// costs the framing, not a copy. The bytes are the same as the proto
// codec's (field order included). Anything it does not expect in a
// response (a field Weft never sets, unknown fields), a response of small
// resources only and every other message, requests included, is encoded
// whole, as the proto codec does (marshalWhole).
type wireCodec struct{ base encoding.CodecV2 }

func newWireCodec() wireCodec { return wireCodec{base: encoding.GetCodecV2(proto.Name)} }

// Name is the proto codec's: the content type on the wire is unchanged.
func (wireCodec) Name() string { return proto.Name }

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	var w wireWriter
	ok := false
	switch m := v.(type) {
	case *deltaWithBody:
		return w.deltaBody(m), nil
	case *discovery.DeltaDiscoveryResponse:
		if w.plan(len(m.SystemVersionInfo)+len(m.TypeUrl)+len(m.Nonce), deltaAnys(m)) {
			for _, r := range m.RemovedResources {
				w.bound += 16 + len(r)
			}
			ok = w.delta(m)
		}
	case *discovery.DiscoveryResponse:
		if w.plan(len(m.VersionInfo)+len(m.TypeUrl)+len(m.Nonce), func(yield func(*anypb.Any, int) bool) {
			for _, a := range m.Resources {
				if !yield(a, 0) {
					return
				}
			}
		}) {
			ok = w.sotw(m)
		}
	}
	if !ok {
		return c.marshalWhole(v)
	}
	return w.finish(), nil
}

// poolBelow: responses smaller than this take their buffer from gRPC's
// default pool, as the proto codec does; larger ones from wholePool. The
// default pool's classes above 32 KiB are 1 MiB and then none: a 200 KB
// response took a 1 MiB buffer, and the pool keeps an idle buffer for
// every one handed out at once until the garbage collector has run
// twice — after 2,000 scoped proxies connected, 360 MB of the control
// plane's heap was idle 1 MiB buffers (the bytes-in-flight bound counts
// the 200 KB).
const poolBelow = 64 << 10

// wholePool has a class for every power of two from 64 KiB to 8 MiB, so a
// buffer is at most twice its response; larger responses are not pooled.
// It keeps at most maxIdlePooled bytes of idle buffers: a sync.Pool keeps
// every buffer handed out at once until the garbage collector has run
// twice, and a quiet control plane collects rarely — after 2,000 proxies
// connected, 66 MB of its live heap was idle response buffers.
var wholePool = newBoundedPool(16, 23, maxIdlePooled)

// maxIdlePooled bounds the idle buffers wholePool keeps. Responses in
// flight are bounded apart (MaxBytesInFlight); these are only for reuse.
const maxIdlePooled = 8 << 20

// boundedPool is a mem.BufferPool with a class for every power of two
// from 1<<minExp to 1<<maxExp that keeps idle buffers up to a total of
// limit bytes and drops the rest for the garbage collector. Safe for
// concurrent use.
type boundedPool struct {
	minExp, maxExp int
	idle           []chan *[]byte // by class, from minExp
	limit          int64
	held           atomic.Int64 // bytes of idle buffers in idle
}

func newBoundedPool(minExp, maxExp int, limit int64) *boundedPool {
	p := &boundedPool{minExp: minExp, maxExp: maxExp, limit: limit}
	for e := minExp; e <= maxExp; e++ {
		// A class can hold the whole limit of its size, at least one.
		p.idle = append(p.idle, make(chan *[]byte, max(1, limit>>e)))
	}
	return p
}

// class is the index of the smallest class holding n bytes, or -1.
func (p *boundedPool) class(n int) int {
	e := max(p.minExp, bits.Len(uint(n-1)))
	if n <= 0 || e > p.maxExp {
		return -1
	}
	return e - p.minExp
}

func (p *boundedPool) Get(length int) *[]byte {
	c := p.class(length)
	if c < 0 {
		b := make([]byte, length)
		return &b
	}
	select {
	case b := <-p.idle[c]:
		p.held.Add(-int64(cap(*b)))
		*b = (*b)[:length]
		return b
	default:
	}
	b := make([]byte, length, 1<<(p.minExp+c))
	return &b
}

func (p *boundedPool) Put(b *[]byte) {
	n := cap(*b)
	c := p.class(n)
	if c < 0 || n != 1<<(p.minExp+c) {
		return // not one of ours: left to the garbage collector
	}
	if p.held.Add(int64(n)) > p.limit {
		p.held.Add(-int64(n))
		return
	}
	select {
	case p.idle[c] <- b:
	default:
		p.held.Add(-int64(n))
	}
}

// drain drops every idle buffer for the garbage collector.
func (p *boundedPool) drain() {
	for _, c := range p.idle {
		for done := false; !done; {
			select {
			case b := <-c:
				p.held.Add(-int64(cap(*b)))
			default:
				done = true
			}
		}
	}
}

// marshalWhole encodes v into one buffer, as the proto codec does.
func (c wireCodec) marshalWhole(v any) (mem.BufferSlice, error) {
	m, ok := v.(gproto.Message)
	if !ok {
		return c.base.Marshal(v)
	}
	size := gproto.Size(m)
	if size < poolBelow {
		return c.base.Marshal(v)
	}
	buf := wholePool.Get(size)
	b, err := gproto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		wholePool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, wholePool)}, nil
}

// deltaAnys yields each resource's body with the length of its name and
// version.
func deltaAnys(m *discovery.DeltaDiscoveryResponse) func(yield func(*anypb.Any, int) bool) {
	return func(yield func(*anypb.Any, int) bool) {
		for _, r := range m.Resources {
			if r == nil || !yield(r.Resource, len(r.Name)+len(r.Version)) {
				return
			}
		}
	}
}

// plan sizes the framing buffer from the resources (fixed: the length of
// the response's own strings; each resource with the length of its own
// strings) and reports whether any encoding is large enough to be
// referred to. When none is, the proto codec does better: its one pooled
// buffer holds the whole response.
func (w *wireWriter) plan(fixed int, resources func(yield func(*anypb.Any, int) bool)) bool {
	w.bound = 64 + fixed
	large := 0
	for a, own := range resources {
		w.bound += 48 + own // tags and lengths: at most 6 fields of 1 + 5 bytes each
		if a == nil {
			continue
		}
		w.bound += len(a.TypeUrl)
		if len(a.Value) >= inlineBelow {
			large++
		} else {
			w.bound += len(a.Value)
		}
	}
	if large == 0 {
		return false
	}
	w.out = make(mem.BufferSlice, 0, 2*large+1)
	return true
}

// inlineBelow: encodings shorter than this are copied into the framing
// buffer rather than referred to, so a response of many small resources
// (load assignments) does not become thousands of tiny buffers.
const inlineBelow = 1024

// wireWriter builds a response as framing bytes interleaved with
// references to encodings held elsewhere.
type wireWriter struct {
	buf   []byte // framing, and small encodings copied in
	from  int    // start of buf not yet in out
	out   mem.BufferSlice
	bound int // the framing's size at most (plan), so buf never grows
}

// ref appends b by reference (or by copy when small).
func (w *wireWriter) ref(b []byte) {
	if len(b) < inlineBelow {
		w.buf = append(w.buf, b...)
		return
	}
	w.cut()
	w.out = append(w.out, mem.SliceBuffer(b))
}

// cut moves the framing written since the last cut into out. Later
// appends may move buf, but the bytes already handed out stay where they
// were written.
func (w *wireWriter) cut() {
	if len(w.buf) > w.from {
		w.out = append(w.out, mem.SliceBuffer(w.buf[w.from:len(w.buf):len(w.buf)]))
		w.from = len(w.buf)
	}
}

func (w *wireWriter) finish() mem.BufferSlice {
	w.cut()
	return w.out
}

func (w *wireWriter) str(num protowire.Number, s string) {
	if s == "" {
		return
	}
	w.buf = protowire.AppendTag(w.buf, num, protowire.BytesType)
	w.buf = protowire.AppendString(w.buf, s)
}

// anyLen is the encoded length of a's fields; ok is false when a has
// unknown fields.
func anyLen(a *anypb.Any) (n int, ok bool) {
	if len(a.ProtoReflect().GetUnknown()) > 0 {
		return 0, false
	}
	if a.TypeUrl != "" {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(a.TypeUrl))
	}
	if len(a.Value) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(a.Value))
	}
	return n, true
}

// any writes a (without its own tag and length).
func (w *wireWriter) any(a *anypb.Any) {
	w.str(1, a.TypeUrl)
	if len(a.Value) > 0 {
		w.buf = protowire.AppendTag(w.buf, 2, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(len(a.Value)))
		w.ref(a.Value)
	}
}

func sizeStr(s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(1) + protowire.SizeBytes(len(s))
}

func (w *wireWriter) delta(m *discovery.DeltaDiscoveryResponse) bool {
	if len(m.ProtoReflect().GetUnknown()) > 0 || m.ControlPlane != nil || len(m.RemovedResourceNames) > 0 || len(m.ResourceErrors) > 0 {
		return false
	}
	w.buf = make([]byte, 0, w.bound)
	w.str(1, m.SystemVersionInfo)
	for _, r := range m.Resources {
		if r == nil || len(r.ProtoReflect().GetUnknown()) > 0 || r.ResourceName != nil || len(r.Aliases) > 0 ||
			r.Ttl != nil || r.CacheControl != nil || r.Metadata != nil {
			return false
		}
		n := sizeStr(r.Version) + sizeStr(r.Name)
		var an int
		if r.Resource != nil {
			var ok bool
			if an, ok = anyLen(r.Resource); !ok {
				return false
			}
			n += protowire.SizeTag(2) + protowire.SizeBytes(an)
		}
		w.buf = protowire.AppendTag(w.buf, 2, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(n))
		w.str(1, r.Version)
		if r.Resource != nil {
			w.buf = protowire.AppendTag(w.buf, 2, protowire.BytesType)
			w.buf = protowire.AppendVarint(w.buf, uint64(an))
			w.any(r.Resource)
		}
		w.str(3, r.Name)
	}
	w.str(4, m.TypeUrl)
	w.str(5, m.Nonce)
	for _, name := range m.RemovedResources {
		// A repeated string is written even when empty.
		w.buf = protowire.AppendTag(w.buf, 6, protowire.BytesType)
		w.buf = protowire.AppendString(w.buf, name)
	}
	return true
}

func (w *wireWriter) sotw(m *discovery.DiscoveryResponse) bool {
	if len(m.ProtoReflect().GetUnknown()) > 0 || m.ControlPlane != nil || len(m.ResourceErrors) > 0 {
		return false
	}
	w.buf = make([]byte, 0, w.bound)
	w.str(1, m.VersionInfo)
	for _, a := range m.Resources {
		if a == nil {
			return false
		}
		an, ok := anyLen(a)
		if !ok {
			return false
		}
		w.buf = protowire.AppendTag(w.buf, 2, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(an))
		w.any(a)
	}
	if m.Canary {
		w.buf = protowire.AppendTag(w.buf, 3, protowire.VarintType)
		w.buf = protowire.AppendVarint(w.buf, 1)
	}
	w.str(4, m.TypeUrl)
	w.str(5, m.Nonce)
	return true
}

// deltaWithBody is a delta response whose resources are encoded already,
// in one piece: a setDiff's, which every proxy taking the same step
// shares. In a storm of endpoint changes each of 2,000 proxies is sent
// the same hundreds of load assignments after each push; the proto
// codec encoded them again for each (17 % of the control plane's CPU),
// and each copy was a large buffer for the collector. A stream sends it
// with SendMsg: the codec is what knows it.
type deltaWithBody struct {
	resp *discovery.DeltaDiscoveryResponse // its Resources are what body encodes
	body []byte
}

// encodeResources is the encoding of a delta response's resources field:
// each resource with its tag and length, as the proto codec writes them.
func encodeResources(rs []*discovery.Resource) []byte {
	b, err := gproto.Marshal(&discovery.DeltaDiscoveryResponse{Resources: rs})
	if err != nil { // resources of Weft's own encodings: cannot fail
		panic(err)
	}
	return b
}

// deltaBody writes m's own fields around its body, referred to, in the
// order the proto codec writes them: the same bytes.
func (w *wireWriter) deltaBody(m *deltaWithBody) mem.BufferSlice {
	r := m.resp
	n := 64 + len(r.SystemVersionInfo) + len(r.TypeUrl) + len(r.Nonce)
	for _, name := range r.RemovedResources {
		n += 16 + len(name)
	}
	w.buf = make([]byte, 0, n)
	w.out = make(mem.BufferSlice, 0, 3)
	w.str(1, r.SystemVersionInfo)
	w.ref(m.body)
	w.str(4, r.TypeUrl)
	w.str(5, r.Nonce)
	for _, name := range r.RemovedResources {
		w.buf = protowire.AppendTag(w.buf, 6, protowire.BytesType)
		w.buf = protowire.AppendString(w.buf, name)
	}
	return w.finish()
}
