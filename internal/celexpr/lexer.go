// Package celexpr reads the subsets of CEL (the Common Expression Language)
// that Istio's Telemetry API carries and Weft implements without a CEL
// interpreter: its lexer is shared with the access-log filter parser of
// internal/config, and its Value expressions compute a metric label from a
// request's attributes (Telemetry metrics tagOverrides). The control plane
// parses a Value to validate it; the proxy parses it again from the xDS
// it receives and evaluates it per request. It imports nothing of Istio,
// so the lean proxy can link it.
package celexpr

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the kind of a Token.
type Kind int

// Token kinds.
const (
	EOF Kind = iota
	Ident
	Int
	String
	Op // == != ! < <= > >= && || ( ) [ ] . , + ? :
)

// Token is one lexical token of an expression.
type Token struct {
	Kind Kind
	Text string // the identifier, digits, operator, or the string's value (unquoted)
	Pos  int    // 0-based byte offset in the source
}

func (t Token) String() string {
	switch t.Kind {
	case EOF:
		return "end of expression"
	case String:
		return strconv.Quote(t.Text)
	}
	return fmt.Sprintf("%q", t.Text)
}

// ops are the operators, longest first where one is a prefix of another.
var ops = []string{"==", "!=", "!", "<=", ">=", "&&", "||", "<", ">", "(", ")", "[", "]", ".", ",", "+", "?", ":"}

// Lexer splits an expression into tokens: Tok is the current one. A
// lexical error (an unterminated string, an unknown character) is kept in
// Err and reported by the next Errf, so parsers check for it where they
// report errors anyway.
type Lexer struct {
	Src string
	Tok Token
	Err error
	i   int
}

// NewLexer returns a lexer on src with its first token read.
func NewLexer(src string) *Lexer {
	l := &Lexer{Src: src}
	l.Next()
	return l
}

// Errf returns an error at the current token's column (1-based), or the
// pending lexical error.
func (l *Lexer) Errf(format string, args ...any) error {
	if l.Err != nil {
		return l.Err
	}
	return fmt.Errorf("column %d: %s", l.Tok.Pos+1, fmt.Sprintf(format, args...))
}

// IsOp reports whether the current token is the operator op.
func (l *Lexer) IsOp(op string) bool { return l.Tok.Kind == Op && l.Tok.Text == op }

// IsIdent reports whether the current token is the identifier name.
func (l *Lexer) IsIdent(name string) bool { return l.Tok.Kind == Ident && l.Tok.Text == name }

// Expect consumes the operator op, or returns an error saying what came
// instead.
func (l *Lexer) Expect(op string) error {
	if !l.IsOp(op) {
		return l.Errf("want %q, got %s", op, l.Tok)
	}
	l.Next()
	return nil
}

// Next reads the next token into Tok.
func (l *Lexer) Next() {
	for l.i < len(l.Src) && strings.IndexByte(" \t\r\n", l.Src[l.i]) >= 0 {
		l.i++
	}
	start := l.i
	if l.i >= len(l.Src) {
		l.Tok = Token{Kind: EOF, Pos: start}
		return
	}
	c := l.Src[l.i]
	switch {
	case isIdentByte(c) && (c < '0' || c > '9'):
		for l.i < len(l.Src) && isIdentByte(l.Src[l.i]) {
			l.i++
		}
		l.Tok = Token{Kind: Ident, Text: l.Src[start:l.i], Pos: start}
	case c >= '0' && c <= '9':
		for l.i < len(l.Src) && l.Src[l.i] >= '0' && l.Src[l.i] <= '9' {
			l.i++
		}
		l.Tok = Token{Kind: Int, Text: l.Src[start:l.i], Pos: start}
	case c == '\'' || c == '"':
		l.quoted(start, c)
	default:
		for _, op := range ops {
			if strings.HasPrefix(l.Src[l.i:], op) {
				l.i += len(op)
				l.Tok = Token{Kind: Op, Text: op, Pos: start}
				return
			}
		}
		l.fail(start, fmt.Errorf("column %d: unexpected character %q", start+1, c))
	}
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// quoted reads a string quoted with q, which starts at start.
func (l *Lexer) quoted(start int, q byte) {
	l.i++
	var b strings.Builder
	for {
		if l.i >= len(l.Src) {
			l.fail(l.i, fmt.Errorf("column %d: unterminated string", start+1))
			return
		}
		ch := l.Src[l.i]
		if ch == q {
			l.i++
			break
		}
		if ch == '\\' {
			if l.i+1 >= len(l.Src) || strings.IndexByte(`\'"`, l.Src[l.i+1]) < 0 {
				l.fail(l.i, fmt.Errorf("column %d: only \\\\, \\' and \\\" escapes are supported in strings", l.i+1))
				return
			}
			l.i++
			ch = l.Src[l.i]
		}
		b.WriteByte(ch)
		l.i++
	}
	l.Tok = Token{Kind: String, Text: b.String(), Pos: start}
}

// fail records a lexical error and ends the token stream.
func (l *Lexer) fail(pos int, err error) {
	l.Err = err
	l.Tok = Token{Kind: EOF, Pos: pos}
}
