package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

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
	"(==, !=, <, <=, >, >=; durations written duration(\"1s\")), request.headers['name'] == 'value', " +
	"'name' in request.headers, request.path, request.method or request.host == 'value', " +
	"joined with && and || and grouped with parentheses"

// LogFilterOp is the kind of a LogFilter node.
type LogFilterOp int

// LogFilter node kinds.
const (
	LogFilterAnd           LogFilterOp = iota + 1 // every child holds
	LogFilterOr                                   // some child holds
	LogFilterStatusCode                           // response.code Cmp Value
	LogFilterDuration                             // response.duration Cmp Value (milliseconds)
	LogFilterHeaderEquals                         // request.headers[Header] == HeaderValue (or :path, :method, :authority)
	LogFilterHeaderPresent                        // Header in request.headers
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
	Header      string // HeaderEquals, HeaderPresent: lower case
	HeaderValue string // HeaderEquals
}

// ParseLogFilter parses an access log filter expression of the CEL subset
// Weft supports (LogFilterSupport). The error says what was not
// understood and where (a 1-based column).
func ParseLogFilter(expr string) (*LogFilter, error) {
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
	return f, nil
}

// celParser parses a filter expression with celexpr's lexer.
type celParser struct{ *celexpr.Lexer }

func (p *celParser) or() (*LogFilter, error) {
	return p.chain("||", LogFilterOr, p.and)
}

func (p *celParser) and() (*LogFilter, error) {
	return p.chain("&&", LogFilterAnd, p.primary)
}

// chain parses operands joined by op into one node of kind k (flattened).
func (p *celParser) chain(op string, k LogFilterOp, operand func() (*LogFilter, error)) (*LogFilter, error) {
	first, err := operand()
	if err != nil {
		return nil, err
	}
	if !p.IsOp(op) {
		return first, nil
	}
	n := &LogFilter{Op: k}
	add := func(f *LogFilter) {
		if f.Op == k {
			n.Children = append(n.Children, f.Children...)
		} else {
			n.Children = append(n.Children, f)
		}
	}
	add(first)
	for p.IsOp(op) {
		p.Next()
		f, err := operand()
		if err != nil {
			return nil, err
		}
		add(f)
	}
	return n, nil
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
	case p.Tok.Kind == celexpr.String:
		// 'name' in request.headers
		name := p.Tok.Text
		p.Next()
		if p.Tok.Kind != celexpr.Ident || p.Tok.Text != "in" {
			return nil, p.Errf("a string on the left must be followed by \"in request.headers\", got %s", p.Tok)
		}
		p.Next()
		if err := p.path("request", "headers"); err != nil {
			return nil, err
		}
		return &LogFilter{Op: LogFilterHeaderPresent, Header: strings.ToLower(name)}, nil
	case p.Tok.Kind == celexpr.Ident && p.Tok.Text == "response":
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
	case p.Tok.Kind == celexpr.Ident && p.Tok.Text == "request":
		p.Next()
		if err := p.Expect("."); err != nil {
			return nil, err
		}
		if p.Tok.Kind == celexpr.Ident {
			// request.path (with the query), request.method and
			// request.host are Envoy's :path, :method and :authority.
			if pseudo, ok := map[string]string{"path": ":path", "method": ":method", "host": ":authority"}[p.Tok.Text]; ok {
				attr := "request." + p.Tok.Text
				p.Next()
				return p.equalsString(attr, pseudo)
			}
		}
		if p.Tok.Kind != celexpr.Ident || p.Tok.Text != "headers" {
			return nil, p.Errf("want request.headers, request.path, request.method or request.host, got request.%s", p.Tok.Text)
		}
		p.Next()
		if err := p.Expect("["); err != nil {
			return nil, err
		}
		if p.Tok.Kind != celexpr.String {
			return nil, p.Errf("want a header name in quotes, got %s", p.Tok)
		}
		name := p.Tok.Text
		p.Next()
		if err := p.Expect("]"); err != nil {
			return nil, err
		}
		return p.equalsString(fmt.Sprintf("request.headers[%q]", name), strings.ToLower(name))
	case p.Tok.Kind == celexpr.EOF:
		return nil, p.Errf("the expression ends too early")
	}
	return nil, p.Errf("unsupported %s", p.Tok)
}

// equalsString parses "== 'value'" after attr (as written, for
// messages), a comparison with the request's header (or pseudo-header).
func (p *celParser) equalsString(attr, header string) (*LogFilter, error) {
	if !p.IsOp("==") {
		return nil, p.Errf("%s supports == only, got %s", attr, p.Tok)
	}
	p.Next()
	if p.Tok.Kind != celexpr.String {
		return nil, p.Errf("%s compares with a string, got %s", attr, p.Tok)
	}
	v := p.Tok.Text
	p.Next()
	return &LogFilter{Op: LogFilterHeaderEquals, Header: header, HeaderValue: v}, nil
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
