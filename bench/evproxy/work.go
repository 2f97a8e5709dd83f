//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// With -work, -model goroutines also does per request what every Weft
// request needs however its route is configured, kept as bytes the way a
// lean data path would: the head's fields split into a small array, the
// route found by Host and matched on the path prefix, X-Request-Id and
// X-Forwarded-Proto added, and Istio's two standard metrics recorded (a
// request counter by status class and a duration histogram) through a
// handle the route holds. The difference with and without it is what
// that work costs in this model.
var doWork bool

// route is one virtual host's route and its statistics.
type route struct {
	prefix []byte
	byCode [6]atomic.Uint64 // by status class: 1xx..5xx, [0] for others
	dur    [len(durBounds) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

// durBounds are Istio's request duration buckets, in milliseconds.
var durBounds = [...]float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// routes by Host; "*" for any other.
var routes = map[string]*route{
	"ab.default.svc.cluster.local": {prefix: []byte("/")},
	"*":                            {prefix: []byte("/")},
}

// field is a header line split in place.
type field struct{ name, value []byte }

// parseFields splits head's header lines into fs (at most len(fs); the
// rest are dropped here, where a data path would answer 431).
func parseFields(head []byte, fs []field) (line []byte, n int, ok bool) {
	lines := head[:len(head)-2]
	i := bytes.Index(lines, crlf2[:2])
	line = lines[:i]
	for rest := lines[i+2:]; len(rest) > 0 && n < len(fs); {
		j := bytes.Index(rest, crlf2[:2])
		name, value, found := bytes.Cut(rest[:j], []byte(":"))
		if !found {
			return line, n, false
		}
		fs[n] = field{name, bytes.TrimSpace(value)}
		n++
		rest = rest[j+2:]
	}
	return line, n, true
}

// requestWork does the route's per-request work on the request head and
// appends the upstream head to out; it returns the route and the body's
// length.
func requestWork(out, head []byte, fs []field) ([]byte, *route, int64, bool) {
	line, n, ok := parseFields(head, fs)
	if !ok {
		return out, nil, 0, false
	}
	var host []byte
	length := int64(-1)
	for _, f := range fs[:n] {
		switch {
		case bytes.EqualFold(f.name, []byte("Host")):
			host = f.value
		case bytes.EqualFold(f.name, []byte("Content-Length")):
			length = 0
			for _, c := range f.value {
				if c < '0' || c > '9' {
					return out, nil, 0, false
				}
				length = length*10 + int64(c-'0')
			}
		case bytes.EqualFold(f.name, []byte("Transfer-Encoding")):
			return out, nil, 0, false
		}
	}
	rt := routes[string(host)] // no allocation for a map key
	if rt == nil {
		rt = routes["*"]
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 || !bytes.HasPrefix(line[sp+1:], rt.prefix) {
		return out, nil, 0, false
	}
	out = append(out, line...)
	out = append(out, "\r\n"...)
	for _, f := range fs[:n] {
		if hopByHop(f.name) {
			continue
		}
		out = append(append(append(append(out, f.name...), ": "...), f.value...), "\r\n"...)
	}
	out = append(out, "X-Forwarded-Proto: http\r\nX-Request-Id: "...)
	out = appendRequestID(out)
	out = append(out, "\r\n\r\n"...)
	return out, rt, max(length, 0), true
}

// record counts a response with status line sl that took d.
func (rt *route) record(sl []byte, d time.Duration) {
	class := 0
	if len(sl) >= 12 && sl[9] >= '1' && sl[9] <= '5' {
		class = int(sl[9] - '0')
	}
	rt.byCode[class].Add(1)
	ms := float64(d) / 1e6
	i := 0
	for i < len(durBounds) && ms > durBounds[i] {
		i++
	}
	rt.dur[i].Add(1)
	rt.sumNs.Add(uint64(d))
}

// appendRequestID appends a random UUID (version 4), as Weft's request
// ids.
func appendRequestID(out []byte) []byte {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[x>>4], hexd[x&0xf])
	}
	return out
}
