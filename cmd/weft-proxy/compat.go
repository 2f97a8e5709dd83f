package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// longFlagsCompat rewrites long flags written with one dash (-workload x,
// -ip=127.0.0.2), which weft-proxy accepted while it used Go's flag
// package, to the double-dash form, and warns once on stderr, so existing
// command lines keep working. Only names of defined flags are rewritten;
// values, one-letter shorthands (-h) and everything after "--" are left
// alone.
func longFlagsCompat(args []string, fs *pflag.FlagSet, stderr io.Writer) []string {
	out := make([]string, 0, len(args))
	var rewritten []string
	expectValue := false // the previous token was a flag whose value follows
	for i, a := range args {
		switch {
		case expectValue:
			expectValue = false
		case a == "--":
			return append(out, args[i:]...)
		case len(a) > 2 && a[0] == '-' && a[1] != '-':
			name, _, hasValue := strings.Cut(a[1:], "=")
			if f := fs.Lookup(name); f != nil {
				rewritten = append(rewritten, name)
				a = "-" + a
				expectValue = !hasValue && f.NoOptDefVal == ""
			}
		case strings.HasPrefix(a, "--"):
			name, _, hasValue := strings.Cut(a[2:], "=")
			if f := fs.Lookup(name); f != nil {
				expectValue = !hasValue && f.NoOptDefVal == ""
			}
		}
		out = append(out, a)
	}
	if len(rewritten) > 0 {
		fmt.Fprintf(stderr, "weft-proxy: single-dash long flags are deprecated; use --%s\n", strings.Join(rewritten, ", --"))
	}
	return out
}
