package rbac

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// This file compiles Envoy's URI template path matcher
// (envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig),
// which Istio emits for AuthorizationPolicy paths containing {*} or {**}.
// The grammar and the regular expression it becomes follow Envoy's
// uri_template library:
//
//	*            one path segment: [pchar]+
//	**           the rest of the path, slashes included: [pchar/]*; nothing
//	             that matches may follow it
//	{name}       a named segment, like *
//	{name=...}   a named sub-pattern of literals, *, ** and /
//
// pchar is RFC 3986's path character set minus "*" (unreserved,
// pct-encoded, sub-delims but "*", ":" and "@"). The template is matched
// against the whole path with the query and fragment removed.

const (
	// uriLiteralClass is Envoy's kLiteral as a regexp character class body.
	uriLiteralClass = `a-zA-Z0-9._~%!$&'()+,;:@=\-`

	uriMaxVariables  = 5
	uriMaxVarNameLen = 16
)

var (
	uriLiteralRE = regexp.MustCompile(`^[` + uriLiteralClass + `]+$`)
	uriVarNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]*$`)
	uriPrintable = regexp.MustCompile(`^/[[:graph:]]*$`)
)

type uriSegKind uint8

const (
	uriLiteral uriSegKind = iota
	uriPathGlob
	uriTextGlob
	uriVariable
)

type uriSeg struct {
	kind    uriSegKind
	literal string   // uriLiteral
	name    string   // uriVariable
	match   []uriSeg // uriVariable: its sub-pattern (literals and globs); empty = *
}

// compileURITemplate parses template and returns the anchored regexp that
// matches paths it accepts.
func compileURITemplate(template string) (*regexp.Regexp, error) {
	if !uriPrintable.MatchString(template) {
		return nil, fmt.Errorf("invalid pattern %q: must start with / and contain only printable characters", template)
	}
	var segs []uriSeg
	rest := template
	for rest != "" {
		var (
			s   uriSeg
			err error
		)
		switch rest[0] {
		case '*':
			s, rest = parseURIOperator(rest)
		case '{':
			s, rest, err = parseURIVariable(rest)
		default:
			s, rest, err = parseURILiteral(rest)
		}
		if err != nil {
			return nil, fmt.Errorf("invalid pattern %q: %w", template, err)
		}
		segs = append(segs, s)
	}
	if err := checkURISegments(segs); err != nil {
		return nil, fmt.Errorf("invalid pattern %q: %w", template, err)
	}
	var b strings.Builder
	b.WriteString("^")
	for _, s := range segs {
		writeURIRegex(&b, s)
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

func parseURIOperator(p string) (uriSeg, string) {
	if strings.HasPrefix(p, "**") {
		return uriSeg{kind: uriTextGlob}, p[2:]
	}
	return uriSeg{kind: uriPathGlob}, p[1:]
}

// parseURILiteral reads "/" on its own, or the text up to the next "/" or
// "{", which must be pchars.
func parseURILiteral(p string) (uriSeg, string, error) {
	if p[0] == '/' {
		return uriSeg{kind: uriLiteral, literal: "/"}, p[1:], nil
	}
	lit := p
	if i := strings.IndexByte(lit, '/'); i >= 0 {
		lit = lit[:i]
	}
	if i := strings.IndexByte(lit, '{'); i >= 0 {
		lit = lit[:i]
	}
	if !uriLiteralRE.MatchString(lit) {
		return uriSeg{}, "", fmt.Errorf("invalid literal %q", lit)
	}
	return uriSeg{kind: uriLiteral, literal: lit}, p[len(lit):], nil
}

func parseURIVariable(p string) (uriSeg, string, error) {
	end := strings.IndexByte(p, '}')
	if end < 0 {
		return uriSeg{}, "", fmt.Errorf("unmatched variable bracket in %q", p)
	}
	body, rest := p[1:end], p[end+1:]
	name, pattern, hasPattern := strings.Cut(body, "=")
	if !uriVarNameRE.MatchString(name) {
		return uriSeg{}, "", fmt.Errorf("invalid variable name %q", name)
	}
	v := uriSeg{kind: uriVariable, name: name}
	if !hasPattern {
		return v, rest, nil
	}
	if pattern == "" {
		return uriSeg{}, "", errors.New("empty variable match")
	}
	for pattern != "" {
		lastIsOp := len(v.match) > 0 && v.match[len(v.match)-1].kind != uriLiteral
		switch {
		case pattern[0] == '*' && !lastIsOp:
			var s uriSeg
			s, pattern = parseURIOperator(pattern)
			v.match = append(v.match, s)
		case pattern[0] != '/' && lastIsOp:
			return uriSeg{}, "", errors.New("invalid variable match, path cannot directly be prepended by operator, is a slash missing?")
		default:
			s, r, err := parseURILiteral(pattern)
			if err != nil {
				return uriSeg{}, "", err
			}
			v.match, pattern = append(v.match, s), r
		}
	}
	return v, rest, nil
}

// checkURISegments applies Envoy's post-parse checks: variable names, no
// glob after "**", no "//".
func checkURISegments(segs []uriSeg) error {
	names := map[string]bool{}
	textGlob := false
	prevSlash := false
	for _, s := range segs {
		isSlash := s.kind == uriLiteral && s.literal == "/"
		switch s.kind {
		case uriPathGlob, uriTextGlob:
			if textGlob {
				return errors.New("glob after text glob")
			}
			textGlob = s.kind == uriTextGlob
		case uriVariable:
			if len(names) >= uriMaxVariables {
				return fmt.Errorf("exceeded variable count limit (%d)", uriMaxVariables)
			}
			if len(s.name) > uriMaxVarNameLen {
				return fmt.Errorf("invalid variable name length %q (at most %d)", s.name, uriMaxVarNameLen)
			}
			if names[s.name] {
				return fmt.Errorf("repeated variable name %q", s.name)
			}
			names[s.name] = true
			if len(s.match) == 0 {
				if textGlob {
					return errors.New("implicit variable path glob after text glob")
				}
			}
			for _, m := range s.match {
				if m.kind == uriLiteral {
					continue
				}
				if textGlob {
					return errors.New("glob after text glob")
				}
				textGlob = m.kind == uriTextGlob
			}
			if len(s.match) > 0 && s.match[0].kind == uriLiteral && s.match[0].literal == "/" {
				isSlash = true
			}
		}
		if prevSlash && isSlash {
			return errors.New("double slashes (/) detected in uri_template")
		}
		prevSlash = isSlash
	}
	return nil
}

func writeURIRegex(b *strings.Builder, s uriSeg) {
	switch s.kind {
	case uriLiteral:
		b.WriteString(regexp.QuoteMeta(s.literal))
	case uriPathGlob:
		b.WriteString(`[` + uriLiteralClass + `]+`)
	case uriTextGlob:
		b.WriteString(`[` + uriLiteralClass + `/]*`)
	case uriVariable:
		b.WriteString("(?:")
		if len(s.match) == 0 {
			b.WriteString(`[` + uriLiteralClass + `]+`)
		}
		for _, m := range s.match {
			writeURIRegex(b, m)
		}
		b.WriteString(")")
	}
}

// trimQuery returns path without its query string and fragment, as Envoy's
// PathUtil::removeQueryAndFragment.
func trimQuery(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		return path[:i]
	}
	return path
}
