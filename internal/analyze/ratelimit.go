package analyze

import (
	"net"
	"strconv"

	"weft.dev/weft/internal/config"
)

// rateLimitServices reports RateLimits whose global.service the proxies
// cannot call: a host no registry knows, a port the service does not
// declare (the proxies have no cluster for either: every call fails and
// the requests pass, or with failureModeDeny are refused), or a port
// whose protocol is not HTTP/2 (the call is gRPC).
func (a *analysis) rateLimitServices() {
	sev := config.SeverityError
	if a.opts.FilesOnly {
		sev = config.SeverityWarning
	}
	for _, rl := range a.m.Config.RateLimits {
		g := rl.Spec.GetGlobal()
		if g == nil {
			continue
		}
		host, port, err := net.SplitHostPort(g.GetService())
		if err != nil {
			continue // validation reported it
		}
		n, _ := strconv.ParseUint(port, 10, 32)
		svc := a.m.Registry.Service(host)
		if svc == nil {
			a.report(sev, config.CodeRateLimitService, rl.Meta, rl.Pos, "spec.global.service",
				"no registry knows the host %s: proxies have no cluster to call the rate limit service on", host)
			continue
		}
		found := false
		for _, p := range svc.Ports {
			if p.Number != uint32(n) {
				continue
			}
			found = true
			if !p.Protocol.IsHTTP2() {
				a.report(config.SeverityWarning, config.CodeRateLimitService, rl.Meta, rl.Pos, "spec.global.service",
					"port %d of %s is %s, not GRPC or HTTP2: the proxies' gRPC calls to the rate limit service fail", n, host, p.Protocol)
			}
		}
		if !found {
			a.report(sev, config.CodeRateLimitService, rl.Meta, rl.Pos, "spec.global.service",
				"%s has no port %d: proxies have no cluster to call the rate limit service on", host, n)
		}
	}
}
