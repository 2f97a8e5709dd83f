package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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
	"'name' in request.headers, joined with && and || and grouped with parentheses"

// LogFilterOp is the kind of a LogFilter node.
type LogFilterOp int

// LogFilter node kinds.
const (
	LogFilterAnd           LogFilterOp = iota + 1 // every child holds
	LogFilterOr                                   // some child holds
	LogFilterStatusCode                           // response.code Cmp Value
	LogFilterDuration                             // response.duration Cmp Value (milliseconds)
	LogFilterHeaderEquals                         // request.headers[Header] == HeaderValue
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
	p := &celParser{src: expr}
	p.next()
	if p.err != nil {
		return nil, p.err
	}
	if p.tok.kind == tEOF {
		return nil, fmt.Errorf("the expression is empty")
	}
	f, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.errf("unexpected %s", p.tok)
	}
	return f, nil
}

type celTokKind int

const (
	tEOF celTokKind = iota
	tIdent
	tInt
	tString
	tOp // == != < <= > >= && || ( ) [ ] . ,
)

type celTok struct {
	kind celTokKind
	text string
	pos  int // 0-based byte offset
}

func (t celTok) String() string {
	switch t.kind {
	case tEOF:
		return "end of expression"
	case tString:
		return strconv.Quote(t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

type celParser struct {
	src string
	i   int
	tok celTok
	err error // a lexical error, reported at the next token use
}

func (p *celParser) errf(format string, args ...any) error {
	if p.err != nil {
		return p.err
	}
	return fmt.Errorf("column %d: %s", p.tok.pos+1, fmt.Sprintf(format, args...))
}

// next reads the next token into p.tok.
func (p *celParser) next() {
	for p.i < len(p.src) && strings.IndexByte(" \t\r\n", p.src[p.i]) >= 0 {
		p.i++
	}
	start := p.i
	if p.i >= len(p.src) {
		p.tok = celTok{kind: tEOF, pos: start}
		return
	}
	c := p.src[p.i]
	switch {
	case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		for p.i < len(p.src) && (p.src[p.i] == '_' || p.src[p.i] >= 'a' && p.src[p.i] <= 'z' || p.src[p.i] >= 'A' && p.src[p.i] <= 'Z' || p.src[p.i] >= '0' && p.src[p.i] <= '9') {
			p.i++
		}
		p.tok = celTok{kind: tIdent, text: p.src[start:p.i], pos: start}
	case c >= '0' && c <= '9':
		for p.i < len(p.src) && p.src[p.i] >= '0' && p.src[p.i] <= '9' {
			p.i++
		}
		p.tok = celTok{kind: tInt, text: p.src[start:p.i], pos: start}
	case c == '\'' || c == '"':
		p.i++
		var b strings.Builder
		for {
			if p.i >= len(p.src) {
				p.err = fmt.Errorf("column %d: unterminated string", start+1)
				p.tok = celTok{kind: tEOF, pos: p.i}
				return
			}
			ch := p.src[p.i]
			if ch == c {
				p.i++
				break
			}
			if ch == '\\' {
				if p.i+1 >= len(p.src) || strings.IndexByte(`\'"`, p.src[p.i+1]) < 0 {
					p.err = fmt.Errorf("column %d: only \\\\, \\' and \\\" escapes are supported in strings", p.i+1)
					p.tok = celTok{kind: tEOF, pos: p.i}
					return
				}
				p.i++
				ch = p.src[p.i]
			}
			b.WriteByte(ch)
			p.i++
		}
		p.tok = celTok{kind: tString, text: b.String(), pos: start}
	default:
		for _, op := range []string{"==", "!=", "<=", ">=", "&&", "||", "<", ">", "(", ")", "[", "]", ".", ","} {
			if strings.HasPrefix(p.src[p.i:], op) {
				p.i += len(op)
				p.tok = celTok{kind: tOp, text: op, pos: start}
				return
			}
		}
		p.err = fmt.Errorf("column %d: unexpected character %q", start+1, c)
		p.tok = celTok{kind: tEOF, pos: start}
	}
}

func (p *celParser) isOp(op string) bool { return p.tok.kind == tOp && p.tok.text == op }

func (p *celParser) expect(op string) error {
	if !p.isOp(op) {
		return p.errf("want %q, got %s", op, p.tok)
	}
	p.next()
	return nil
}

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
	if !p.isOp(op) {
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
	for p.isOp(op) {
		p.next()
		f, err := operand()
		if err != nil {
			return nil, err
		}
		add(f)
	}
	return n, nil
}

func (p *celParser) primary() (*LogFilter, error) {
	if p.err != nil {
		return nil, p.err
	}
	switch {
	case p.isOp("("):
		p.next()
		f, err := p.or()
		if err != nil {
			return nil, err
		}
		return f, p.expect(")")
	case p.tok.kind == tString:
		// 'name' in request.headers
		name := p.tok.text
		p.next()
		if p.tok.kind != tIdent || p.tok.text != "in" {
			return nil, p.errf("a string on the left must be followed by \"in request.headers\", got %s", p.tok)
		}
		p.next()
		if err := p.path("request", "headers"); err != nil {
			return nil, err
		}
		return &LogFilter{Op: LogFilterHeaderPresent, Header: strings.ToLower(name)}, nil
	case p.tok.kind == tIdent && p.tok.text == "response":
		p.next()
		if err := p.expect("."); err != nil {
			return nil, err
		}
		if p.tok.kind != tIdent || (p.tok.text != "code" && p.tok.text != "duration") {
			return nil, p.errf("want response.code or response.duration, got response.%s", p.tok.text)
		}
		attr := p.tok.text
		p.next()
		cmp, err := p.cmp()
		if err != nil {
			return nil, err
		}
		if attr == "code" {
			if p.tok.kind != tInt {
				return nil, p.errf("response.code compares with an integer, got %s", p.tok)
			}
			v, err := strconv.ParseInt(p.tok.text, 10, 32)
			if err != nil || v > 999 {
				return nil, p.errf("status code %s is out of range", p.tok.text)
			}
			if v == 0 && cmp == CmpLT {
				return nil, p.errf("response.code < 0 never holds")
			}
			p.next()
			return &LogFilter{Op: LogFilterStatusCode, Cmp: cmp, Value: v}, nil
		}
		ms, err := p.duration()
		if err != nil {
			return nil, err
		}
		if ms == 0 && cmp == CmpLT {
			return nil, p.errf("response.duration < duration(\"0s\") never holds")
		}
		return &LogFilter{Op: LogFilterDuration, Cmp: cmp, Value: ms}, nil
	case p.tok.kind == tIdent && p.tok.text == "request":
		if err := p.path("request", "headers"); err != nil {
			return nil, err
		}
		if err := p.expect("["); err != nil {
			return nil, err
		}
		if p.tok.kind != tString {
			return nil, p.errf("want a header name in quotes, got %s", p.tok)
		}
		name := p.tok.text
		p.next()
		if err := p.expect("]"); err != nil {
			return nil, err
		}
		if !p.isOp("==") {
			return nil, p.errf("request.headers[%q] supports == only, got %s", name, p.tok)
		}
		p.next()
		if p.tok.kind != tString {
			return nil, p.errf("request.headers[%q] compares with a string, got %s", name, p.tok)
		}
		v := p.tok.text
		p.next()
		return &LogFilter{Op: LogFilterHeaderEquals, Header: strings.ToLower(name), HeaderValue: v}, nil
	case p.tok.kind == tEOF:
		return nil, p.errf("the expression ends too early")
	}
	return nil, p.errf("unsupported %s", p.tok)
}

// path consumes the identifiers a.b.c.
func (p *celParser) path(names ...string) error {
	for i, n := range names {
		if i > 0 {
			if err := p.expect("."); err != nil {
				return err
			}
		}
		if p.tok.kind != tIdent || p.tok.text != n {
			return p.errf("want %s, got %s", strings.Join(names, "."), p.tok)
		}
		p.next()
	}
	return nil
}

func (p *celParser) cmp() (LogFilterCmp, error) {
	if p.tok.kind == tOp {
		c, ok := map[string]LogFilterCmp{"==": CmpEQ, "!=": CmpNE, "<": CmpLT, "<=": CmpLE, ">": CmpGT, ">=": CmpGE}[p.tok.text]
		if ok {
			p.next()
			return c, nil
		}
	}
	return 0, p.errf("want a comparison (==, !=, <, <=, >, >=), got %s", p.tok)
}

// duration reads duration("...") in whole milliseconds.
func (p *celParser) duration() (int64, error) {
	if p.tok.kind != tIdent || p.tok.text != "duration" {
		return 0, p.errf("response.duration compares with duration(\"...\"), got %s", p.tok)
	}
	p.next()
	if err := p.expect("("); err != nil {
		return 0, err
	}
	if p.tok.kind != tString {
		return 0, p.errf("want a duration string such as \"500ms\", got %s", p.tok)
	}
	d, err := time.ParseDuration(p.tok.text)
	switch {
	case err != nil:
		return 0, p.errf("invalid duration %q", p.tok.text)
	case d < 0 || d%time.Millisecond != 0:
		return 0, p.errf("duration %q: want a whole, non-negative number of milliseconds", p.tok.text)
	}
	p.next()
	return d.Milliseconds(), p.expect(")")
}
