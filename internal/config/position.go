package config

import (
	"fmt"
	"strings"
)

// Position is where something is written in a config file: a 1-based line
// and column. The zero Position means unknown.
type Position struct {
	Line   int `json:"line,omitempty"`
	Column int `json:"column,omitempty"`
}

// IsValid reports whether p points somewhere.
func (p Position) IsValid() bool { return p.Line > 0 }

func (p Position) String() string {
	if !p.IsValid() {
		return "-"
	}
	return fmt.Sprintf("%d:%d", p.Line, p.Column)
}

// Positions maps the field paths of one document ("spec.http[0].timeout",
// "metadata.name") to where their values are written; "" is the start of
// the document. Paths use the fields' JSON names whichever spelling the
// file used. A Positions is immutable once its document is decoded and is
// shared between snapshots.
type Positions map[string]Position

// Lookup returns the position of path, else of its nearest ancestor that
// has one (a missing field is reported where its parent is written), else
// the start of the document.
func (p Positions) Lookup(path string) Position {
	if p == nil {
		return Position{}
	}
	for path != "" {
		if pos, ok := p[path]; ok {
			return pos
		}
		path = parentPath(path)
	}
	return p[""]
}

// parentPath strips the last element of a field path: "a.b[2]" -> "a.b",
// "a.b" -> "a", "a" -> "".
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}
