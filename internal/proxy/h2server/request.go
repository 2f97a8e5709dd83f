package h2server

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/h2wire"
	"weft.dev/weft/internal/proxy/urlpath"
)

// request makes the stream's request from its header block, in h when
// not nil (empty); a reason when the block is not a request after all.
func (c *conn) request(st *stream, f *h2wire.Fields, end bool, h http.Header) (*http.Request, string) {
	if h == nil {
		h = make(http.Header, len(f.Regular))
	}
	vals := make([]string, len(f.Regular)) // every value, one allocation
	for _, hf := range f.Regular {
		k := c.canon.Key(hf.Name)
		if vv, ok := h[k]; ok {
			h[k] = append(vv, hf.Value)
		} else {
			vals[0] = hf.Value
			h[k] = vals[:1:1]
			vals = vals[1:]
		}
	}
	// Built on the stack, copied to the heap once with its context.
	r := &http.Request{
		Method:     f.Method,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Host:       f.Authority,
		RemoteAddr: c.remote,
		RequestURI: f.Path,
	}
	if r.Host == "" {
		r.Host = h.Get("Host")
	}
	if f.Method == "CONNECT" {
		r.URL = &url.URL{Host: f.Authority}
		r.RequestURI = f.Authority
	} else {
		if err := urlpath.ParseRequestURI(f.Path, &st.url); err != nil {
			return nil, "bad :path"
		}
		r.URL = &st.url
	}
	if vv := h["Expect"]; vv != nil && httpguts.HeaderValuesContainsToken(vv, "100-continue") {
		delete(h, "Expect")
		st.body.expectContinue = true
	}
	if cookies := h["Cookie"]; len(cookies) > 1 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	for _, v := range h["Trailer"] {
		for key := range strings.SplitSeq(v, ",") {
			switch key = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(key)); key {
			case "Transfer-Encoding", "Trailer", "Content-Length", "":
			default:
				if r.Trailer == nil {
					r.Trailer = http.Header{}
				}
				r.Trailer[key] = nil
			}
		}
	}
	delete(h, "Trailer")
	st.body.trailer = r.Trailer
	if end {
		r.Body, r.ContentLength = http.NoBody, 0
		st.remoteDone.Store(true)
	} else {
		r.Body = &st.body
		r.ContentLength = -1
		if vv := h["Content-Length"]; len(vv) > 0 {
			n, err := strconv.ParseUint(vv[0], 10, 63)
			if err != nil {
				return nil, "bad content-length"
			}
			r.ContentLength = int64(n)
			st.body.declared = int64(n)
		}
	}
	return r.WithContext(st.ctx), "" // st.ctx has http.LocalAddrContextKey from the connection's
}
