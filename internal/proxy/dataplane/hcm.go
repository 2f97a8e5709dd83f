package dataplane

import (
	"fmt"
	"math"
	"strings"
	"time"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/proxy/forward"
)

// connectionManagerOptions copies into l what an HttpConnectionManager
// says about request paths (normalize_path, merge_slashes,
// path_with_escaped_slashes_action) and about finding the original
// client's address (use_remote_address, xff_num_trusted_hops), with
// Envoy's defaults: a path is left as received, and the original client
// is the last X-Forwarded-For entry. where names m in errors.
func connectionManagerOptions(l *forward.Listener, m *hcm.HttpConnectionManager, where string) error {
	l.Path = forward.PathOptions{
		Normalize:    m.GetNormalizePath().GetValue(),
		MergeSlashes: m.GetMergeSlashes(),
	}
	switch a := m.GetPathWithEscapedSlashesAction(); a {
	case hcm.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcm.HttpConnectionManager_KEEP_UNCHANGED:
		l.Path.EscapedSlashes = forward.KeepEscapedSlashes
	case hcm.HttpConnectionManager_REJECT_REQUEST:
		l.Path.EscapedSlashes = forward.RejectEscapedSlashes
	case hcm.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		l.Path.EscapedSlashes = forward.UnescapeAndRedirect
	case hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		l.Path.EscapedSlashes = forward.UnescapeAndForward
	default:
		return fmt.Errorf("%s.path_with_escaped_slashes_action: unknown action %v", where, a)
	}
	if m.GetPathNormalizationOptions() != nil {
		return fmt.Errorf("%s.path_normalization_options: not supported (use normalize_path and merge_slashes)", where)
	}
	l.UseRemoteAddress = m.GetUseRemoteAddress().GetValue()
	l.XFFTrustedHops = m.GetXffNumTrustedHops()
	if len(m.GetOriginalIpDetectionExtensions()) > 0 {
		return fmt.Errorf("%s.original_ip_detection_extensions: not supported (the original client comes from X-Forwarded-For)", where)
	}
	return upgradeOptions(l, m, where)
}

// upgradeOptions copies m's upgrade_configs (the upgrade types its
// requests may switch to, matched without regard to case; enabled
// defaults to true) and stream_idle_timeout (which closes an upgraded
// stream idle that long; 0: never) into l.
func upgradeOptions(l *forward.Listener, m *hcm.HttpConnectionManager, where string) error {
	l.Upgrades = nil
	for i, u := range m.GetUpgradeConfigs() {
		typ := strings.ToLower(u.GetUpgradeType())
		switch {
		case typ == "":
			return fmt.Errorf("%s.upgrade_configs[%d].upgrade_type: empty", where, i)
		case len(u.GetFilters()) > 0:
			return fmt.Errorf("%s.upgrade_configs[%d].filters: not supported (upgrades run the connection manager's http_filters)", where, i)
		case typ == "connect" || typ == "connect-udp":
			return fmt.Errorf("%s.upgrade_configs[%d].upgrade_type: %q is not supported", where, i, u.GetUpgradeType())
		}
		if l.Upgrades == nil {
			l.Upgrades = map[string]bool{}
		}
		l.Upgrades[typ] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	l.StreamIdleTimeout = defaultStreamIdleTimeout
	if d := m.GetStreamIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("%s.stream_idle_timeout: invalid duration", where)
		}
		l.StreamIdleTimeout = d.AsDuration() // 0: none
	}
	return nil
}

// Envoy's defaults for the connection limits an HttpConnectionManager can
// override, and Weft's where it deliberately differs.
const (
	// defaultIdleTimeout is common_http_protocol_options.idle_timeout's
	// default for downstream connections: 1 h.
	defaultIdleTimeout = time.Hour
	// defaultRequestHeadersTimeout bounds the wait for a request's
	// headers. Envoy's request_headers_timeout is off by default; a
	// sidecar's clients are its own application and other sidecars,
	// which send a request's headers in one go, so 10 s is generous for
	// them and keeps a slow-loris client from holding a connection (and
	// its goroutine and buffers) for longer.
	defaultRequestHeadersTimeout = 10 * time.Second
	// defaultMaxConcurrentStreams is Go's HTTP/2 server default (Envoy's
	// is 2^31-1, effectively none): a bound on what one HTTP/2
	// connection can make the proxy hold, kept unless the connection
	// manager says otherwise.
	defaultMaxConcurrentStreams = 250
	// defaultStreamIdleTimeout is stream_idle_timeout's default (Envoy's)
	// when the connection manager does not set it: an HTTP/2 stream with
	// no activity in either direction for this long is reset — one whose
	// client never reads its response (flow control) or never sends the
	// rest of its body — and an upgraded stream (WebSocket) idle that
	// long is closed.
	defaultStreamIdleTimeout = 5 * time.Minute
	// maxFrameSize is the largest HTTP/2 frame the listeners accept:
	// the protocol's initial SETTINGS_MAX_FRAME_SIZE, 16 KiB, which
	// Envoy never raises. Go's server would advertise 1 MiB; keeping
	// the initial value means a HEADERS frame over 16 KiB is the
	// connection error RFC 9113 §4.2 asks for (h2spec http2/4.2/3), and
	// a client cannot make the proxy buffer a 1 MiB frame at once.
	maxFrameSize = 16 << 10
)

// serverLimits are the connection limits of a listener's http.Server,
// which serves every HTTP chain of the listener: the most permissive of
// its chains' values, so no chain gets less than it configured. Each
// chain's own header limits are then enforced per request
// (forward.Limits).
type serverLimits struct {
	maxHeaderBytes int           // the largest max_request_headers_kb, in bytes
	headersTimeout time.Duration // request_headers_timeout; 0: none
	idleTimeout    time.Duration // common_http_protocol_options.idle_timeout; 0: none
	maxStreams     uint32        // http2_protocol_options.max_concurrent_streams
	streamIdle     time.Duration // stream_idle_timeout (HTTP/2 streams); 0: none
}

// chainLimits reads the connection limits of m, with Envoy's defaults
// (and Weft's, above) for those it does not set: l gets the header
// limits the request path enforces, the result what the listener's
// server must allow. where names m in errors.
func chainLimits(l *forward.Limits, m *hcm.HttpConnectionManager, where string) (serverLimits, error) {
	sl := serverLimits{maxHeaderBytes: forward.DefaultMaxRequestHeadersBytes, headersTimeout: defaultRequestHeadersTimeout,
		idleTimeout: defaultIdleTimeout, maxStreams: defaultMaxConcurrentStreams, streamIdle: defaultStreamIdleTimeout}
	*l = forward.Limits{MaxRequestHeadersBytes: forward.DefaultMaxRequestHeadersBytes, MaxHeadersCount: forward.DefaultMaxHeadersCount}
	if kb := m.GetMaxRequestHeadersKb(); kb != nil {
		// Envoy's range: 1 to 8192 KiB.
		if kb.GetValue() < 1 || kb.GetValue() > 8192 {
			return sl, fmt.Errorf("%s.max_request_headers_kb: %d out of range [1, 8192]", where, kb.GetValue())
		}
		l.MaxRequestHeadersBytes = int64(kb.GetValue()) << 10
		sl.maxHeaderBytes = int(l.MaxRequestHeadersBytes)
	}
	common := m.GetCommonHttpProtocolOptions()
	if n := common.GetMaxHeadersCount(); n != nil {
		if n.GetValue() < 1 {
			return sl, fmt.Errorf("%s.common_http_protocol_options.max_headers_count: must be at least 1", where)
		}
		l.MaxHeadersCount = int(min(n.GetValue(), math.MaxInt32))
	}
	if d := common.GetIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return sl, fmt.Errorf("%s.common_http_protocol_options.idle_timeout: invalid duration", where)
		}
		sl.idleTimeout = d.AsDuration() // 0: none, as Envoy
	}
	if d := m.GetRequestHeadersTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return sl, fmt.Errorf("%s.request_headers_timeout: invalid duration", where)
		}
		sl.headersTimeout = d.AsDuration() // 0: none, as Envoy
	}
	if d := m.GetStreamIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return sl, fmt.Errorf("%s.stream_idle_timeout: invalid duration", where)
		}
		sl.streamIdle = d.AsDuration() // 0: none, as Envoy
	}
	if n := m.GetHttp2ProtocolOptions().GetMaxConcurrentStreams(); n != nil {
		if n.GetValue() < 1 {
			return sl, fmt.Errorf("%s.http2_protocol_options.max_concurrent_streams: must be at least 1", where)
		}
		sl.maxStreams = n.GetValue()
	}
	return sl, nil
}

// widen makes s allow whatever o allows.
func (s *serverLimits) widen(o serverLimits) {
	s.maxHeaderBytes = max(s.maxHeaderBytes, o.maxHeaderBytes)
	s.headersTimeout = longer(s.headersTimeout, o.headersTimeout)
	s.idleTimeout = longer(s.idleTimeout, o.idleTimeout)
	s.maxStreams = max(s.maxStreams, o.maxStreams)
	s.streamIdle = longer(s.streamIdle, o.streamIdle)
}

// longer is the longer of two timeouts where 0 means none.
func longer(a, b time.Duration) time.Duration {
	if a == 0 || b == 0 {
		return 0
	}
	return max(a, b)
}
