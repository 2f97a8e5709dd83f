package forward

import (
	"net/http"
	"net/netip"
	"strings"
)

// remoteIP is the original client's address as Envoy's connection manager
// derives it (its downstream remote address, which RBAC's remote_ip
// matches), from X-Forwarded-For:
//
//   - use_remote_address false (Istio's sidecars): the address
//     xff_num_trusted_hops entries from the right of X-Forwarded-For (the
//     last one by default);
//   - use_remote_address true: the TCP peer, unless xff_num_trusted_hops
//     is set: then the address xff_num_trusted_hops-1 from the right.
//
// It returns the zero Addr when the TCP peer is the answer (no header, no
// such entry, or not an IP address). It does not allocate.
func remoteIP(r *http.Request, l *Listener) netip.Addr {
	skip := int(l.XFFTrustedHops)
	if l.UseRemoteAddress {
		if skip == 0 {
			return netip.Addr{}
		}
		skip--
	}
	xff := r.Header["X-Forwarded-For"]
	if len(xff) == 0 {
		return netip.Addr{}
	}
	// Several header lines are one comma-separated list.
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			entry := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			if skip > 0 {
				skip--
				continue
			}
			a, err := netip.ParseAddr(strings.TrimSpace(entry))
			if err != nil {
				return netip.Addr{}
			}
			return a.Unmap()
		}
	}
	return netip.Addr{}
}
