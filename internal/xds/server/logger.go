package server

import (
	"fmt"
	"log/slog"
	"strings"
)

// cacheLogger adapts slog to go-control-plane's printf-style logger. The
// library is chatty, so its info becomes debug.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(format string, args ...any) { c.l.Debug(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Infof(format string, args ...any)  { c.l.Debug(fmt.Sprintf(format, args...)) }

// Warnf logs at warn, except the ADS ordering wait: after a cluster change
// the cache holds back EDS until the proxy re-subscribes with the new
// cluster names. That is the protocol working, not a problem.
func (c cacheLogger) Warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(msg, "ADS mode: not responding") {
		c.l.Debug(msg)
		return
	}
	c.l.Warn(msg)
}
func (c cacheLogger) Errorf(format string, args ...any) { c.l.Error(fmt.Sprintf(format, args...)) }
