// Package accesslog is the proxy's access logging, Envoy's
// envoy.access_loggers.file: formats of command operators (%START_TIME%,
// %REQ(X)%, %RESPONSE_CODE% …) compiled once when config arrives, Envoy's
// native access log filters (status code, duration, header, response
// flags, and/or), and sinks that never block a request: each has a
// bounded queue and one writer goroutine, and a line that finds the queue
// full is dropped and counted.
//
// Threading: Formats, Filters and Loggers are immutable and safe for
// concurrent use; Logger.Log is called on request goroutines and never
// blocks.
package accesslog

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/types/known/structpb"
)

// EnvoyDefaultFormat is the format Envoy uses when a file access log has
// none.
const EnvoyDefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// IstioDefaultFormat is Istio's text format (EnvoyTextLogFormat), what
// its built-in "envoy" provider writes unless the mesh config says
// otherwise.
const IstioDefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// IstioDefaultJSON is Istio's JSON format (EnvoyJSONLogFormatIstio): field
// name → format.
var IstioDefaultJSON = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// Entry is what is known of one finished request. The request path fills
// it on its stack; nothing keeps it after Log returns.
type Entry struct {
	Start    time.Time
	Duration time.Duration
	// Request is the downstream request (method, target, protocol, Host,
	// headers as the filters left them).
	Request *http.Request
	// ResponseHeader are the headers sent downstream; nil when none were.
	ResponseHeader http.Header
	// Code is the status sent downstream; 0 when none was.
	Code int
	// Flags are Envoy's response flags, comma-separated ("" = none).
	Flags string
	// ViaUpstream: the response came from the upstream (not a local reply).
	ViaUpstream bool
	// BytesReceived and BytesSent count request and response body bytes.
	BytesReceived, BytesSent int64
	// UpstreamHost is the endpoint's address, UpstreamCluster its
	// cluster, RouteName the route's name ("" when unknown).
	UpstreamHost, UpstreamCluster, RouteName string
	// UpstreamFailure is why the upstream connection failed ("" if not).
	UpstreamFailure string
	// Details is the response code details when the flags do not say
	// them ("upgrade_failed"); "": derived from ViaUpstream and Flags.
	Details string
	// DownstreamRemote and DownstreamLocal are the downstream connection's
	// addresses (zero when unknown); SNI is its TLS server name.
	DownstreamRemote, DownstreamLocal netip.AddrPort
	SNI                               string
}

// op is one command operator.
type op uint8

const (
	opLiteral op = iota
	opStartTime
	opReq
	opResp
	opReqWithoutQuery
	opResponseCode
	opResponseFlags
	opResponseCodeDetails
	opConnTermination
	opBytesReceived
	opBytesSent
	opDuration
	opProtocol
	opUpstreamHost
	opUpstreamCluster
	opUpstreamLocal
	opUpstreamFailure
	opDownstreamRemote
	opDownstreamRemoteNoPort
	opDownstreamLocal
	opDownstreamLocalNoPort
	opRequestedServerName
	opRouteName
	opHostname
)

// simpleOps are the operators without arguments.
var simpleOps = map[string]op{
	"RESPONSE_CODE":                                 opResponseCode,
	"RESPONSE_FLAGS":                                opResponseFlags,
	"RESPONSE_CODE_DETAILS":                         opResponseCodeDetails,
	"CONNECTION_TERMINATION_DETAILS":                opConnTermination,
	"BYTES_RECEIVED":                                opBytesReceived,
	"BYTES_SENT":                                    opBytesSent,
	"DURATION":                                      opDuration,
	"PROTOCOL":                                      opProtocol,
	"UPSTREAM_HOST":                                 opUpstreamHost,
	"UPSTREAM_CLUSTER":                              opUpstreamCluster,
	"UPSTREAM_CLUSTER_RAW":                          opUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS":                        opUpstreamLocal,
	"UPSTREAM_TRANSPORT_FAILURE_REASON":             opUpstreamFailure,
	"DOWNSTREAM_REMOTE_ADDRESS":                     opDownstreamRemote,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        opDownstreamRemoteNoPort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              opDownstreamRemote,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS":                      opDownstreamLocal,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         opDownstreamLocalNoPort,
	"REQUESTED_SERVER_NAME":                         opRequestedServerName,
	"ROUTE_NAME":                                    opRouteName,
	"HOSTNAME":                                      opHostname,
}

// Operators lists the command operators Weft renders, for messages and
// docs.
func Operators() []string {
	out := []string{"START_TIME", "START_TIME(format)", "REQ(header?alternative):max", "REQUEST_HEADER(…)", "RESP(header?alternative):max", "RESPONSE_HEADER(…)", "REQ_WITHOUT_QUERY(…)"}
	for k := range simpleOps {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// segment is a literal or one operator of a format.
type segment struct {
	op      op
	lit     string // opLiteral; opHostname: the host name
	hdr     string // opReq/opResp: canonical header key or pseudo-header
	alt     string // the alternative header ("" = none)
	maxLen  int    // 0 = no limit
	timeFmt []timePiece
}

// numeric reports whether the operator renders a number (typed in JSON).
func (s *segment) numeric() bool {
	switch s.op {
	case opResponseCode, opBytesReceived, opBytesSent, opDuration:
		return true
	}
	return false
}

// Format is a compiled access log format, text or JSON. Immutable.
type Format struct {
	text []segment
	// json: fields in key order; each field's value is a format (or a
	// literal JSON value when raw is set).
	json []jsonField
}

type jsonField struct {
	key  []byte // the quoted key and colon: "key":
	segs []segment
	raw  []byte // a non-string value, written as is
}

// ParseText compiles a text format (Envoy's text_format_source /
// text_format). "" is Envoy's default format.
func ParseText(s string) (*Format, error) {
	if s == "" {
		s = EnvoyDefaultFormat
	}
	segs, err := parseSegments(s)
	if err != nil {
		return nil, err
	}
	return &Format{text: segs}, nil
}

// ParseJSON compiles a JSON format (Envoy's json_format): each field's
// string value is a format; a value that is exactly one numeric operator
// (%RESPONSE_CODE%, %BYTES_SENT%, %DURATION% …) is written as a number,
// a missing value as null; other values are written as given. Keys are
// written sorted.
func ParseJSON(st *structpb.Struct) (*Format, error) {
	if len(st.GetFields()) == 0 {
		return nil, fmt.Errorf("json_format has no fields")
	}
	f := &Format{}
	for _, k := range sortedKeys(st.GetFields()) {
		v := st.GetFields()[k]
		jf := jsonField{key: append(appendJSONString(nil, k), ':')}
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			segs, err := parseSegments(s.StringValue)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", k, err)
			}
			jf.segs = segs
		} else {
			raw, err := v.MarshalJSON()
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", k, err)
			}
			if _, nested := v.GetKind().(*structpb.Value_StructValue); nested {
				return nil, fmt.Errorf("field %q: nested objects are not supported by Weft's proxy", k)
			}
			jf.raw = raw
		}
		f.json = append(f.json, jf)
	}
	return f, nil
}

// ParseJSONMap is ParseJSON of a map of field names to formats.
func ParseJSONMap(m map[string]string) (*Format, error) {
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range m {
		st.Fields[k] = structpb.NewStringValue(v)
	}
	return ParseJSON(st)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// parseSegments splits a format into literals and operators.
func parseSegments(s string) ([]segment, error) {
	var segs []segment
	lit := func(t string) {
		if t == "" {
			return
		}
		if n := len(segs); n > 0 && segs[n-1].op == opLiteral {
			segs[n-1].lit += t
			return
		}
		segs = append(segs, segment{op: opLiteral, lit: t})
	}
	for len(s) > 0 {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			lit(s)
			break
		}
		lit(s[:i])
		s = s[i:]
		end, seg, err := parseOperator(s)
		if err != nil {
			return nil, err
		}
		segs = append(segs, seg)
		s = s[end:]
	}
	return segs, nil
}

// parseOperator parses the operator at the start of s ("%NAME...%") and
// returns how many bytes it took.
func parseOperator(s string) (int, segment, error) {
	// The name runs to '(' or the closing '%'.
	j := 1
	for j < len(s) && (s[j] >= 'A' && s[j] <= 'Z' || s[j] == '_' || s[j] >= '0' && s[j] <= '9') {
		j++
	}
	name := s[1:j]
	if name == "" {
		return 0, segment{}, fmt.Errorf("a %% at %q starts no command operator (Envoy has no escape for a literal %%)", clip(s))
	}
	var arg string
	hasArg := false
	if j < len(s) && s[j] == '(' {
		k := strings.IndexByte(s[j:], ')')
		if k < 0 {
			return 0, segment{}, fmt.Errorf("command operator %%%s: unclosed '('", name)
		}
		arg, hasArg = s[j+1:j+k], true
		j += k + 1
	}
	maxLen := 0
	if j < len(s) && s[j] == ':' {
		k := j + 1
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		n, err := strconv.Atoi(s[j+1 : k])
		if err != nil || n <= 0 {
			return 0, segment{}, fmt.Errorf("command operator %%%s: invalid length %q", name, s[j+1:k])
		}
		maxLen, j = n, k
	}
	if j >= len(s) || s[j] != '%' {
		return 0, segment{}, fmt.Errorf("command operator %%%s: missing the closing %%", name)
	}
	j++
	seg := segment{maxLen: maxLen}
	switch name {
	case "START_TIME":
		seg.op = opStartTime
		if hasArg && arg != "" {
			tf, err := parseTimeFormat(arg)
			if err != nil {
				return 0, segment{}, fmt.Errorf("%%START_TIME(%s)%%: %w", arg, err)
			}
			seg.timeFmt = tf
		}
		return j, seg, nil
	case "REQ", "REQUEST_HEADER", "RESP", "RESPONSE_HEADER", "REQ_WITHOUT_QUERY":
		if !hasArg || arg == "" {
			return 0, segment{}, fmt.Errorf("%%%s%% needs a header name: %%%s(name)%%", name, name)
		}
		seg.op = opReq
		switch name {
		case "RESP", "RESPONSE_HEADER":
			seg.op = opResp
		case "REQ_WITHOUT_QUERY":
			seg.op = opReqWithoutQuery
		}
		main, alt, _ := strings.Cut(arg, "?")
		seg.hdr, seg.alt = headerKey(main), headerKey(alt)
		if seg.hdr == "" {
			return 0, segment{}, fmt.Errorf("%%%s(%s)%%: empty header name", name, arg)
		}
		return j, seg, nil
	}
	o, ok := simpleOps[name]
	if !ok {
		return 0, segment{}, fmt.Errorf("unknown command operator %%%s%%; Weft's proxy renders %s", name, strings.Join(Operators(), ", "))
	}
	if hasArg {
		return 0, segment{}, fmt.Errorf("command operator %%%s%% takes no argument", name)
	}
	seg.op = o
	if o == opHostname {
		seg.lit, _ = os.Hostname()
	}
	return j, seg, nil
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

// headerKey is a header name as the request path indexes it: a
// pseudo-header in lower case, anything else in canonical form.
func headerKey(h string) string {
	if h == "" {
		return ""
	}
	if h[0] == ':' {
		return strings.ToLower(h)
	}
	return textproto.CanonicalMIMEHeaderKey(h)
}

// Append renders e in format f and appends it to dst.
func (f *Format) Append(dst []byte, e *Entry) []byte {
	if f.json == nil {
		for i := range f.text {
			dst = f.text[i].appendText(dst, e)
		}
		return dst
	}
	dst = append(dst, '{')
	for i := range f.json {
		jf := &f.json[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, jf.key...)
		switch {
		case jf.raw != nil:
			dst = append(dst, jf.raw...)
		case len(jf.segs) == 1 && jf.segs[0].op != opLiteral:
			s := &jf.segs[0]
			start := len(dst)
			if s.numeric() {
				if dst = s.appendValue(dst, e); len(dst) == start {
					dst = append(dst, "null"...) // missing
				}
				break
			}
			// Rendered in place after the opening quote, escaped only
			// when it has to be.
			dst = s.appendValue(append(dst, '"'), e)
			if len(dst) == start+1 {
				dst = append(dst[:start], "null"...) // missing
				break
			}
			dst = closeJSONString(dst, start+1)
		default:
			start := len(dst)
			dst = append(dst, '"')
			for k := range jf.segs {
				dst = jf.segs[k].appendText(dst, e)
			}
			dst = closeJSONString(dst, start+1)
		}
	}
	return append(dst, '}', '\n')
}

// appendText renders the segment as text: "-" when the value is missing.
func (s *segment) appendText(dst []byte, e *Entry) []byte {
	if s.op == opLiteral {
		return append(dst, s.lit...)
	}
	n := len(dst)
	dst = s.appendValue(dst, e)
	if len(dst) == n {
		dst = append(dst, '-')
	}
	return dst
}

// appendValue appends the operator's value, nothing when it is missing,
// truncated to maxLen.
func (s *segment) appendValue(dst []byte, e *Entry) []byte {
	start := len(dst)
	switch s.op {
	case opLiteral, opHostname:
		dst = append(dst, s.lit...)
	case opStartTime:
		if s.timeFmt == nil {
			dst = appendStartTime(dst, e.Start)
		} else {
			dst = appendTime(dst, e.Start, s.timeFmt)
		}
	case opReq, opReqWithoutQuery:
		var ok bool
		if dst, ok = appendRequestHeader(dst, e.Request, s.hdr, s.op == opReqWithoutQuery); !ok && s.alt != "" {
			dst, _ = appendRequestHeader(dst, e.Request, s.alt, s.op == opReqWithoutQuery)
		}
	case opResp:
		if vs := e.ResponseHeader[s.hdr]; len(vs) > 0 {
			dst = append(dst, vs[0]...)
		} else if vs := e.ResponseHeader[s.alt]; s.alt != "" && len(vs) > 0 {
			dst = append(dst, vs[0]...)
		}
	case opResponseCode:
		dst = strconv.AppendInt(dst, int64(e.Code), 10)
	case opResponseFlags:
		if e.Flags == "" {
			dst = append(dst, '-') // Envoy's "no flags", in JSON too
		} else {
			dst = append(dst, e.Flags...)
		}
	case opResponseCodeDetails:
		dst = append(dst, codeDetails(e)...)
	case opConnTermination:
	case opBytesReceived:
		dst = strconv.AppendInt(dst, e.BytesReceived, 10)
	case opBytesSent:
		dst = strconv.AppendInt(dst, e.BytesSent, 10)
	case opDuration:
		dst = strconv.AppendInt(dst, e.Duration.Milliseconds(), 10)
	case opProtocol:
		if e.Request != nil {
			dst = append(dst, protocol(e.Request)...)
		}
	case opUpstreamHost:
		dst = append(dst, e.UpstreamHost...)
	case opUpstreamCluster:
		dst = append(dst, e.UpstreamCluster...)
	case opUpstreamLocal:
	case opUpstreamFailure:
		dst = append(dst, e.UpstreamFailure...)
	case opDownstreamRemote:
		if e.DownstreamRemote.IsValid() {
			dst = e.DownstreamRemote.AppendTo(dst)
		}
	case opDownstreamRemoteNoPort:
		if e.DownstreamRemote.IsValid() {
			dst = e.DownstreamRemote.Addr().AppendTo(dst)
		}
	case opDownstreamLocal:
		if e.DownstreamLocal.IsValid() {
			dst = e.DownstreamLocal.AppendTo(dst)
		}
	case opDownstreamLocalNoPort:
		if e.DownstreamLocal.IsValid() {
			dst = e.DownstreamLocal.Addr().AppendTo(dst)
		}
	case opRequestedServerName:
		dst = append(dst, e.SNI...)
	case opRouteName:
		dst = append(dst, e.RouteName...)
	}
	if s.maxLen > 0 && len(dst)-start > s.maxLen {
		dst = dst[:start+s.maxLen]
	}
	return dst
}

// appendRequestHeader appends a request header or pseudo-header (without
// its query when noQuery is set; for :path only), reporting whether the
// request has it. :path is appended without allocating.
func appendRequestHeader(dst []byte, r *http.Request, key string, noQuery bool) ([]byte, bool) {
	if key == ":path" && r != nil {
		return appendRequestPath(dst, r, noQuery), true
	}
	v, ok := requestHeader(r, key)
	if ok && noQuery {
		if i := strings.IndexByte(v, '?'); i >= 0 {
			v = v[:i]
		}
	}
	return append(dst, v...), ok
}

// requestHeader reads a request header or pseudo-header.
func requestHeader(r *http.Request, key string) (string, bool) {
	if r == nil {
		return "", false
	}
	if key[0] == ':' {
		switch key {
		case ":method":
			return r.Method, true
		case ":path":
			return requestPath(r), true
		case ":authority":
			return r.Host, r.Host != ""
		case ":scheme":
			if r.TLS != nil {
				return "https", true
			}
			return "http", true
		}
		return "", false
	}
	vs := r.Header[key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// requestPath is the request's :path: the path as routed (normalized) with
// its query, without allocating when nothing needs escaping.
func requestPath(r *http.Request) string {
	u := r.URL
	if u == nil {
		return r.RequestURI
	}
	if u.RawQuery == "" && u.RawPath == "" && !u.ForceQuery && plainPath(u.Path) {
		return u.Path
	}
	return u.RequestURI()
}

// appendRequestPath appends the request's :path (without its query when
// noQuery is set) without allocating when nothing needs escaping.
func appendRequestPath(dst []byte, r *http.Request, noQuery bool) []byte {
	u := r.URL
	if u == nil || u.RawPath != "" || u.ForceQuery || !plainPath(u.Path) {
		p := requestPath(r)
		if noQuery {
			if i := strings.IndexByte(p, '?'); i >= 0 {
				p = p[:i]
			}
		}
		return append(dst, p...)
	}
	dst = append(dst, u.Path...)
	if u.RawQuery != "" && !noQuery {
		dst = append(dst, '?')
		dst = append(dst, u.RawQuery...)
	}
	return dst
}

func plainPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c >= 0x7f || c == '%' || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

// protocol is Envoy's %PROTOCOL%: HTTP/1.0, HTTP/1.1, HTTP/2, HTTP/3.
func protocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "HTTP/2"
	case 3:
		return "HTTP/3"
	case 1:
		if r.ProtoMinor == 0 {
			return "HTTP/1.0"
		}
		return "HTTP/1.1"
	}
	return r.Proto
}

// codeDetails is Envoy's %RESPONSE_CODE_DETAILS% for what the proxy knows:
// via_upstream for a response from the upstream, else the reason of the
// local reply from its response flags.
func codeDetails(e *Entry) string {
	if e.Details != "" {
		return e.Details
	}
	if e.ViaUpstream {
		return "via_upstream"
	}
	flag, _, _ := strings.Cut(e.Flags, ",")
	switch flag {
	case "NR":
		return "route_not_found"
	case "NC":
		return "cluster_not_found"
	case "UH":
		return "no_healthy_upstream"
	case "UF":
		return "upstream_reset_before_response_started{connection_failure}"
	case "UC":
		return "upstream_reset_before_response_started{connection_termination}"
	case "UR":
		return "upstream_reset_after_response_started"
	case "UT":
		return "upstream_response_timeout"
	case "UO":
		return "upstream_overflow"
	case "DI", "FI":
		return "fault_filter_abort"
	case "RBAC":
		return "rbac_access_denied_matched_policy[none]"
	case "UAEX":
		return "jwt_authn_access_denied"
	case "DC":
		return "downstream_remote_disconnect"
	case "DPE":
		return "http1.codec_error"
	}
	if e.Code != 0 {
		return "direct_response"
	}
	return ""
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	return append(appendJSONEscaped(append(dst, '"'), s), '"')
}

// appendJSONEscaped appends s escaped for the inside of a JSON string:
// runs of bytes that need no escaping are copied at once.
func appendJSONEscaped(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf && c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
		start = i
	}
	return append(dst, s[start:]...)
}

// closeJSONString ends the JSON string whose opening quote precedes
// dst[from:], the raw text rendered in place: it escapes that text when
// it has to (moving it aside first) and appends the closing quote.
func closeJSONString(dst []byte, from int) []byte {
	i := from
	for ; i < len(dst); i++ {
		if c := dst[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			break
		}
	}
	if i == len(dst) {
		return append(dst, '"') // the common case: nothing to escape
	}
	var tmp [512]byte
	raw := append(tmp[:0], dst[i:]...)
	// The string is only read, before this returns: no copy.
	dst = appendJSONEscaped(dst[:i], unsafe.String(unsafe.SliceData(raw), len(raw)))
	return append(dst, '"')
}
