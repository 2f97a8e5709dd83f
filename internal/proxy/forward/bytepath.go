package forward

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/h1server"
	"weft.dev/weft/internal/proxy/httpdate"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/upstream"
	"weft.dev/weft/internal/xds/contract"
)

// The byte path: the commonest request, served from the bytes of its head.
//
// A plaintext HTTP/1.1 GET without a body, on a listener with no access
// logs, tracing, metric overrides or HTTP filters but those that act
// only on routes configuring them, to a route that
// only names its cluster (route.Entry.Plain) of HTTP/1.1 endpoints, is
// served without an http.Request: its head is checked and split in
// place, routed by Host and path (route.Table.RoutePlain), written
// upstream as bytes with the fields the general path adds, and a
// length-framed response is relayed as bytes, its metrics recorded as
// the general path records them. The profiles of the general path found
// its cost spread over building, copying and serializing header maps
// four times a hop; this path does none of it (docs/benchmarks.md).
//
// It answers exactly what the general path answers. Whatever it does
// not take is declined before anything is sent: the general path then
// serves the request from the start. Whatever comes back that it does
// not relay — a failed attempt, a response to retry, a chunked or
// unframed body, a 204 or 304, a response without a Content-Type to
// sniff — is handed to the general path with the attempt made
// (resumed), which retries and answers as it does for its own attempts.
//
// Setting WEFT_BYTE_PATH=off in the proxy's environment turns it off
// (BytePath), for comparing the two.

// BytePath reports whether ServeBytes takes requests at all.
var BytePath = os.Getenv("WEFT_BYTE_PATH") != "off"

// BytesOutcome is what ServeBytes did with a request.
type BytesOutcome int

const (
	// BytesDeclined: nothing was sent or written; serve the request
	// with Serve.
	BytesDeclined BytesOutcome = iota
	// BytesServed: the response is written whole.
	BytesServed
	// BytesAborted: the response was cut short (the upstream's body
	// broke, or the client went away); close the connection.
	BytesAborted
	// BytesResumed: the request went upstream and the general path
	// takes it from there: serve it with Resume and the returned state.
	BytesResumed
)

// maxBytesFields is the most header fields a request or response the
// byte path takes may have.
const maxBytesFields = 32

// field is a header line split in place.
type field struct{ name, value []byte }

// bytesRequest is a request head split in place.
type bytesRequest struct {
	method, target, path, query, host []byte
	fields                            [maxBytesFields]field
	n                                 int
	hasUA, hasXFP, hasXRID            bool
	peerMetadata                      []byte // inbound listeners: the metadata exchange header
	peerID                            bool   // and its id header
	dropped                           int    // names and values of fields recorded but not sent on
	idAt                              int    // where the X-Request-Id the proxy made starts in the upstream head
	count                             int    // fields, Host included, as Limits counts them (as received)
	size                              int64  // names and values, the same way
}

// bytesState is the storage of one request on the byte path.
type bytesState struct {
	req bytesRequest
	out []byte // the upstream head
}

var bytesPool = sync.Pool{New: func() any { return &bytesState{out: make([]byte, 0, 1024)} }}

// Resumed is a request the byte path sent upstream and hands over to
// the general path (Resume), with its first attempt.
type Resumed struct {
	re           *route.Entry
	cluster      string
	ep           *cluster.Endpoint // BeginRequest was called; Resume ends it
	adm          cluster.Admission // Resume releases it
	start        time.Time         // the request's
	attemptStart time.Time
	res          attemptResult
	id           string            // the X-Request-Id sent ("": the request carried one)
	s            *upstream.Scratch // holds res.resp
	admitErr     error             // the circuit breaker's refusal: no attempt was made
	taken        bool              // forward took the attempt over
}

// Abandon ends an attempt no one took over: the request could not be
// parsed for Resume, or the general path answered it before it reached
// the attempt (both of which the byte path's checks should make
// impossible). It lets go of the admission, the endpoint's count and
// the response. Safe to call after Resume: it then does nothing.
func (rs *Resumed) Abandon() {
	if rs.taken {
		return
	}
	rs.taken = true
	if rs.admitErr != nil {
		return // nothing held
	}
	if rs.res.resp != nil {
		rs.res.resp.Body.Close()
	}
	rs.ep.EndRequest()
	rs.adm.Release()
	if rs.s != nil { // else the request's own now (getOutbound)
		rs.s.Reset()
		scratchPool.Put(rs.s)
	}
}

// bytesOK reports whether the listener's requests may take the byte
// path: nothing runs on a request but the router and the standard
// metrics. Filters that act only on routes with a config of theirs
// (Istio's fault filter) are skipped on the Plain routes the byte path
// takes, as runFilters skips them.
func (l *Listener) bytesOK() bool {
	if l.Tracing != nil || len(l.AccessLogs) > 0 || l.Stats != nil || l.UseRemoteAddress || l.XFFTrustedHops > 0 {
		return false
	}
	for i := range l.filters {
		if !l.filters[i].perRouteOnly {
			return false
		}
	}
	return true
}

// ServeBytes serves the request whose head is head on the byte path,
// writing the response to w, on listener l over the plaintext
// connection ds (nil: nothing known), with route table tab and the
// clusters of its configuration. ctx is the request's. With
// BytesResumed it returns the state Resume takes.
func (f *Forwarder) ServeBytes(ctx context.Context, head []byte, w *bufio.Writer, l *Listener, ds *Downstream, tab *route.Table, clusters map[string]*cluster.Cluster) (BytesOutcome, *Resumed) {
	if !BytePath || tab == nil || !l.bytesOK() {
		return BytesDeclined, nil
	}
	if ds == nil {
		ds = plaintextDownstream
	}
	if ds.Conn.TLS != nil {
		return BytesDeclined, nil
	}
	start := time.Now()
	st := bytesPool.Get().(*bytesState)
	defer bytesPool.Put(st)
	rq := &st.req
	if !rq.parse(head, l.Inbound) || l.Limits.exceededBytes(rq) {
		return BytesDeclined, nil
	}
	re, ok := tab.RoutePlain(bstr(rq.host), bstr(rq.path), bstr(rq.query))
	if !ok || !re.Plain() || !l.Inbound && (re.Name == contract.RouteBlockAll || re.Name == contract.RouteAllowAny) {
		return BytesDeclined, nil
	}
	name := re.PickPlain()
	c := clusters[name]
	if c == nil || c.Passthrough() || c.IsOriginalDst() {
		return BytesDeclined, nil
	}
	if up := c.Upstream(); up.HTTP2() {
		return BytesDeclined, nil
	}
	ep := c.Pick(cluster.HashKey{})
	if ep == nil || !ep.Conns().BytesOK() {
		return BytesDeclined, nil
	}
	adm, err := c.Breaker().Admit(ctx)
	if err != nil {
		// Counted once: the general path answers it without admitting
		// again.
		return BytesResumed, &Resumed{re: re, cluster: name, ep: ep, start: start, admitErr: err}
	}
	ep.BeginRequest()

	st.out = f.appendUpstreamHead(st.out[:0], rq, l)
	s := scratchPool.Get().(*upstream.Scratch)
	attemptStart := time.Now()
	hr, resp, err := ep.Conns().RoundTripHead(ctx, st.out, http.MethodGet, s)
	var rspHeader int64
	if hr != nil {
		var ok bool
		if ok, rspHeader = relayable(hr, re.Retry); !ok {
			resp, err = hr.Response(s)
			hr = nil
		}
	}
	if hr == nil {
		rs := &Resumed{re: re, cluster: name, ep: ep, adm: adm, start: start, attemptStart: attemptStart, s: s}
		if !rq.hasXRID {
			rs.id = string(st.out[rq.idAt : rq.idAt+36])
		}
		if err != nil {
			rs.res = attemptResult{err: err, out: classify(err, false), cancel: noCancel}
		} else {
			rs.res = attemptResult{resp: resp, out: outcomeResponse, cancel: noCancel}
		}
		return BytesResumed, rs
	}

	// The response, relayed.
	status := hr.Status
	stats := c.Stats()
	stats.RqTotal.Inc()
	stats.RqCompleted.Inc()
	stats.Response(status)
	ep.ObserveResponse(status, nil) // relayable: no grpc-status
	_, werr := w.Write(appendResponseHead(w.AvailableBuffer(), hr))
	var n int64
	var rerr error
	if werr == nil {
		n, rerr = hr.Relay(w)
	} else {
		hr.Close()
	}
	stats.RqTime.Observe(msSince(attemptStart))
	ep.EndRequest()
	adm.Release()
	s.Reset()
	scratchPool.Put(s)

	flags := ""
	outcome := BytesServed
	switch {
	case werr != nil || rerr != nil && ctx.Err() != nil:
		flags, outcome = "DC", BytesAborted
	case rerr != nil:
		flags, outcome = "UR", BytesAborted
	}
	k := telemetry.Key{Code: status, Flags: flags}
	if l.Inbound {
		k.Src, k.Dst, k.Sec, k.Inbound = f.peers.Lookup(bstr(rq.peerMetadata)), c.DstInbound(), ds.sec, true
	} else {
		k.Src, k.Dst, k.Sec = f.self, ep.Dst(), f.sourceSec(ep)
	}
	reqBytes := rq.headerBytes()
	rspBytes := rspHeader + n
	f.metrics.Record(k, float64(time.Since(start).Microseconds())/1000, reqBytes, rspBytes)
	return outcome, nil
}

// bstr is b as a string, without a copy: valid while b is.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// parse splits head (CRLF line ends) into rq, and reports whether the
// byte path takes the request: an HTTP/1.1 GET for an origin-form target
// of plain characters, without a body, an upgrade, an expectation or
// Connection options but keep-alive, with one Host and valid fields the
// general path would forward as they are.
func (rq *bytesRequest) parse(head []byte, inbound bool) bool {
	*rq = bytesRequest{}
	line, rest, ok := bytes.Cut(head, crlf)
	if !ok || !bytes.HasPrefix(line, getPrefix) || !bytes.HasSuffix(line, http11Suffix) {
		return false
	}
	rq.method = line[:3]
	rq.target = line[4 : len(line)-len(http11Suffix)]
	if !plainTarget(rq.target) {
		return false
	}
	rq.path, rq.query, _ = bytes.Cut(rq.target, []byte("?"))
	rest = rest[:len(rest)-2] // the empty line
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		if i < 0 {
			return false // a bare LF: the general path's reading
		}
		fl := rest[:i]
		rest = rest[i+2:]
		c := bytes.IndexByte(fl, ':')
		if c <= 0 || !tokenBytes(fl[:c]) {
			return false // obs-fold, an empty or invalid name
		}
		name, value := fl[:c], bytes.Trim(fl[c+1:], " \t")
		if !plainValue(value) {
			return false
		}
		rq.count++
		rq.size += int64(len(name) + len(value))
		switch len(name) {
		case 2:
			if equalFoldBytes(name, "te") {
				return false
			}
		case 4:
			if equalFoldBytes(name, "host") {
				if rq.host != nil || !plainHost(value) {
					return false
				}
				rq.host = value
				continue
			}
		case 6:
			if equalFoldBytes(name, "expect") {
				return false
			}
		case 7:
			if equalFoldBytes(name, "upgrade") || equalFoldBytes(name, "trailer") {
				return false
			}
		case 10:
			if equalFoldBytes(name, "connection") {
				if !equalFoldBytes(value, "keep-alive") {
					return false // close, or options naming fields
				}
				rq.dropped += len(name) + len(value) // recorded, not sent on
				continue
			}
			if equalFoldBytes(name, "keep-alive") {
				return false
			}
			if equalFoldBytes(name, "user-agent") {
				if rq.hasUA || len(value) == 0 {
					return false // the general path sends only the first, and an empty one not at all
				}
				rq.hasUA = true
			}
		case 12:
			if equalFoldBytes(name, "x-request-id") {
				rq.hasXRID = true
			} else if equalFoldBytes(name, "content-type") && bytes.HasPrefix(value, []byte("application/grpc")) {
				return false
			}
		case 14:
			if equalFoldBytes(name, "content-length") {
				return false
			}
		case 17:
			if equalFoldBytes(name, "transfer-encoding") || equalFoldBytes(name, "x-forwarded-proto") && rq.hasXFP {
				return false
			}
			if equalFoldBytes(name, "x-forwarded-proto") {
				rq.hasXFP = true
			}
		case 21:
			if equalFoldBytes(name, "x-envoy-peer-metadata") {
				if !inbound || rq.peerMetadata != nil {
					return false // sent on by the general path's rules
				}
				rq.peerMetadata = value // counted by the limits, not sent on or recorded
				continue
			}
		case 23:
			if equalFoldBytes(name, "x-forwarded-client-cert") {
				return false
			}
		case 24:
			if equalFoldBytes(name, "x-envoy-peer-metadata-id") {
				if !inbound || rq.peerID {
					return false
				}
				rq.peerID = true // taken with the metadata (telemetry.PeerCache.Take)
				continue
			}
		}
		if len(name) > 6 && equalFoldBytes(name[:6], "proxy-") {
			return false
		}
		if rq.n == len(rq.fields) {
			return false
		}
		rq.fields[rq.n] = field{name, value}
		rq.n++
	}
	if len(rq.host) == 0 || rq.peerID && rq.peerMetadata == nil {
		return false // no Host; an id alone, which the general path sends on
	}
	rq.count++ // Host
	rq.size += int64(len("host") + len(rq.host))
	return true
}

var (
	crlf         = []byte("\r\n")
	getPrefix    = []byte("GET /")
	http11Suffix = []byte(" HTTP/1.1")
)

// headerBytes is the request's size as the general path records it
// (recordRequest): the header's names and values (Host, and the peer
// metadata an inbound listener takes, left out), the method, the Host
// and the target.
func (rq *bytesRequest) headerBytes() int64 {
	var n int
	for _, f := range rq.fields[:rq.n] {
		n += len(f.name) + len(f.value)
	}
	return int64(n + rq.dropped + len(rq.method) + len(rq.host) + len(rq.target))
}

// exceededBytes is exceeded for a request on the byte path.
func (l *Limits) exceededBytes(rq *bytesRequest) bool {
	maxBytes, maxCount := l.MaxRequestHeadersBytes, l.MaxHeadersCount
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRequestHeadersBytes
	}
	if maxCount <= 0 {
		maxCount = DefaultMaxHeadersCount
	}
	return rq.count > maxCount || rq.size > maxBytes
}

// appendUpstreamHead appends the head the general path sends upstream
// for rq (upstream.writeHead of forward's request): the request line,
// Host, User-Agent (Go's default when the client sent none), the
// client's fields but the hop-by-hop ones, then X-Forwarded-Proto and
// X-Request-Id unless the client set them (a new one), and on an
// outbound listener the proxy's metadata exchange fields. Names are
// canonical, as the general path's.
func (f *Forwarder) appendUpstreamHead(b []byte, rq *bytesRequest, l *Listener) []byte {
	b = append(b, "GET "...)
	b = append(b, rq.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, rq.host...)
	b = append(b, "\r\n"...)
	if !rq.hasUA {
		b = append(b, "User-Agent: Go-http-client/1.1\r\n"...)
	}
	for _, fl := range rq.fields[:rq.n] {
		b = appendCanonical(b, fl.name)
		b = append(b, ": "...)
		b = append(b, fl.value...)
		b = append(b, "\r\n"...)
	}
	if !rq.hasXFP {
		b = append(b, "X-Forwarded-Proto: http\r\n"...)
	}
	if !rq.hasXRID {
		b = append(b, "X-Request-Id: "...)
		rq.idAt = len(b)
		b = appendRequestID(b)
		b = append(b, "\r\n"...)
	}
	if l.Outbound {
		b = append(b, telemetry.HeaderPeerMetadata...)
		b = append(b, ": "...)
		b = append(b, f.peerMetadata[0]...)
		b = append(b, "\r\n"...)
		b = append(b, telemetry.HeaderPeerMetadataID...)
		b = append(b, ": "...)
		b = append(b, f.peerID[0]...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// relayable reports whether the byte path relays a response itself:
// one the general path would not retry (rp) and would send on as it
// came, without hop-by-hop fields to drop by name (Connection options
// other than close and keep-alive), gRPC status or rate-limit signals,
// a Pragma (which net/http's reader turns into Cache-Control), or a
// body whose type it would sniff. It also returns the size the general
// path records for the response's header: the names and values it
// sends on.
func relayable(hr *upstream.HeadResponse, rp *route.RetryPolicy) (ok bool, size int64) {
	if hr.Status == http.StatusNoContent || hr.Status == http.StatusNotModified {
		return false, 0
	}
	if rp != nil && rp.RetriableResponse(hr.Status, "", false) {
		return false, 0
	}
	hasType := false
	for _, f := range hr.Fields() {
		switch len(f.Name) {
		case 6:
			if equalFoldBytes(f.Name, "pragma") {
				return false, 0
			}
		case 7:
			if equalFoldBytes(f.Name, "trailer") {
				return false, 0
			}
		case 10:
			if equalFoldBytes(f.Name, "connection") && !plainConnection(f.Value) {
				return false, 0
			}
		case 11:
			if equalFoldBytes(f.Name, "grpc-status") {
				return false, 0
			}
		case 12:
			hasType = hasType || equalFoldBytes(f.Name, "content-type")
		case 19:
			if equalFoldBytes(f.Name, "x-envoy-ratelimited") {
				return false, 0
			}
		}
		if !hopByHopBytes(f.Name) {
			size += int64(len(f.Name) + len(f.Value))
		}
	}
	return hasType || hr.Length == 0, size
}

// plainConnection reports whether a Connection value lists only close
// and keep-alive.
func plainConnection(v []byte) bool {
	for len(v) > 0 {
		opt, rest, _ := bytes.Cut(v, []byte(","))
		v = rest
		if opt = bytes.Trim(opt, " \t"); len(opt) > 0 && !equalFoldBytes(opt, "close") && !equalFoldBytes(opt, "keep-alive") {
			return false
		}
	}
	return true
}

// appendResponseHead appends the head the general path writes
// downstream for a relayed response (copyResponseHeaders, then the
// HTTP/1.1 server's WriteHeader): its status line, the fields but the
// hop-by-hop ones and Content-Length, a Date when there was none, and
// the Content-Length. Names are canonical, as the general path's.
func appendResponseHead(b []byte, hr *upstream.HeadResponse) []byte {
	b = append(b, h1server.StatusLine(hr.Status)...)
	hasDate := false
	for _, f := range hr.Fields() {
		if hopByHopBytes(f.Name) || equalFoldBytes(f.Name, "content-length") {
			continue
		}
		if len(f.Name) == 4 && equalFoldBytes(f.Name, "date") {
			hasDate = true
		}
		b = appendCanonical(b, f.Name)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	if !hasDate {
		b = append(b, "Date: "...)
		b = append(b, httpdate.Now()...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, hr.Length, 10)
	return append(b, "\r\n\r\n"...)
}

// hopByHopBytes is isHopByHop for a field name as received.
func hopByHopBytes(name []byte) bool {
	switch {
	case len(name) > 6 && equalFoldBytes(name[:6], "proxy-"):
		return true
	case equalFoldBytes(name, "connection"), equalFoldBytes(name, "keep-alive"), equalFoldBytes(name, "te"),
		equalFoldBytes(name, "trailer"), equalFoldBytes(name, "transfer-encoding"), equalFoldBytes(name, "upgrade"):
		return true
	}
	return false
}

// plainTarget reports whether an origin-form target is one every path
// option leaves as it is and both paths send unchanged: a path of
// unreserved characters, sub-delimiters, ':', '@' and single '/'
// without dot segments, and a query of visible characters.
func plainTarget(t []byte) bool {
	path, query, _ := bytes.Cut(t, []byte("?"))
	if len(path) == 0 || path[0] != '/' {
		return false
	}
	for i, c := range path {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '/':
			if i+1 < len(path) && path[i+1] == '/' {
				return false
			}
		case c == '.':
			if path[i-1] == '/' && (i+1 == len(path) || path[i+1] == '/' || path[i+1] == '.' && (i+2 == len(path) || path[i+2] == '/')) {
				return false
			}
		case c == '-' || c == '_' || c == '~' || c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' ||
			c == '*' || c == '+' || c == ',' || c == ';' || c == '=' || c == ':' || c == '@':
		default:
			return false
		}
	}
	for _, c := range query {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// plainHost reports whether a Host is a registered name or an IPv4
// address with an optional port: letters, digits, '.', '-', ':'.
func plainHost(h []byte) bool {
	for _, c := range h {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':') {
			return false
		}
	}
	return len(h) > 0
}

// plainValue reports whether a field value is visible ASCII, spaces and
// tabs only.
func plainValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// tokenBytes reports whether b is an RFC 9110 token.
func tokenBytes(b []byte) bool {
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return len(b) > 0
}

var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// equalFoldBytes reports whether b is lower, ASCII case-insensitively
// (lower is lower case).
func equalFoldBytes(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// appendCanonical appends a valid field name in net/http's canonical
// form: upper case at the start and after each '-', lower case elsewhere.
func appendCanonical(b, name []byte) []byte {
	upper := true
	for _, c := range name {
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
		upper = c == '-'
	}
	return b
}
