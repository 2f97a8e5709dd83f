package dataplane

import (
	"fmt"

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
	return nil
}
