package h2server

import (
	"context"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/h2wire"
)

// request makes the stream's request from its header block; a reason
// when the block is not a request after all.
func (c *conn) request(st *stream, f *h2wire.Fields, end bool) (*http.Request, string) {
	h := make(http.Header, len(f.Regular))
	for _, hf := range f.Regular {
		k := c.canonical(hf.Name)
		h[k] = append(h[k], hf.Value)
	}
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
		u, err := url.ParseRequestURI(f.Path)
		if err != nil {
			return nil, "bad :path"
		}
		r.URL = u
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
	ctx := context.WithValue(st.ctx, http.LocalAddrContextKey, c.local)
	return r.WithContext(ctx), ""
}

// canonical is the canonical form of a (lower-case) header name,
// without allocating for the common ones or for those seen on the
// connection before.
func (c *conn) canonical(name string) string {
	if k, ok := commonHeaders[name]; ok {
		return k
	}
	if k, ok := c.canon[name]; ok {
		return k
	}
	k := textproto.CanonicalMIMEHeaderKey(name)
	if c.canon == nil {
		c.canon = map[string]string{}
	}
	if len(c.canon) < maxCachedNames {
		c.canon[name] = k
	}
	return k
}

const maxCachedNames = 64

var commonHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Authorization", "Cache-Control", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expect", "From",
		"Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout",
		"Host", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range",
		"If-Unmodified-Since", "Last-Modified", "Origin", "Pragma", "Range", "Referer",
		"Te", "Trailer", "User-Agent", "Via", "X-B3-Parentspanid", "X-B3-Sampled",
		"X-B3-Spanid", "X-B3-Traceid", "X-Envoy-Attempt-Count", "X-Forwarded-Client-Cert",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "Traceparent", "Tracestate",
	} {
		m[strings.ToLower(k)] = k
	}
	return m
}()
