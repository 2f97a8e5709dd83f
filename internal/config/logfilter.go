package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/celexpr"
)

// Access log filters.
//
// Istio's Telemetry accessLogging[].filter.expression is a CEL expression
// that Envoy evaluates per request (envoy.access_loggers.extension_filters.cel).
// Weft's proxy does not embed a CEL interpreter; it implements Envoy's
// native access log filters instead, and the generator translates the
// expressions that map onto them exactly. Anything else is rejected at
// validation with the list of what is supported, so no filter ever means
// something else than it says.

// LogFilterSupport describes the CEL subset, for messages and docs.
const LogFilterSupport = "comparisons of response.code or response.duration with a constant " +
	"(==, !=, <, <=, >, >=; durations written duration(\"1s\")); of request.headers['name'], request.path, " +
	"request.url_path, request.method, request.host, request.useragent, request.referer or request.id with a string " +
	"(== and !=, .startsWith(), .endsWith(), .contains(), .matches() and in ['a', 'b']); 'name' in request.headers; " +
	"true and false; joined with &&, || and ! and grouped with parentheses"

// LogFilterOp is the kind of a LogFilter node.
type LogFilterOp int

// LogFilter node kinds.
const (
	LogFilterAnd        LogFilterOp = iota + 1 // every child holds
	LogFilterOr                                // some child holds
	LogFilterStatusCode                        // response.code Cmp Value
	LogFilterDuration                          // response.duration Cmp Value (milliseconds)
	LogFilterHeader                            // request header (or pseudo-header) Header matched by Match, inverted by Invert
	LogFilterNever                             // the constant false: nothing is logged (only ever the whole filter)
)

// LogFilterMatch is how a LogFilterHeader node matches its header: the
// forms of Envoy's HeaderMatcher.
type LogFilterMatch int

// Header match forms.
const (
	MatchPresent  LogFilterMatch = iota + 1 // the header is present
	MatchExact                              // its value is HeaderValue
	MatchPrefix                             // it starts with HeaderValue
	MatchSuffix                             // it ends with HeaderValue
	MatchContains                           // it contains HeaderValue
	MatchRegex                              // RE2 HeaderValue matches the whole value
)

// LogFilterCmp is a comparison operator.
type LogFilterCmp int

// Comparison operators.
const (
	CmpEQ LogFilterCmp = iota + 1
	CmpNE
	CmpLT
	CmpLE
	CmpGT
	CmpGE
)

// LogFilter is a parsed access log filter expression: a tree of Envoy's
// native filter forms. Immutable once parsed.
type LogFilter struct {
	Op       LogFilterOp
	Children []*LogFilter // And, Or: two or more
	Cmp      LogFilterCmp // StatusCode, Duration
	// Value is the status code, or the duration in milliseconds.
	Value       int64
	Header      string         // Header: lower case, or :path, :method, :authority
	Match       LogFilterMatch // Header
	HeaderValue string         // Header, but MatchPresent
	// Invert negates a Header node as Envoy's invert_match: a request
	// without the header still fails a value match, negated or not, as
	// a CEL comparison on a missing header is an error, and an error
	// logs nothing.
	Invert bool
}

// ParseLogFilter parses an access log filter expression of the CEL subset
// Weft supports (LogFilterSupport). The error says what was not
// understood and where (a 1-based column). An expression that always
// holds ("true") gives a nil filter: log everything; one that never holds
// gives a LogFilterNever node.
func ParseLogFilter(expr string) (*LogFilter, error) {
	if !utf8.ValidString(expr) {
		return nil, fmt.Errorf("the expression is not valid UTF-8")
	}
	p := &celParser{celexpr.NewLexer(expr)}
	if p.Err != nil {
		return nil, p.Err
	}
	if p.Tok.Kind == celexpr.EOF {
		return nil, fmt.Errorf("the expression is empty")
	}
	f, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.Err != nil || p.Tok.Kind != celexpr.EOF {
		return nil, p.Errf("unexpected %s", p.Tok)
	}
	switch f {
	case always:
		return nil, nil
	case never:
		return &LogFilter{Op: LogFilterNever}, nil
	}
	return f, nil
}

// always and never are the constants true and false while parsing; they
// are folded away (x && true is x, x || true is true, ...) and only ever
// remain as the whole expression.
var (
	always = &LogFilter{Op: -1}
	never  = &LogFilter{Op: -2}
)

// celParser parses a filter expression with celexpr's lexer.
type celParser struct{ *celexpr.Lexer }

func (p *celParser) or() (*LogFilter, error) {
	return p.chain("||", LogFilterOr, p.and)
}

func (p *celParser) and() (*LogFilter, error) {
	return p.chain("&&", LogFilterAnd, p.unary)
}

// chain parses operands joined by op into one node of kind k (flattened,
// constants folded).
func (p *celParser) chain(op string, k LogFilterOp, operand func() (*LogFilter, error)) (*LogFilter, error) {
	first, err := operand()
	if err != nil {
		return nil, err
	}
	if !p.IsOp(op) {
		return first, nil
	}
	operands := []*LogFilter{first}
	for p.IsOp(op) {
		p.Next()
		f, err := operand()
		if err != nil {
			return nil, err
		}
		operands = append(operands, f)
	}
	return join(k, operands), nil
}

// join makes one node of kind k (And or Or) of operands, flattening
// nested nodes of the same kind and folding the constants.
func join(k LogFilterOp, operands []*LogFilter) *LogFilter {
	identity, absorbing := always, never // x && true is x; x && false is false
	if k == LogFilterOr {
		identity, absorbing = never, always
	}
	n := &LogFilter{Op: k}
	for _, f := range operands {
		switch {
		case f == absorbing:
			return absorbing
		case f == identity:
		case f.Op == k:
			n.Children = append(n.Children, f.Children...)
		default:
			n.Children = append(n.Children, f)
		}
	}
	switch len(n.Children) {
	case 0:
		return identity
	case 1:
		return n.Children[0]
	}
	return n
}

// negate is !f, pushed down to the leaves (De Morgan), which Envoy's
// filters can each negate: comparisons by their opposite, header matches
// by invert_match.
func negate(f *LogFilter) *LogFilter {
	switch f {
	case always:
		return never
	case never:
		return always
	}
	switch f.Op {
	case LogFilterAnd, LogFilterOr:
		k := LogFilterOr
		if f.Op == LogFilterOr {
			k = LogFilterAnd
		}
		children := make([]*LogFilter, len(f.Children))
		for i, c := range f.Children {
			children[i] = negate(c)
		}
		return join(k, children)
	case LogFilterStatusCode, LogFilterDuration:
		n := *f
		n.Cmp = map[LogFilterCmp]LogFilterCmp{CmpEQ: CmpNE, CmpNE: CmpEQ, CmpLT: CmpGE, CmpGE: CmpLT, CmpLE: CmpGT, CmpGT: CmpLE}[f.Cmp]
		return &n
	}
	n := *f
	n.Invert = !f.Invert
	return &n
}

func (p *celParser) unary() (*LogFilter, error) {
	if p.IsOp("!") {
		p.Next()
		f, err := p.unary()
		if err != nil {
			return nil, err
		}
		return negate(f), nil
	}
	return p.primary()
}

// stringAttrs are the request attributes a filter compares with strings,
// and the request header (or pseudo-header) each one reads.
// request.url_path is :path without its query (see pathMatch).
var stringAttrs = map[string]string{
	"path":      ":path",
	"url_path":  ":path",
	"method":    ":method",
	"host":      ":authority",
	"useragent": "user-agent",
	"referer":   "referer",
	"id":        "x-request-id",
}

func (p *celParser) primary() (*LogFilter, error) {
	if p.Err != nil {
		return nil, p.Err
	}
	switch {
	case p.IsOp("("):
		p.Next()
		f, err := p.or()
		if err != nil {
			return nil, err
		}
		return f, p.Expect(")")
	case p.IsIdent("true"), p.IsIdent("false"):
		v := p.Tok.Text == "true"
		p.Next()
		if v {
			return always, nil
		}
		return never, nil
	case p.Tok.Kind == celexpr.String:
		// 'name' in request.headers
		name := p.Tok.Text
		if err := checkHeaderName(name); err != nil {
			return nil, p.Errf("%v", err)
		}
		p.Next()
		if !p.IsIdent("in") {
			return nil, p.Errf("a string on the left must be followed by \"in request.headers\", got %s", p.Tok)
		}
		p.Next()
		if err := p.path("request", "headers"); err != nil {
			return nil, err
		}
		return &LogFilter{Op: LogFilterHeader, Header: strings.ToLower(name), Match: MatchPresent}, nil
	case p.IsIdent("response"):
		p.Next()
		if err := p.Expect("."); err != nil {
			return nil, err
		}
		if p.Tok.Kind != celexpr.Ident || (p.Tok.Text != "code" && p.Tok.Text != "duration") {
			return nil, p.Errf("want response.code or response.duration, got response.%s", p.Tok.Text)
		}
		attr := p.Tok.Text
		p.Next()
		cmp, err := p.cmp()
		if err != nil {
			return nil, err
		}
		if attr == "code" {
			if p.Tok.Kind != celexpr.Int {
				return nil, p.Errf("response.code compares with an integer, got %s", p.Tok)
			}
			v, err := strconv.ParseInt(p.Tok.Text, 10, 32)
			if err != nil || v > 999 {
				return nil, p.Errf("status code %s is out of range", p.Tok.Text)
			}
			if v == 0 && cmp == CmpLT {
				return nil, p.Errf("response.code < 0 never holds")
			}
			p.Next()
			return &LogFilter{Op: LogFilterStatusCode, Cmp: cmp, Value: v}, nil
		}
		ms, err := p.duration()
		if err != nil {
			return nil, err
		}
		if ms == 0 && cmp == CmpLT {
			return nil, p.Errf("response.duration < duration(\"0s\") never holds")
		}
		return &LogFilter{Op: LogFilterDuration, Cmp: cmp, Value: ms}, nil
	case p.IsIdent("request"):
		p.Next()
		if err := p.Expect("."); err != nil {
			return nil, err
		}
		if p.Tok.Kind == celexpr.Ident {
			if header, ok := stringAttrs[p.Tok.Text]; ok {
				attr := "request." + p.Tok.Text
				p.Next()
				return p.stringTest(attr, header, attr == "request.url_path")
			}
		}
		if !p.IsIdent("headers") {
			return nil, p.Errf("want request.headers, request.path, request.url_path, request.method, request.host, request.useragent, request.referer or request.id, got request.%s", p.Tok.Text)
		}
		p.Next()
		if err := p.Expect("["); err != nil {
			return nil, err
		}
		if p.Tok.Kind != celexpr.String {
			return nil, p.Errf("want a header name in quotes, got %s", p.Tok)
		}
		name := p.Tok.Text
		if err := checkHeaderName(name); err != nil {
			return nil, p.Errf("%v", err)
		}
		p.Next()
		if err := p.Expect("]"); err != nil {
			return nil, err
		}
		return p.stringTest(fmt.Sprintf("request.headers[%q]", name), strings.ToLower(name), false)
	case p.Tok.Kind == celexpr.EOF:
		return nil, p.Errf("the expression ends too early")
	}
	return nil, p.Errf("unsupported %s", p.Tok)
}

// checkHeaderName refuses a name no request header has, and the
// pseudo-headers Weft's proxy does not match on.
func checkHeaderName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("a header name is not empty")
	case strings.HasPrefix(name, ":"):
		switch strings.ToLower(name) {
		case ":path", ":method", ":authority", ":scheme":
			return nil
		}
		return fmt.Errorf("pseudo-header %q: Weft's proxy matches :path, :method, :authority and :scheme", name)
	case !httpguts.ValidHeaderFieldName(name):
		return fmt.Errorf("%q is not a valid header name", name)
	}
	return nil
}

// stringTest parses what follows a string attribute (attr, as written,
// for messages) read from header: == or != a string, one of the string
// functions, or in a list. urlPath says the attribute is
// request.url_path: :path without its query.
func (p *celParser) stringTest(attr, header string, urlPath bool) (*LogFilter, error) {
	leaf := func(m LogFilterMatch, v string) (*LogFilter, error) {
		if v == "" && (m == MatchPrefix || m == MatchSuffix || m == MatchContains) {
			// Every value starts with "", and Envoy's matchers
			// refuse an empty prefix, suffix or substring.
			return &LogFilter{Op: LogFilterHeader, Header: header, Match: MatchPresent}, nil
		}
		if urlPath {
			return urlPathMatch(p, m, v)
		}
		return &LogFilter{Op: LogFilterHeader, Header: header, Match: m, HeaderValue: v}, nil
	}
	switch {
	case p.IsOp("==") || p.IsOp("!="):
		ne := p.IsOp("!=")
		p.Next()
		v, err := p.str(attr)
		if err != nil {
			return nil, err
		}
		f, err := leaf(MatchExact, v)
		if err != nil || !ne {
			return f, err
		}
		return negate(f), nil
	case p.IsOp("."):
		p.Next()
		fn := p.Tok.Text
		m, ok := map[string]LogFilterMatch{"startsWith": MatchPrefix, "endsWith": MatchSuffix, "contains": MatchContains, "matches": MatchRegex}[fn]
		if p.Tok.Kind != celexpr.Ident || !ok {
			return nil, p.Errf("want startsWith, endsWith, contains or matches after %s., got %s", attr, p.Tok)
		}
		p.Next()
		if err := p.Expect("("); err != nil {
			return nil, err
		}
		arg := p.Tok
		v, err := p.str(attr + "." + fn + "()")
		if err != nil {
			return nil, err
		}
		if m == MatchRegex {
			re, err := regexp.Compile(v)
			if err != nil {
				return nil, fmt.Errorf("column %d: invalid regular expression %q: %v", arg.Pos+1, v, err)
			}
			// CEL's matches() finds the expression anywhere in the
			// value; Envoy's safe_regex matches the whole value.
			v = "(?s:.*(?:" + re.String() + ").*)"
		}
		f, err := leaf(m, v)
		if err != nil {
			return nil, err
		}
		return f, p.Expect(")")
	case p.IsIdent("in"):
		p.Next()
		if err := p.Expect("["); err != nil {
			return nil, err
		}
		var alts []*LogFilter
		for {
			v, err := p.str(attr + " in [...]")
			if err != nil {
				return nil, err
			}
			f, err := leaf(MatchExact, v)
			if err != nil {
				return nil, err
			}
			alts = append(alts, f)
			if !p.IsOp(",") {
				break
			}
			p.Next()
		}
		if err := p.Expect("]"); err != nil {
			return nil, err
		}
		return join(LogFilterOr, alts), nil
	}
	return nil, p.Errf("%s compares with == or != a string, or calls startsWith, endsWith, contains or matches; got %s", attr, p.Tok)
}

// urlPathMatch is a match of request.url_path, Envoy's :path without its
// query: as a match of :path that stops at the "?". A value with a "?"
// cannot be part of url_path.
func urlPathMatch(p *celParser, m LogFilterMatch, v string) (*LogFilter, error) {
	if m != MatchRegex && strings.Contains(v, "?") {
		return nil, p.Errf("request.url_path has no query: %q cannot match it (request.path has the query)", v)
	}
	q := regexp.QuoteMeta(v)
	const query = `(?:\?.*)?`
	f := &LogFilter{Op: LogFilterHeader, Header: ":path", Match: MatchRegex}
	switch m {
	case MatchPrefix:
		f.Match, f.HeaderValue = MatchPrefix, v
	case MatchExact:
		f.HeaderValue = q + query
	case MatchSuffix:
		f.HeaderValue = `[^?]*` + q + query
	case MatchContains:
		f.HeaderValue = `[^?]*` + q + `.*`
	case MatchRegex:
		return nil, p.Errf("request.url_path.matches() is not supported: use request.path.matches() (the path with its query)")
	}
	return f, nil
}

// str reads a string literal, the operand of attr (for messages).
func (p *celParser) str(attr string) (string, error) {
	if p.Tok.Kind != celexpr.String {
		return "", p.Errf("%s compares with a string, got %s", attr, p.Tok)
	}
	v := p.Tok.Text
	p.Next()
	return v, nil
}

// path consumes the identifiers a.b.c.
func (p *celParser) path(names ...string) error {
	for i, n := range names {
		if i > 0 {
			if err := p.Expect("."); err != nil {
				return err
			}
		}
		if p.Tok.Kind != celexpr.Ident || p.Tok.Text != n {
			return p.Errf("want %s, got %s", strings.Join(names, "."), p.Tok)
		}
		p.Next()
	}
	return nil
}

func (p *celParser) cmp() (LogFilterCmp, error) {
	if p.Tok.Kind == celexpr.Op {
		c, ok := map[string]LogFilterCmp{"==": CmpEQ, "!=": CmpNE, "<": CmpLT, "<=": CmpLE, ">": CmpGT, ">=": CmpGE}[p.Tok.Text]
		if ok {
			p.Next()
			return c, nil
		}
	}
	return 0, p.Errf("want a comparison (==, !=, <, <=, >, >=), got %s", p.Tok)
}

// duration reads duration("...") in whole milliseconds.
func (p *celParser) duration() (int64, error) {
	if p.Tok.Kind != celexpr.Ident || p.Tok.Text != "duration" {
		return 0, p.Errf("response.duration compares with duration(\"...\"), got %s", p.Tok)
	}
	p.Next()
	if err := p.Expect("("); err != nil {
		return 0, err
	}
	if p.Tok.Kind != celexpr.String {
		return 0, p.Errf("want a duration string such as \"500ms\", got %s", p.Tok)
	}
	d, err := time.ParseDuration(p.Tok.Text)
	switch {
	case err != nil:
		return 0, p.Errf("invalid duration %q", p.Tok.Text)
	case d < 0 || d%time.Millisecond != 0:
		return 0, p.Errf("duration %q: want a whole, non-negative number of milliseconds", p.Tok.Text)
	}
	p.Next()
	return d.Milliseconds(), p.Expect(")")
}
