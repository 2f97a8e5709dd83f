package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// Header names and values, as Istio checks them (ValidateHTTPHeader*,
// ValidateHTTPHeaderValue) plus what weft-proxy and Envoy's schema refuse:
// header names must be HTTP tokens (Go's HTTP stack cannot send others),
// values at most 16 KiB, and values are literal (weft-proxy has no %…%
// substitution commands).

// maxHeaderValue is Envoy's limit on a configured header value
// (HeaderValue.value max_bytes).
const maxHeaderValue = 16384

// isToken reports whether s is an RFC 7230 token: the characters a header
// name may have.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

const tokenChars = "letters, digits and !#$%&'*+-.^_`|~"

func isPseudoHeader(name string) bool { return strings.HasPrefix(name, ":") }

func isAuthorityHeader(name string) bool {
	return strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host")
}

// jwtClaimHeader reports whether a match header name is Istio's JWT claim
// form, @request.auth.claims.<name> or @request.auth.claims[<name>].
func jwtClaimHeader(name string) bool {
	const prefix = "@request.auth.claims"
	if !strings.HasPrefix(strings.ToLower(name), prefix) {
		return false
	}
	rest := name[len(prefix):]
	return (strings.HasPrefix(rest, ".") && len(rest) > 1) ||
		(strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") && len(rest) > 2)
}

// checkMatchHeaderName is Istio's ValidateHTTPHeaderNameOrJwtClaimRoute,
// less :status, which a request never has (weft-proxy refuses the match).
func checkMatchHeaderName(name string) error {
	switch name {
	case "":
		return fmt.Errorf("header name must not be empty")
	case ":method", ":scheme", ":authority", ":path":
		return nil
	case ":status":
		return fmt.Errorf("cannot match on :status: a request has no status (match :method, :scheme, :authority, :path or a header)")
	}
	if jwtClaimHeader(name) || isToken(name) {
		return nil
	}
	return fmt.Errorf("header name %q is not a valid HTTP header name (%s)", name, tokenChars)
}

// checkSetHeaderName is Istio's ValidateHTTPHeaderWithAuthorityOperationName
// (request add/set), plus the token rule.
func checkSetHeaderName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("header name must not be empty")
	case isAuthorityHeader(name):
		return nil // rewrites the authority; see validateAuthorityRewrite
	case isPseudoHeader(name):
		return fmt.Errorf("pseudo-header %q cannot be set; only :authority (or Host), which rewrites the authority", name)
	case !isToken(name):
		return fmt.Errorf("header name %q is not a valid HTTP header name (%s)", name, tokenChars)
	}
	return nil
}

// checkOperationHeaderName is Istio's ValidateHTTPHeaderOperationName
// (request remove, response add/set/remove), plus the token rule.
func checkOperationHeaderName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("header name must not be empty")
	case strings.EqualFold(name, "host"):
		return fmt.Errorf("the Host header cannot be changed here (use rewrite.authority for requests)")
	case isPseudoHeader(name):
		return fmt.Errorf("pseudo-header %q cannot be changed", name)
	case !isToken(name):
		return fmt.Errorf("header name %q is not a valid HTTP header name (%s)", name, tokenChars)
	}
	return nil
}

// checkHeaderValue is Istio's ValidateHTTPHeaderValue (no control
// characters but tab; well-formed %…% commands), then weft-proxy's limits:
// literal values only, at most 16 KiB.
func checkHeaderValue(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("header value %q contains control character %q; header values are one line of text", v, rune(c))
		}
	}
	if err := checkEnvoyHeaderFormat(v); err != nil {
		return fmt.Errorf("header value %q: %v", v, err)
	}
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			i++
			continue
		}
		cmd := v[i:]
		if end := strings.IndexByte(v[i+1:], '%'); end >= 0 {
			cmd = v[i : i+2+end]
		}
		return fmt.Errorf("header value %q uses the substitution %s, which weft-proxy does not support; values are literal (write %%%% for a %%)", v, cmd)
	}
	if len(v) > maxHeaderValue {
		return fmt.Errorf("header value is %d bytes; at most %d are allowed", len(v), maxHeaderValue)
	}
	return nil
}

// checkEnvoyHeaderFormat is the grammar of Envoy's custom header values
// (header_parser.cc), as Istio ports it: text with %VAR% or
// %VAR(["arg", …])% commands and %% for a literal %.
func checkEnvoyHeaderFormat(v string) error {
	const (
		literal = iota
		varName
		expectArray
		expectString
		inString
		expectDelimOrEnd
		expectArgsEnd
		expectVarEnd
	)
	state := literal
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch state {
		case literal:
			if c != '%' {
				continue
			}
			if i+1 == len(v) {
				return fmt.Errorf("a lone %% at the end; write %%%% for a literal %%")
			}
			if v[i+1] == '%' {
				i++
				continue
			}
			state = varName
		case varName:
			if c == '%' {
				state = literal
			} else if c == '(' {
				state = expectArray
			}
		case expectArray:
			if c == '[' {
				state = expectString
			} else if c != ' ' {
				state = inString
			}
		case expectDelimOrEnd:
			switch {
			case c == ',':
				state = expectString
			case c == ']':
				state = expectArgsEnd
			case c != ' ':
				return fmt.Errorf("expecting ',' or ']' in a %%…%% command")
			}
		case expectString:
			if c == '"' {
				state = inString
			} else if c != ' ' {
				return fmt.Errorf("expecting '\"' in a %%…%% command")
			}
		case inString:
			switch c {
			case '\\':
				if i+1 == len(v) {
					return fmt.Errorf("unterminated backslash in a %%…%% command")
				}
				i++
			case ')':
				state = expectVarEnd
			case '"':
				state = expectDelimOrEnd
			}
		case expectArgsEnd:
			if c == ')' {
				state = expectVarEnd
			} else if c != ' ' {
				return fmt.Errorf("expecting ')' in a %%…%% command")
			}
		case expectVarEnd:
			if c == '%' {
				state = literal
			} else if c != ' ' {
				return fmt.Errorf("expecting '%%' to end a %%…%% command")
			}
		}
	}
	if state != literal {
		return fmt.Errorf("unterminated %%…%% command; write %%%% for a literal %%")
	}
	return nil
}

// validateHeaderOps checks one Headers block (route or destination level).
func validateHeaderOps(is *issues, path string, h *networking.Headers) {
	if h == nil {
		return
	}
	setOrAdd := func(p string, m map[string]string, checkName func(string) error) {
		for _, k := range sortedKeys(m) {
			if err := checkName(k); err != nil {
				is.errf(p+"."+k, "%v", err)
			}
			if err := checkHeaderValue(m[k]); err != nil {
				is.errf(p+"."+k, "%v", err)
			}
		}
	}
	remove := func(p string, names []string) {
		for i, k := range names {
			if err := checkOperationHeaderName(k); err != nil {
				is.errf(fmt.Sprintf("%s[%d]", p, i), "%v", err)
			}
		}
	}
	setOrAdd(path+".request.set", h.GetRequest().GetSet(), checkSetHeaderName)
	setOrAdd(path+".request.add", h.GetRequest().GetAdd(), checkSetHeaderName)
	remove(path+".request.remove", h.GetRequest().GetRemove())
	setOrAdd(path+".response.set", h.GetResponse().GetSet(), checkOperationHeaderName)
	setOrAdd(path+".response.add", h.GetResponse().GetAdd(), checkOperationHeaderName)
	remove(path+".response.remove", h.GetResponse().GetRemove())
}

// validateAuthorityRewrite is Istio's rule that the authority is rewritten
// in one place only: rewrite.authority, or one Host/:authority entry of
// headers.request.set/add.
func validateAuthorityRewrite(is *issues, path string, r *networking.HTTPRoute) {
	current, where := r.GetRewrite().GetAuthority(), path+".rewrite.authority"
	for _, op := range []struct {
		name string
		m    map[string]string
	}{{"set", r.GetHeaders().GetRequest().GetSet()}, {"add", r.GetHeaders().GetRequest().GetAdd()}} {
		for _, k := range sortedKeys(op.m) {
			if !isAuthorityHeader(k) {
				continue
			}
			p := path + ".headers.request." + op.name + "." + k
			if current != "" {
				is.errf(p, "the authority is already rewritten to %q by %s; rewrite it in one place only", current, where)
				continue
			}
			current, where = op.m[k], p
		}
	}
}
