package payload

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonReader is a small JSON parser over one string copy of the payload.
// Strings without escapes are returned as substrings of that copy, so a
// typical telemetry object costs one allocation for all its names and
// string values. The grammar is RFC 8259; invalid UTF-8 inside strings is
// replaced by U+FFFD and numbers are parsed as float64, both as
// encoding/json does.
type jsonReader struct {
	s    string
	i    int
	buf  []byte // unescaped string scratch
	name []byte // flattened name prefix, "a.b." while inside "a":{"b":{...}}
	fs   fieldSet
}

func newJSONReader(body []byte) *jsonReader {
	return &jsonReader{s: string(body)}
}

func (r *jsonReader) ws() {
	for r.i < len(r.s) {
		switch r.s[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end of input.
func (r *jsonReader) peek() byte {
	if r.i < len(r.s) {
		return r.s[r.i]
	}
	return 0
}

// syntaxErr describes the unexpected byte at the current offset.
func (r *jsonReader) syntaxErr() error {
	return r.syntaxErrAt(r.i)
}

func (r *jsonReader) syntaxErrAt(i int) error {
	if i >= len(r.s) {
		return newError("invalid JSON: unexpected end of input")
	}
	c := r.s[i]
	if c >= 0x20 && c < 0x7f {
		return errorf("invalid JSON: unexpected %q at offset %d", rune(c), i)
	}
	return errorf("invalid JSON: unexpected byte 0x%02x at offset %d", c, i)
}

// end checks that only white space follows.
func (r *jsonReader) end() error {
	r.ws()
	if r.i != len(r.s) {
		return errorf("invalid JSON: data after the top-level value at offset %d", r.i)
	}
	return nil
}

// literal consumes true, false or null.
func (r *jsonReader) literal(lit string) error {
	if len(r.s)-r.i >= len(lit) && r.s[r.i:r.i+len(lit)] == lit {
		r.i += len(lit)
		return nil
	}
	// Point at the first byte that differs.
	i := r.i
	for j := 0; j < len(lit) && i < len(r.s) && r.s[i] == lit[j]; j++ {
		i++
	}
	return r.syntaxErrAt(i)
}

// boolean consumes true or false; the next byte is 't' or 'f'.
func (r *jsonReader) boolean() (bool, error) {
	if r.s[r.i] == 't' {
		return true, r.literal("true")
	}
	return false, r.literal("false")
}

// errRange is returned by num for a well-formed number that float64 cannot
// hold; callers turn it into an error naming the field.
var errRange = newError("number out of range")

// num consumes a number. The next byte is '-' or a digit.
//
// Numbers of at most 15 significant digits without exponent, the usual
// sensor reading, are converted here: the digits are exact in a float64,
// and so is a power of ten up to 1e22, so one division rounds correctly
// (Clinger's fast path). Others go to strconv.ParseFloat.
func (r *jsonReader) num() (float64, error) {
	s, start := r.s, r.i
	i := start
	neg := false
	if s[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	digits, frac := 0, 0
	switch {
	case i >= len(s):
		return 0, r.syntaxErrAt(i)
	case s[i] == '0':
		i++
	case s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if digits < 19 {
				mant = mant*10 + uint64(s[i]-'0')
			}
			digits++
			i++
		}
	default:
		return 0, r.syntaxErrAt(i)
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return 0, r.syntaxErrAt(i)
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if digits < 19 {
				mant = mant*10 + uint64(s[i]-'0')
			}
			if digits > 0 || s[i] != '0' {
				digits++
			}
			frac++
			i++
		}
	}
	exp := false
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		exp = true
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return 0, r.syntaxErrAt(i)
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	r.i = i
	if !exp && digits <= 15 && frac < len(pow10) {
		f := float64(mant) / pow10[frac]
		if neg {
			f = -f
		}
		return f, nil
	}
	f, err := strconv.ParseFloat(s[start:i], 64)
	if err != nil {
		return 0, errRange
	}
	return f, nil
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

func isNumStart(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// str consumes a string; the next byte is '"'.
func (r *jsonReader) str() (string, error) {
	s := r.s
	start := r.i + 1
	i := start
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			r.i = i + 1
			return s[start:i], nil
		case c == '\\' || c < 0x20:
			return r.strSlow(start, i)
		case c < utf8.RuneSelf:
			i++
		default:
			ru, size := utf8.DecodeRuneInString(s[i:])
			if ru == utf8.RuneError && size == 1 {
				return r.strSlow(start, i)
			}
			i += size
		}
	}
	return "", r.syntaxErrAt(i)
}

// strSlow finishes a string that has escapes, control characters or
// invalid UTF-8 from offset i on; s[start:i] is plain.
func (r *jsonReader) strSlow(start, i int) (string, error) {
	s := r.s
	b := append(r.buf[:0], s[start:i]...)
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			r.i = i + 1
			r.buf = b
			return string(b), nil
		case c < 0x20:
			return "", errorf("invalid JSON: control character in string at offset %d", i)
		case c == '\\':
			if i+1 >= len(s) {
				return "", r.syntaxErrAt(i + 1)
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				ru := hex4(s, i+2)
				if ru < 0 {
					return "", errorf("invalid JSON: invalid \\u escape at offset %d", i)
				}
				i += 6
				if utf16.IsSurrogate(ru) {
					// A valid pair is consumed whole; a lone surrogate
					// becomes U+FFFD, as in encoding/json.
					if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						if lo := hex4(s, i+2); lo >= 0 {
							if dec := utf16.DecodeRune(ru, lo); dec != utf8.RuneError {
								b = utf8.AppendRune(b, dec)
								i += 6
								continue
							}
						}
					}
					ru = utf8.RuneError
				}
				b = utf8.AppendRune(b, ru)
				continue
			default:
				return "", errorf("invalid JSON: invalid escape at offset %d", i)
			}
			i += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			ru, size := utf8.DecodeRuneInString(s[i:])
			if ru == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
		}
	}
	r.buf = b
	return "", r.syntaxErrAt(i)
}

// hex4 decodes 4 hex digits at s[i:], or returns -1.
func hex4(s string, i int) rune {
	if i+4 > len(s) {
		return -1
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// colon consumes white space, ':' and white space after an object key.
func (r *jsonReader) colon() error {
	r.ws()
	if r.peek() != ':' {
		return r.syntaxErr()
	}
	r.i++
	r.ws()
	return nil
}

// next consumes the ',' or closing byte after a member or element. It
// reports whether another member follows.
func (r *jsonReader) next(closing byte) (bool, error) {
	r.ws()
	switch r.peek() {
	case ',':
		r.i++
		r.ws()
		return true, nil
	case closing:
		r.i++
		return false, nil
	}
	return false, r.syntaxErr()
}

// open consumes the '{' or '[' of a container at nesting level depth and
// reports whether it has members.
func (r *jsonReader) open(depth int, closing byte) (bool, error) {
	if depth > MaxDepth {
		return false, errDepth
	}
	r.i++
	r.ws()
	if r.peek() == closing {
		r.i++
		return false, nil
	}
	return true, nil
}

// key consumes a member name and the colon after it.
func (r *jsonReader) key() (string, error) {
	if r.peek() != '"' {
		return "", r.syntaxErr()
	}
	k, err := r.str()
	if err != nil {
		return "", err
	}
	return k, r.colon()
}

// value consumes any value, returning it as encoding/json would into an
// interface{}, except that duplicate keys are an error.
func (r *jsonReader) value(depth int) (any, error) {
	switch c := r.peek(); {
	case c == '{':
		return r.object(depth)
	case c == '[':
		more, err := r.open(depth, ']')
		if err != nil {
			return nil, err
		}
		a := []any{}
		for more {
			v, err := r.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			if more, err = r.next(']'); err != nil {
				return nil, err
			}
		}
		return a, nil
	case c == '"':
		return r.str()
	case c == 't' || c == 'f':
		return r.boolean()
	case c == 'n':
		return nil, r.literal("null")
	case isNumStart(c):
		f, err := r.num()
		if err == errRange {
			return nil, errorf("number out of range at offset %d", r.i)
		}
		return f, err
	}
	return nil, r.syntaxErr()
}

// object consumes an object; the next byte is '{'.
func (r *jsonReader) object(depth int) (map[string]any, error) {
	more, err := r.open(depth, '}')
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	for more {
		k, err := r.key()
		if err != nil {
			return nil, err
		}
		v, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, errorf("key %s: given twice", quoteName(k))
		}
		m[k] = v
		if more, err = r.next('}'); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// skip consumes any value without keeping it.
func (r *jsonReader) skip(depth int) error {
	switch c := r.peek(); {
	case c == '{' || c == '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		more, err := r.open(depth, closing)
		if err != nil {
			return err
		}
		for more {
			if c == '{' {
				if _, err := r.key(); err != nil {
					return err
				}
			}
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			if more, err = r.next(closing); err != nil {
				return err
			}
		}
		return nil
	case c == '"':
		_, err := r.str()
		return err
	case c == 't' || c == 'f':
		_, err := r.boolean()
		return err
	case c == 'n':
		return r.literal("null")
	case isNumStart(c):
		_, err := r.num()
		if err == errRange {
			err = nil
		}
		return err
	}
	return r.syntaxErr()
}

// decodeObjectJSON implements DecodeObject for JSON.
func decodeObjectJSON(body []byte) (map[string]any, error) {
	r := newJSONReader(body)
	r.ws()
	switch r.peek() {
	case '{':
	case 0:
		return nil, errEmpty
	default:
		return nil, errNotObject
	}
	m, err := r.object(1)
	if err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeObjectTelemetryJSON decodes a JSON telemetry object.
func decodeObjectTelemetryJSON(body []byte) ([]Measurement, error) {
	r := jsonReader{s: string(body)}
	r.ws()
	if r.peek() != '{' {
		return nil, errNotObject
	}
	r.fs.m = make(map[string]any, mapSizeHint(body))
	if err := r.fields(1); err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return r.fs.measurements()
}

// fields flattens the object at the current offset into r.fs, with r.name
// holding the dotted prefix of its members.
func (r *jsonReader) fields(depth int) error {
	more, err := r.open(depth, '}')
	if err != nil {
		return err
	}
	for more {
		k, err := r.key()
		if err != nil {
			return err
		}
		if depth == 1 && k == "ts" {
			if err := r.ts(); err != nil {
				return err
			}
		} else if err := r.field(k, depth); err != nil {
			return err
		}
		if more, err = r.next('}'); err != nil {
			return err
		}
	}
	return nil
}

// field consumes the value of member k of an object at level depth.
func (r *jsonReader) field(k string, depth int) error {
	if k == "" {
		return emptyKeyError(r.name)
	}
	switch c := r.peek(); {
	case c == '"':
		s, err := r.str()
		if err != nil {
			return err
		}
		return r.fs.add(fieldName(r.name, k), s)
	case isNumStart(c):
		f, err := r.num()
		if err == errRange {
			return errorf("field %s: number out of range", quoteName(fieldName(r.name, k)))
		}
		if err != nil {
			return err
		}
		return r.fs.add(fieldName(r.name, k), f)
	case c == 't' || c == 'f':
		b, err := r.boolean()
		if err != nil {
			return err
		}
		return r.fs.add(fieldName(r.name, k), b)
	case c == 'n':
		// Null fields are skipped: a sensor that could not be read does
		// not void the others.
		return r.literal("null")
	case c == '{':
		n := len(r.name)
		r.name = append(r.name, k...)
		if len(r.name) > MaxFieldName {
			return errorf("field %s: name longer than %d bytes", quoteName(string(r.name)), MaxFieldName)
		}
		r.name = append(r.name, '.')
		if err := r.fields(depth + 1); err != nil {
			return err
		}
		r.name = r.name[:n]
		return nil
	case c == '[':
		return errorf("field %s: arrays are not supported", quoteName(fieldName(r.name, k)))
	}
	return r.syntaxErr()
}

// ts consumes the top-level "ts" member.
func (r *jsonReader) ts() error {
	if r.fs.hasTS {
		return errTSDup
	}
	var ok bool
	switch c := r.peek(); {
	case c == '"':
		s, err := r.str()
		if err != nil {
			return err
		}
		r.fs.ts, ok = timeFromRFC3339(s)
	case isNumStart(c):
		ms, err := r.num()
		if err != nil && err != errRange {
			return err
		}
		r.fs.ts, ok = timeFromMillis(ms)
		ok = ok && err == nil
	case c == 'n':
		// "ts": null is the same as no ts.
		return r.literal("null")
	default:
		if err := r.skip(2); err != nil {
			return err
		}
	}
	if !ok {
		return errTS
	}
	r.fs.hasTS = true
	return nil
}
