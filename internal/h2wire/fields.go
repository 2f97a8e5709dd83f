package h2wire

import (
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Fields collects a header block's fields as an HPACK decoder emits them
// (Add, the decoder's emit function), checking each as RFC 9113 §8.2
// and §8.3.1 want: what makes the block not a valid request is kept in
// Malformed (the stream is then reset with PROTOCOL_ERROR), a block over
// its limit sets TooLarge.
type Fields struct {
	Method, Path, Scheme, Authority string
	Regular                         []hpack.HeaderField // in order, names in lower case
	Size, Limit                     int                 // HPACK's sizes: the block's so far, and its most
	TooLarge                        bool
	Pseudo                          bool   // a pseudo-header field was seen (trailers have none)
	Malformed                       string // why the block is not a valid request; "" while it is
}

// Reset empties f for the next block, keeping Regular's array.
func (f *Fields) Reset(limit int) {
	*f = Fields{Regular: f.Regular[:0], Limit: limit}
}

// Add takes the next field of the block.
func (f *Fields) Add(hf hpack.HeaderField) {
	f.Size += int(hf.Size())
	if f.Size > f.Limit {
		f.TooLarge = true
		return
	}
	if f.Malformed != "" || f.TooLarge {
		return
	}
	if strings.HasPrefix(hf.Name, ":") {
		f.Pseudo = true
		if len(f.Regular) > 0 {
			f.Malformed = "pseudo-header " + hf.Name + " after a regular one"
			return
		}
		var dst *string
		switch hf.Name {
		case ":method":
			dst = &f.Method
		case ":path":
			dst = &f.Path
		case ":scheme":
			dst = &f.Scheme
		case ":authority":
			dst = &f.Authority
		default:
			// :protocol too: extended CONNECT is not offered.
			f.Malformed = "pseudo-header " + hf.Name + " in a request"
			return
		}
		if *dst != "" || (hf.Name == ":path" && hf.Value == "") {
			f.Malformed = "pseudo-header " + hf.Name + " twice or empty"
			return
		}
		*dst = hf.Value
		return
	}
	if !httpguts.ValidHeaderFieldName(hf.Name) {
		f.Malformed = "invalid header name " + strconv.Quote(hf.Name)
		return
	}
	for i := 0; i < len(hf.Name); i++ {
		if c := hf.Name[i]; 'A' <= c && c <= 'Z' {
			f.Malformed = "header name " + hf.Name + " not in lowercase"
			return
		}
	}
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		f.Malformed = "invalid value of header " + hf.Name
		return
	}
	switch hf.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		f.Malformed = "connection-specific header " + hf.Name
		return
	case "te":
		if hf.Value != "trailers" {
			f.Malformed = "te other than trailers"
			return
		}
	}
	f.Regular = append(f.Regular, hf)
}

// CheckRequest completes the checks of a request's block (RFC 9113
// §8.3.1, as Go's server makes them): CONNECT names only an authority;
// any other method has a method, a path and an http or https scheme; an
// authority has no user info.
func (f *Fields) CheckRequest() {
	if f.Malformed != "" {
		return
	}
	switch {
	case f.Method == "CONNECT":
		if f.Path != "" || f.Scheme != "" || f.Authority == "" {
			f.Malformed = "CONNECT with a path or scheme, or without an authority"
		}
	case f.Method == "" || f.Path == "" || (f.Scheme != "https" && f.Scheme != "http"):
		f.Malformed = "a request without :method, :path, or an http(s) :scheme"
	case strings.IndexByte(f.Authority, '@') >= 0:
		f.Malformed = "user info in :authority"
	}
}

// Get is the value of the first regular field named name (lower case).
func (f *Fields) Get(name string) string {
	for _, hf := range f.Regular {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}
