// Package xdswire decodes the xDS messages weft-proxy receives — the
// resources, the responses that carry them, and the typed configs of
// their filters — into go-control-plane's generated Go types, and encodes
// them deterministically, without protobuf-go's reflection.
//
// protobuf-go decodes and encodes a message type through tables it builds
// the first time it meets the type (a MessageInfo: a coder and reflection
// accessors per field), and building them fully initialises the
// descriptors of every message in the type's .proto file. A sidecar meets
// a few hundred types on its first config, and what that builds stays
// for the life of the process: about 1.8 MB of a small sidecar's 4.2 MB
// live heap, which the collector's headroom doubles in its RSS. The code
// here (decode_gen.go, written by ./gen from the descriptors of the types
// go.mod pins) fills and reads the same structs field by field. Decoding
// accepts exactly what protobuf-go accepts and builds the same message
// (TestDecodeMatchesProtobuf*, FuzzDecodeMatchesProtobuf), but skips
// unknown fields instead of keeping them: a proxy reads what it knows.
// Encoding is protobuf-go's deterministic encoding byte for byte
// (TestEncodeMatchesProtobuf): fields in protobuf-go's order, map entries
// sorted by key.
//
// Types without generated code here are handed to protobuf-go.
package xdswire

//go:generate go run ./gen -o decode_gen.go

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// maxDepth is how deep messages may nest: protobuf-go's default
// recursion limit.
const maxDepth = 10000

var (
	errParse = errors.New("proto: cannot parse invalid wire-format data")
	errDepth = errors.New("proto: exceeded maximum recursion depth")
)

// emptyBuf makes a present but empty bytes field an empty, non-nil slice,
// as protobuf-go does.
var emptyBuf [0]byte

func invalidUTF8(field string) error {
	return fmt.Errorf("proto: field %s contains invalid UTF-8", field)
}

// finishLen completes a length-delimited field whose content was appended
// after five bytes reserved at b[at:] for its length: the length is
// written there and the content moved up against it.
func finishLen(b []byte, at int) []byte {
	n := len(b) - at - 5
	l := protowire.SizeVarint(uint64(n))
	copy(b[at+l:], b[at+5:])
	protowire.AppendVarint(b[:at], uint64(n))
	return b[:at+l+n]
}

// Marshal is proto.MarshalOptions{Deterministic: true}.Marshal(m) (but
// for unknown fields, which it leaves out): equal messages have equal
// encodings.
func Marshal(m proto.Message) ([]byte, error) {
	if fullName(m) == "" {
		return proto.MarshalOptions{Deterministic: true}.Marshal(m)
	}
	// Encoded into a scratch buffer, which grows as it goes, and copied
	// out at its size: what is kept is exactly as long as the encoding.
	bp := scratch()
	*bp, _ = encode((*bp)[:0], m)
	var b []byte
	if len(*bp) > 0 {
		b = append([]byte(nil), *bp...)
	}
	release(bp)
	return b, nil
}

// sizeBufs are scratch buffers for Marshal, Size, Clone and Equal.
var sizeBufs = sync.Pool{New: func() any { return new([]byte) }}

func scratch() *[]byte { return sizeBufs.Get().(*[]byte) }

// release returns a scratch buffer, unless one large message grew it: a
// proxy should not keep that.
func release(bp *[]byte) {
	if cap(*bp) <= 256<<10 {
		sizeBufs.Put(bp)
	}
}

// Size is proto.Size(m): the length of m's encoding, found by encoding it
// into a scratch buffer.
func Size(m proto.Message) int {
	if fullName(m) == "" {
		return proto.Size(m)
	}
	bp := scratch()
	*bp, _ = encode((*bp)[:0], m)
	n := len(*bp)
	release(bp)
	return n
}

// Clone is a deep copy of m: m encoded and decoded.
func Clone[M proto.Message](m M) M {
	if !m.ProtoReflect().IsValid() { // a nil message, as proto.Clone
		return m
	}
	if fullName(m) == "" {
		return proto.Clone(m).(M)
	}
	c := m.ProtoReflect().Type().New().Interface().(M)
	bp := scratch()
	*bp, _ = encode((*bp)[:0], m)
	_, err := decode(*bp, c) // copies what it keeps
	release(bp)
	if err != nil {
		panic("xdswire: decoding what was just encoded: " + err.Error())
	}
	return c
}

// Equal says whether a and b have the same type and the same encoding:
// proto.Equal, except that a NaN equals the same NaN and unknown fields
// (which this package's decoding never keeps) are not compared, as a
// change detector wants.
func Equal(a, b proto.Message) bool {
	va, vb := a != nil && a.ProtoReflect().IsValid(), b != nil && b.ProtoReflect().IsValid()
	if !va || !vb { // as proto.Equal: nil messages are equal only to each other
		return va == vb
	}
	na, nb := fullName(a), fullName(b)
	if na == "" || nb == "" {
		return proto.Equal(a, b)
	}
	if na != nb {
		return false
	}
	ba, bb := scratch(), scratch()
	*ba, _ = encode((*ba)[:0], a)
	*bb, _ = encode((*bb)[:0], b)
	eq := bytes.Equal(*ba, *bb)
	release(ba)
	release(bb)
	return eq
}

// Unmarshal decodes b into m, as proto.Unmarshal does: m is reset first.
func Unmarshal(b []byte, m proto.Message) error {
	if ok, err := decode(b, m); ok {
		return err
	}
	return proto.Unmarshal(b, m)
}

// Has says whether m's type is decoded here (and not by protobuf-go).
func Has(m proto.Message) bool { return fullName(m) != "" }

// UnmarshalAny decodes a into m, as a.UnmarshalTo(m) does: an error if a
// holds another type.
func UnmarshalAny(a *anypb.Any, m proto.Message) error {
	name := fullName(m)
	if name == "" {
		return a.UnmarshalTo(m)
	}
	if !Is(a, m) {
		return fmt.Errorf("proto: mismatched message type: got %q, want %q", name, a.MessageName())
	}
	_, err := decode(a.GetValue(), m)
	return err
}

// Is says whether a holds a message of m's type, as a.MessageIs(m) does.
func Is(a *anypb.Any, m proto.Message) bool {
	name := fullName(m)
	if name == "" {
		return a.MessageIs(m)
	}
	url := a.GetTypeUrl()
	return strings.HasSuffix(url, name) && (len(url) == len(name) || url[len(url)-len(name)-1] == '/')
}
