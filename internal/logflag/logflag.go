// Package logflag is the --log-level flag every Weft command shares, so
// `weft` and `weft-proxy` take the same name, default and values and log
// in the same format: slog's key=value text lines.
package logflag

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// The flag's name, default and help text.
const (
	Name    = "log-level"
	Default = "info"
	Usage   = "log level: debug, info, warn or error"
)

// Add defines --log-level on fs and returns where its value is stored.
func Add(fs *pflag.FlagSet) *string { return fs.String(Name, Default, Usage) }

// Logger returns a logger writing key=value lines to w at level (any case
// of debug, info, warn or error). Any other level is an error naming the
// flag and the value.
func Logger(w io.Writer, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--%s %q: want debug, info, warn or error", Name, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}
