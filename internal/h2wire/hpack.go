package h2wire

import "strconv"

// HPACK encoding, without the dynamic table: every field is a literal
// never added to it (RFC 7541 §6.2.2), its strings unencoded, so writers
// share no encoder state; :status uses the static table.

// AppendStatus appends :status code.
func AppendStatus(b []byte, code int) []byte {
	switch code { // static table entries 8-14
	case 200:
		return append(b, 0x88)
	case 204:
		return append(b, 0x89)
	case 206:
		return append(b, 0x8a)
	case 304:
		return append(b, 0x8b)
	case 400:
		return append(b, 0x8c)
	case 404:
		return append(b, 0x8d)
	case 500:
		return append(b, 0x8e)
	}
	b = append(b, 0x08, 3) // literal without indexing, name :status (index 8)
	return strconv.AppendInt(b, int64(code), 10)
}

// AppendFields appends field k (canonical; sent in lower case) with
// each value; a value's CR, LF and NUL become spaces.
func AppendFields(b []byte, k string, vv []string) []byte {
	for _, v := range vv {
		b = append(b, 0x00) // literal without indexing, new name
		b = AppendInt(b, 7, uint64(len(k)))
		for i := 0; i < len(k); i++ {
			c := k[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
		b = AppendInt(b, 7, uint64(len(v)))
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c == '\r' || c == '\n' || c == 0 {
				c = ' '
			}
			b = append(b, c)
		}
	}
	return b
}

// AppendLiteral appends field name (lower case) with value.
func AppendLiteral(b []byte, name string, value []byte) []byte {
	b = append(b, 0x00)
	b = AppendInt(b, 7, uint64(len(name)))
	b = append(b, name...)
	b = AppendInt(b, 7, uint64(len(value)))
	return append(b, value...)
}

// AppendInt appends an HPACK integer with an n-bit prefix (RFC 7541
// §5.1), the prefix's byte with its upper bits clear: a string length
// without Huffman coding.
func AppendInt(b []byte, n uint, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(b, byte(v))
	}
	b = append(b, byte(limit))
	v -= limit
	for v >= 128 {
		b = append(b, byte(v&0x7f|0x80))
		v >>= 7
	}
	return append(b, byte(v))
}
