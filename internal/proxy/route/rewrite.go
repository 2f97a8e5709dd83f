package route

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"weft.dev/weft/internal/proxy/urlpath"
)

// regexRewrite is a compiled RegexMatchAndSubstitute: every match of the
// pattern in the path (query excluded) is replaced by the substitution,
// whose \N refers to capture group N (RE2 GlobalReplace, as Envoy).
type regexRewrite struct {
	re   *regexp.Regexp
	subs string // in Go's Expand syntax
}

func compileRegexRewrite(m *matcherv3.RegexMatchAndSubstitute) (*regexRewrite, error) {
	re, err := regexp.Compile(m.GetPattern().GetRegex())
	if err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	subs, err := goSubstitution(m.GetSubstitution(), re.NumSubexp())
	if err != nil {
		return nil, fmt.Errorf("substitution: %w", err)
	}
	return &regexRewrite{re: re, subs: subs}, nil
}

// goSubstitution turns an RE2 rewrite string (\0-\9 for groups, \\ for a
// backslash) into Go's template syntax (${N}, $$ for a dollar).
func goSubstitution(s string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\':
			if i+1 >= len(s) {
				return "", fmt.Errorf("%q: trailing backslash", s)
			}
			i++
			switch n := s[i]; {
			case n == '\\':
				b.WriteByte('\\')
			case n >= '0' && n <= '9':
				if int(n-'0') > groups {
					return "", fmt.Errorf("%q: \\%c but the pattern has %d groups", s, n, groups)
				}
				b.WriteString("${" + string(n) + "}")
			default:
				return "", fmt.Errorf("%q: invalid escape \\%c", s, n)
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// RewritePath applies the route's path rewrite to u, whose Path/RawPath
// hold the request's path. prefix_rewrite replaces the matched prefix, or
// the whole path for exact and regex matches, as Envoy does; regex_rewrite
// substitutes in the escaped path. A result that does not unescape leaves
// the path unchanged.
func (re *Entry) RewritePath(u *url.URL) {
	if re.regexRewrite == nil && re.prefixRewrite == "" {
		return // the common case: nothing to do
	}
	raw := urlpath.Escaped(u)
	switch {
	case re.regexRewrite != nil:
		raw = re.regexRewrite.re.ReplaceAllString(raw, re.regexRewrite.subs)
	case re.prefixRewrite != "":
		switch re.path.kind {
		case pathPrefix, pathSeparatedPrefix:
			n := len(re.path.value)
			if n > len(raw) {
				return
			}
			raw = re.prefixRewrite + raw[n:]
		default:
			raw = re.prefixRewrite
		}
	default:
		return
	}
	if p, err := url.PathUnescape(raw); err == nil {
		u.Path, u.RawPath = p, raw
	}
}

// compileRewrite reads prefix_rewrite and regex_rewrite (Envoy allows one).
func (re *Entry) compileRewrite(a *route.RouteAction) error {
	if p := a.GetPrefixRewrite(); p != "" {
		re.rare().prefixRewrite = p
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		if re.prefixRewrite != "" {
			return fmt.Errorf("prefix_rewrite and regex_rewrite are mutually exclusive")
		}
		var err error
		if re.rare().regexRewrite, err = compileRegexRewrite(rr); err != nil {
			return fmt.Errorf("regex_rewrite: %w", err)
		}
	}
	return nil
}
