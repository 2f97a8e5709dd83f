package accesslog

import (
	"fmt"
	"strconv"
	"time"
)

// %START_TIME(format)%: Envoy's strftime-like formats, compiled once.

type timeKind uint8

const (
	tLiteral timeKind = iota
	tGo               // a Go layout piece
	tEpoch            // %s: seconds since the epoch
	tFrac             // %<n>f / %f: fractional seconds, n digits
	tSecFrac          // %E<n>S: seconds with n fractional digits
)

type timePiece struct {
	kind   timeKind
	text   string // tLiteral: the text; tGo: the layout
	digits int
}

// goLayouts maps strftime conversions to Go layouts.
var goLayouts = map[byte]string{
	'Y': "2006", 'y': "06", 'm': "01", 'd': "02", 'e': "_2", 'H': "15", 'I': "03", 'M': "04", 'S': "05",
	'p': "PM", 'b': "Jan", 'h': "Jan", 'B': "January", 'a': "Mon", 'A': "Monday", 'z': "-0700", 'Z': "MST",
	'j': "002", 'T': "15:04:05", 'F': "2006-01-02", 'D': "01/02/06", 'R': "15:04", 'c': "Mon Jan _2 15:04:05 2006",
}

// parseTimeFormat compiles a strftime format. Times render in UTC, as
// Envoy's.
func parseTimeFormat(f string) ([]timePiece, error) {
	var out []timePiece
	lit := func(s string) {
		if n := len(out); n > 0 && out[n-1].kind == tLiteral {
			out[n-1].text += s
			return
		}
		out = append(out, timePiece{kind: tLiteral, text: s})
	}
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			lit(f[i : i+1])
			continue
		}
		i++
		if i >= len(f) {
			return nil, fmt.Errorf("a trailing %% ends the format")
		}
		c := f[i]
		switch {
		case c == '%':
			lit("%")
		case c == 's':
			out = append(out, timePiece{kind: tEpoch})
		case c == 'f':
			out = append(out, timePiece{kind: tFrac, digits: 9})
		case c >= '1' && c <= '9' && i+1 < len(f) && f[i+1] == 'f':
			out = append(out, timePiece{kind: tFrac, digits: int(c - '0')})
			i++
		case c == 'E' && i+2 < len(f) && f[i+1] >= '1' && f[i+1] <= '9' && f[i+2] == 'S':
			out = append(out, timePiece{kind: tSecFrac, digits: int(f[i+1] - '0')})
			i += 2
		default:
			l, ok := goLayouts[c]
			if !ok {
				return nil, fmt.Errorf("unsupported conversion %%%c (supported: %%Y %%y %%m %%d %%e %%H %%I %%M %%S %%p %%b %%B %%a %%A %%z %%Z %%j %%T %%F %%D %%R %%c %%s %%f %%<n>f %%E<n>S %%%%)", c)
			}
			out = append(out, timePiece{kind: tGo, text: l})
		}
	}
	return out, nil
}

// appendTime renders t in UTC with the compiled format.
func appendTime(dst []byte, t time.Time, f []timePiece) []byte {
	t = t.UTC()
	for _, p := range f {
		switch p.kind {
		case tLiteral:
			dst = append(dst, p.text...)
		case tGo:
			dst = t.AppendFormat(dst, p.text)
		case tEpoch:
			dst = strconv.AppendInt(dst, t.Unix(), 10)
		case tFrac:
			dst = appendFrac(dst, t.Nanosecond(), p.digits)
		case tSecFrac:
			dst = t.AppendFormat(dst, "05")
			dst = append(dst, '.')
			dst = appendFrac(dst, t.Nanosecond(), p.digits)
		}
	}
	return dst
}

// appendFrac appends the first digits digits of ns (nanoseconds, 9 digits).
func appendFrac(dst []byte, ns, digits int) []byte {
	var b [9]byte
	for i := 8; i >= 0; i-- {
		b[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(dst, b[:digits]...)
}

// defaultTimeLayout is %START_TIME% without a format, as Envoy writes it.
const defaultTimeLayout = "2006-01-02T15:04:05.000Z"

// appendStartTime appends t in UTC in defaultTimeLayout, digit by digit
// rather than through time's layout interpreter (this runs once per
// logged request).
func appendStartTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, defaultTimeLayout)
	}
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / 1e6
	b := [24]byte{
		byte('0' + year/1000), byte('0' + year/100%10), byte('0' + year/10%10), byte('0' + year%10), '-',
		byte('0' + month/10), byte('0' + month%10), '-',
		byte('0' + day/10), byte('0' + day%10), 'T',
		byte('0' + hour/10), byte('0' + hour%10), ':',
		byte('0' + minute/10), byte('0' + minute%10), ':',
		byte('0' + sec/10), byte('0' + sec%10), '.',
		byte('0' + ms/100), byte('0' + ms/10%10), byte('0' + ms%10), 'Z',
	}
	return append(dst, b[:]...)
}
