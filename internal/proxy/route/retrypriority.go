package route

import (
	"fmt"
	"weft.dev/weft/internal/proxy/xdswire"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
)

// previousPrioritiesName is the one retry_priority the proxy implements
// (Istio's retryRemoteLocalities).
const previousPrioritiesName = "envoy.retry_priorities.previous_priorities"

// compileRetryPriority returns the update_frequency of a
// previous_priorities retry_priority; 0 when there is none.
func compileRetryPriority(rp *route.RetryPolicy_RetryPriority) (int, error) {
	if rp == nil {
		return 0, nil
	}
	if rp.GetName() != previousPrioritiesName {
		return 0, fmt.Errorf("retry_priority (%s): unsupported", rp.GetName())
	}
	var cfg previouspriorities.PreviousPrioritiesConfig
	if tc := rp.GetTypedConfig(); tc != nil {
		if err := xdswire.UnmarshalAny(tc, &cfg); err != nil {
			return 0, fmt.Errorf("retry_priority (%s): %w", rp.GetName(), err)
		}
	}
	if cfg.GetUpdateFrequency() <= 0 {
		return 0, fmt.Errorf("retry_priority (%s): update_frequency must be greater than 0", rp.GetName())
	}
	return int(min(cfg.GetUpdateFrequency(), 1<<20)), nil
}
