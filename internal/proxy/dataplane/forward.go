package dataplane

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Envoy's local reply bodies.
const (
	bodyNoHealthyUpstream = "no healthy upstream"
	bodyConnectFailure    = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyConnectReset      = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyTimeout           = "upstream request timeout"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// request carries what the metrics need about one request. It lives on the
// handler's stack.
type request struct {
	start    time.Time
	inbound  bool
	grpc     bool
	src      *srcLabels
	dst      *dstLabels
	code     int
	grpcCode string
	flags    string
}

// ServeHTTP handles one downstream request on the runtime current when it
// started. Called concurrently by the listener's http.Server.
func (bl *boundListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := bl.d
	rt, lc := bl.state()
	q := request{start: time.Now(), inbound: lc.inbound, grpc: isGRPC(r), dst: d.metrics.unknownDst()}
	if lc.inbound {
		q.src = d.peers.take(r.Header)
	} else {
		q.src = d.self
	}
	defer d.recordRequest(&q)

	var re *routeEntry
	if tab := lc.table(rt); tab != nil {
		re = tab.route(r)
	}
	if re == nil {
		localReply(w, &q, http.StatusNotFound, "", "NR")
		return
	}
	if re.direct != nil {
		localReply(w, &q, re.direct.status, re.direct.body, "")
		return
	}
	c := rt.clusters[re.pickCluster(r)]
	if c == nil {
		localReply(w, &q, http.StatusServiceUnavailable, "", "NC")
		return
	}
	if lc.inbound {
		q.dst = c.dstInbound
	} else {
		q.dst = c.dstNoEndpoint
	}
	ep := c.picker.pick()
	if ep == nil {
		localReply(w, &q, http.StatusServiceUnavailable, bodyNoHealthyUpstream, "UH")
		return
	}
	if !lc.inbound {
		q.dst = ep.dst
	}
	d.forward(w, r, lc, re, c, ep, &q)
}

func (d *Dataplane) recordRequest(q *request) {
	d.metrics.record(seriesKey{
		src: q.src, dst: q.dst, inbound: q.inbound, grpc: q.grpc,
		code: q.code, grpcCode: q.grpcCode, flags: q.flags,
	}, float64(time.Since(q.start).Microseconds())/1000)
}

// forward sends r to ep and streams the response back.
func (d *Dataplane) forward(w http.ResponseWriter, r *http.Request, lc *listenerConfig, re *routeEntry, c *clusterRT, ep *endpoint, q *request) {
	ctx := r.Context()
	if re.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, re.timeout)
		defer cancel()
	}
	out := &http.Request{
		Method:        r.Method,
		URL:           upstreamURL(r, re, ep),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, len(r.Header)+4),
		Body:          r.Body,
		ContentLength: r.ContentLength,
		Trailer:       r.Trailer,
		Host:          r.Host,
	}
	if r.ContentLength == 0 {
		out.Body = nil
	} else if r.ProtoMajor == 1 {
		// Let request and response bodies stream at the same time (bidi).
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	if re.hostRewrite != "" {
		out.Host = re.hostRewrite
	}
	copyRequestHeaders(out.Header, r.Header)
	if _, ok := out.Header["X-Forwarded-Proto"]; !ok {
		out.Header["X-Forwarded-Proto"] = []string{"http"}
	}
	if _, ok := out.Header["X-Request-Id"]; !ok {
		out.Header["X-Request-Id"] = []string{newRequestID()}
	}
	if lc.outbound {
		out.Header[hdrPeerMetadata] = d.peerMetadata
		out.Header[hdrPeerMetadataID] = d.peerID
	}
	var resp *http.Response
	var err error
	if ep.conns != nil && out.Body == nil && out.Trailer == nil && r.Method != http.MethodConnect && r.Header["Upgrade"] == nil {
		// HTTP/1.1 upstream, no request body: the synchronous path.
		resp, err = ep.conns.roundTrip(ctx, out)
	} else {
		resp, err = c.pool.transport.RoundTrip(out.WithContext(ctx))
	}
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			q.flags = "DC" // downstream went away; nobody to answer
		case ctx.Err() != nil:
			localReply(w, q, http.StatusGatewayTimeout, bodyTimeout, "UT")
		case isConnectError(err):
			localReply(w, q, http.StatusServiceUnavailable, bodyConnectFailure, "UF")
		default:
			localReply(w, q, http.StatusServiceUnavailable, bodyConnectReset, "UC")
		}
		d.log.Debug("upstream request failed", "cluster", c.name, "endpoint", ep.addr, "err", err)
		return
	}
	defer resp.Body.Close()

	h := w.Header()
	copyResponseHeaders(h, resp.Header)
	q.code = resp.StatusCode
	w.WriteHeader(resp.StatusCode)

	streaming := resp.ContentLength < 0 || q.grpc
	flusher, _ := w.(http.Flusher)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				q.flags = "DC"
				return
			}
			if streaming && flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.Context().Err() != nil {
				q.flags = "DC"
				return
			}
			// Upstream reset after the headers were sent: reset downstream too.
			// ServeHTTP's deferred recordRequest still runs.
			q.flags = "UR"
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	if q.grpc {
		if v := resp.Trailer["Grpc-Status"]; len(v) > 0 {
			q.grpcCode = v[0]
		} else if v := resp.Header["Grpc-Status"]; len(v) > 0 {
			q.grpcCode = v[0]
		}
	}
}

// upstreamURL is the request target sent to the endpoint.
func upstreamURL(r *http.Request, re *routeEntry, ep *endpoint) *url.URL {
	u := &url.URL{Scheme: "http", Host: ep.addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if re.prefixRewrite != "" && re.path.kind != pathRegex {
		raw := r.URL.EscapedPath()
		if n := len(re.path.value); n <= len(raw) {
			raw = re.prefixRewrite + raw[n:]
			if p, err := url.PathUnescape(raw); err == nil {
				u.Path, u.RawPath = p, raw
			}
		}
	}
	return u
}

// hopByHop headers are per connection and never forwarded.
var hopByHop = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Te":                true,
	"Trailer":           true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
}

func isHopByHop(k string) bool {
	return hopByHop[k] || strings.HasPrefix(k, "Proxy-")
}

func copyRequestHeaders(dst, src http.Header) {
	for k, vv := range src {
		if !isHopByHop(k) {
			dst[k] = vv // values are never modified in place
		}
	}
	removeConnectionHeaders(dst, src)
	for _, v := range src["Te"] {
		if httpTokenListContains(v, "trailers") {
			dst["Te"] = []string{"trailers"}
			break
		}
	}
}

func copyResponseHeaders(dst, src http.Header) {
	for k, vv := range src {
		if !isHopByHop(k) {
			dst[k] = vv
		}
	}
	removeConnectionHeaders(dst, src)
}

// removeConnectionHeaders drops the headers src's Connection header names.
func removeConnectionHeaders(dst, src http.Header) {
	for _, v := range src["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(dst, http.CanonicalHeaderKey(f))
			}
		}
	}
}

func httpTokenListContains(v, token string) bool {
	for f := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(textproto.TrimString(f), token) {
			return true
		}
	}
	return false
}

// localReply answers the request from the proxy itself, as Envoy's local
// replies do: gRPC requests get a trailers-only response with the mapped
// grpc-status.
func localReply(w http.ResponseWriter, q *request, code int, body, flags string) {
	q.flags = flags
	h := w.Header()
	if q.grpc {
		q.code, q.grpcCode = http.StatusOK, grpcStatusFor(code)
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{q.grpcCode}
		if body != "" {
			h["Grpc-Message"] = []string{body}
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	q.code = code
	if body != "" {
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// grpcStatusFor maps an HTTP status to a gRPC code as Envoy does.
func grpcStatusFor(code int) string {
	switch code {
	case 400:
		return "13" // INTERNAL
	case 401:
		return "16" // UNAUTHENTICATED
	case 403:
		return "7" // PERMISSION_DENIED
	case 404:
		return "12" // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return "14" // UNAVAILABLE
	}
	return "2" // UNKNOWN
}

// newRequestID returns a random UUIDv4 string.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	var s [36]byte
	j := 0
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hexd[x>>4], hexd[x&0xf]
		j += 2
	}
	return string(s[:])
}
