package forward

import (
	"net/http"
	"strconv"
	"strings"

	"weft.dev/weft/internal/celexpr"
	"weft.dev/weft/internal/proxy/telemetry"
)

// requestAttrs answers the attributes of one finished request for the
// label expressions of a listener's metric overrides (Listener.Stats), as
// Envoy's attributes name them. Made only on listeners with overrides.
type requestAttrs struct {
	q    *request
	node *telemetry.Node
}

func (a requestAttrs) Attr(x celexpr.Attr) (string, bool) {
	q, r := a.q, a.q.r
	switch x.ID {
	case celexpr.RequestHeader:
		return header(r.Header, x.Key)
	case celexpr.RequestHost:
		return r.Host, r.Host != ""
	case celexpr.RequestMethod:
		return r.Method, true
	case celexpr.RequestPath:
		return r.RequestURI, r.RequestURI != ""
	case celexpr.RequestURLPath:
		p, _, _ := strings.Cut(r.RequestURI, "?")
		return p, p != ""
	case celexpr.RequestQuery:
		return r.URL.RawQuery, true
	case celexpr.RequestScheme:
		if q.ds.Conn.TLS != nil {
			return "https", true
		}
		return "http", true
	case celexpr.RequestProtocol:
		if r.ProtoMajor == 2 {
			return "HTTP/2", true
		}
		return r.Proto, true
	case celexpr.RequestID:
		return header(r.Header, "x-request-id")
	case celexpr.RequestUserAgent:
		return header(r.Header, "user-agent")
	case celexpr.RequestReferer:
		return header(r.Header, "referer")
	case celexpr.ResponseCode:
		return strconv.Itoa(q.code), q.code != 0
	case celexpr.ResponseGRPCStatus:
		return q.grpcCode, q.grpcCode != ""
	case celexpr.ResponseHeader:
		if q.code == 0 {
			return "", false
		}
		return header(q.w.Header(), x.Key)
	case celexpr.SourceAddress:
		return addr(q.ds.Conn.RemoteAddr.Addr().String(), q.ds.Conn.RemoteAddr.IsValid())
	case celexpr.SourcePort:
		return strconv.Itoa(int(q.ds.Conn.RemoteAddr.Port())), q.ds.Conn.RemoteAddr.IsValid()
	case celexpr.DestinationAddress:
		return addr(q.ds.Conn.LocalAddr.Addr().String(), q.ds.Conn.LocalAddr.IsValid())
	case celexpr.DestinationPort:
		return strconv.Itoa(int(q.ds.Conn.LocalAddr.Port())), q.ds.Conn.LocalAddr.IsValid()
	case celexpr.ConnectionMTLS:
		return strconv.FormatBool(q.ds.Conn.TLS != nil && q.ds.Conn.Peer != nil), true
	case celexpr.ConnectionSNI:
		if q.ds.Conn.TLS == nil {
			return "", false
		}
		return q.ds.Conn.TLS.ServerName, q.ds.Conn.TLS.ServerName != ""
	case celexpr.ClusterName:
		return q.cluster, q.cluster != ""
	case celexpr.RouteName:
		return q.routeName, q.routeName != ""
	case celexpr.UpstreamPeer:
		if q.inbound {
			return "", false // the local application: no peer metadata
		}
		return telemetry.DstAttr(q.dst, x.Key)
	case celexpr.DownstreamPeer:
		if !q.inbound {
			return "", false // the local application
		}
		return telemetry.SrcAttr(q.src, x.Key)
	}
	return a.node.Attr(x)
}

// header returns the first value of the header named name (lower case).
func header(h http.Header, name string) (string, bool) {
	v := h[http.CanonicalHeaderKey(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func addr(s string, ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	return s, true
}
