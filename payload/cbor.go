package payload

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"
)

// cborReader is a small CBOR (RFC 8949) parser over one string copy of the
// payload, in the spirit of jsonReader: definite-length text strings are
// substrings of that copy. It accepts any well-formed CBOR, including
// indefinite lengths, and reports malformed input as "invalid CBOR: ...".
// Nesting of arrays and maps is limited to MaxDepth.
type cborReader struct {
	s    string
	i    int
	name []byte // flattened name prefix, as in jsonReader
	fs   fieldSet
}

// cborItem is the head of one data item with its scalar value decoded;
// for arrays and maps the reader stands at the first element.
type cborItem struct {
	kind  itemKind
	num   float64 // kindNum
	isInt bool    // kindNum from major type 0 or 1
	i     int64   // the integer, when isInt and it fits
	str   string  // kindText, kindBytes (raw bytes)
	b     bool    // kindBool
	n     uint64  // element count of an array or map
	indef bool    // indefinite-length array or map
	tag   int     // time tag around the item: 0, 1, or -1 for none
}

type itemKind uint8

const (
	kindNone itemKind = iota
	kindNull
	kindBool
	kindNum
	kindText
	kindBytes
	kindArray
	kindMap
	kindOther // only from cborKind: any other type
)

// Tag numbers with a meaning here (RFC 8949 §3.4).
const (
	tagRFC3339      = 0
	tagEpoch        = 1
	tagBignum       = 2
	tagNegBignum    = 3
	tagSelfDescribe = 55799
)

func (r *cborReader) eof() error { return newError("invalid CBOR: unexpected end of input") }

// cborKind returns the kind of the top-level item from its first bytes,
// skipping the self-described CBOR tag, without validating the rest.
func cborKind(b []byte) itemKind {
	for len(b) >= 3 && b[0] == 0xd9 && b[1] == 0xd9 && b[2] == 0xf7 {
		b = b[3:]
	}
	if len(b) == 0 {
		return kindNone
	}
	switch b[0] >> 5 {
	case 4:
		return kindArray
	case 5:
		return kindMap
	}
	return kindOther
}

// head reads the initial byte and argument of an item. For ai 31 (an
// indefinite length or a break) it returns indef.
func (r *cborReader) head() (major byte, arg uint64, indef bool, err error) {
	if r.i >= len(r.s) {
		return 0, 0, false, r.eof()
	}
	start := r.i
	c := r.s[r.i]
	r.i++
	major, ai := c>>5, c&0x1f
	switch {
	case ai < 24:
		return major, uint64(ai), false, nil
	case ai <= 27:
		n := 1 << (ai - 24)
		if len(r.s)-r.i < n {
			return 0, 0, false, r.eof()
		}
		b := r.s[r.i : r.i+n]
		r.i += n
		switch n {
		case 1:
			arg = uint64(b[0])
			if major == 7 && arg < 32 {
				return 0, 0, false, errorf("invalid CBOR: invalid simple value at offset %d", start)
			}
		case 2:
			arg = uint64(binary.BigEndian.Uint16([]byte(b)))
		case 4:
			arg = uint64(binary.BigEndian.Uint32([]byte(b)))
		default:
			arg = binary.BigEndian.Uint64([]byte(b))
		}
		return major, arg, false, nil
	case ai == 31:
		switch major {
		case 2, 3, 4, 5, 7:
			return major, 0, true, nil
		}
	}
	return 0, 0, false, errorf("invalid CBOR: reserved or invalid additional information at offset %d", start)
}

// next reads one data item at nesting level depth. Tags are looked
// through: bignums become numbers, tags 0 and 1 are remembered in
// item.tag, all others are ignored.
func (r *cborReader) next(depth int) (cborItem, error) {
	it := cborItem{tag: -1}
	bignum := -1
	for {
		start := r.i
		major, arg, indef, err := r.head()
		if err != nil {
			return it, err
		}
		switch major {
		case 0:
			it.kind, it.num, it.isInt = kindNum, float64(arg), true
			if arg <= math.MaxInt64 {
				it.i = int64(arg)
			} else {
				it.isInt = false
			}
		case 1:
			// The value is -1-arg; convert it with a single rounding.
			it.kind, it.isInt = kindNum, arg <= math.MaxInt64
			switch {
			case it.isInt:
				it.i = -1 - int64(arg)
				it.num = float64(it.i)
			case arg == math.MaxUint64:
				it.num = -0x1p64
			default:
				it.num = -float64(arg + 1)
			}
		case 2, 3:
			s, err := r.bytes(major, arg, indef)
			if err != nil {
				return it, err
			}
			it.str = s
			if major == 2 {
				it.kind = kindBytes
			} else {
				if !utf8.ValidString(s) {
					return it, errorf("CBOR text string at offset %d is not valid UTF-8", start)
				}
				it.kind = kindText
			}
		case 4, 5:
			if depth > MaxDepth {
				return it, errDepth
			}
			it.kind, it.n, it.indef = kindArray, arg, indef
			if major == 5 {
				it.kind = kindMap
			}
		case 6:
			switch arg {
			case tagRFC3339, tagEpoch:
				it.tag = int(arg)
			case tagBignum, tagNegBignum:
				bignum = int(arg)
			}
			continue
		case 7:
			if indef {
				return it, errorf("invalid CBOR: unexpected break at offset %d", start)
			}
			switch ai := r.s[start] & 0x1f; {
			case ai == 25:
				it.kind, it.num = kindNum, halfToFloat(uint16(arg))
			case ai == 26:
				it.kind, it.num = kindNum, float64(math.Float32frombits(uint32(arg)))
			case ai == 27:
				it.kind, it.num = kindNum, math.Float64frombits(arg)
			case arg == 20 || arg == 21:
				it.kind, it.b = kindBool, arg == 21
			case arg == 22 || arg == 23:
				it.kind = kindNull
			default:
				return it, errorf("unsupported CBOR simple value %d at offset %d", arg, start)
			}
		}
		break
	}
	if bignum >= 0 {
		if it.kind != kindBytes {
			return it, newError("CBOR bignum is not a byte string")
		}
		n := new(big.Int).SetBytes([]byte(it.str))
		if bignum == tagNegBignum {
			n.Neg(n.Add(n, big.NewInt(1))) // -1-n
		}
		f, _ := new(big.Float).SetInt(n).Float64()
		it.kind, it.num, it.str = kindNum, f, ""
	}
	return it, nil
}

// bytes reads the content of a byte or text string whose head was read.
func (r *cborReader) bytes(major byte, n uint64, indef bool) (string, error) {
	if !indef {
		if n > uint64(len(r.s)-r.i) {
			return "", r.eof()
		}
		s := r.s[r.i : r.i+int(n)]
		r.i += int(n)
		return s, nil
	}
	var b strings.Builder
	for {
		if r.i >= len(r.s) {
			return "", r.eof()
		}
		if r.s[r.i] == 0xff {
			r.i++
			return b.String(), nil
		}
		start := r.i
		m, n, indef, err := r.head()
		if err != nil {
			return "", err
		}
		if m != major || indef {
			return "", errorf("invalid CBOR: bad chunk in indefinite-length string at offset %d", start)
		}
		if n > uint64(len(r.s)-r.i) {
			return "", r.eof()
		}
		b.WriteString(r.s[r.i : r.i+int(n)])
		r.i += int(n)
	}
}

// more reports whether the array or map it has another element (for a
// map, another key), k elements having been read; it consumes the break
// of an indefinite-length container.
func (r *cborReader) more(it *cborItem, k uint64) (bool, error) {
	if !it.indef {
		return k < it.n, nil
	}
	if r.i >= len(r.s) {
		return false, r.eof()
	}
	if r.s[r.i] == 0xff {
		r.i++
		return false, nil
	}
	return true, nil
}

// pairValue checks that a map key read from an indefinite-length map is
// followed by a value rather than a break.
func (r *cborReader) pairValue(it *cborItem) error {
	if it.indef && r.i < len(r.s) && r.s[r.i] == 0xff {
		return errorf("invalid CBOR: map key without value at offset %d", r.i)
	}
	return nil
}

// skip consumes the elements of it if it is an array or map.
func (r *cborReader) skip(it cborItem, depth int) error {
	if it.kind != kindArray && it.kind != kindMap {
		return nil
	}
	per := uint64(1)
	if it.kind == kindMap {
		per = 2
	}
	for k := uint64(0); ; k++ {
		more, err := r.more(&it, k)
		if err != nil || !more {
			return err
		}
		for j := uint64(0); j < per; j++ {
			if j == 1 {
				if err := r.pairValue(&it); err != nil {
					return err
				}
			}
			e, err := r.next(depth + 1)
			if err != nil {
				return err
			}
			if err := r.skip(e, depth+1); err != nil {
				return err
			}
		}
	}
}

// end checks that nothing follows the top-level item.
func (r *cborReader) end() error {
	if r.i != len(r.s) {
		return errorf("invalid CBOR: data after the top-level item at offset %d", r.i)
	}
	return nil
}

// halfToFloat decodes an IEEE 754 half-precision float.
func halfToFloat(h uint16) float64 {
	exp, mant := int(h>>10)&0x1f, float64(h&0x3ff)
	var f float64
	switch exp {
	case 0:
		f = math.Ldexp(mant, -24)
	case 31:
		if mant == 0 {
			f = math.Inf(1)
		} else {
			f = math.NaN()
		}
	default:
		f = math.Ldexp(mant+1024, exp-25)
	}
	if h&0x8000 != 0 {
		f = -f
	}
	return f
}

// b64 is how byte strings become text (RFC 8949 §6.1).
var b64 = base64.RawURLEncoding

// value converts it, read at level depth, to a JSON-compatible value.
func (r *cborReader) value(it cborItem, depth int) (any, error) {
	switch it.kind {
	case kindNull:
		return nil, nil
	case kindBool:
		return it.b, nil
	case kindNum:
		if !isFinite(it.num) {
			return nil, errNotFinite
		}
		return it.num, nil
	case kindText:
		return it.str, nil
	case kindBytes:
		return b64.EncodeToString([]byte(it.str)), nil
	case kindArray:
		a := make([]any, 0, min(it.n, 16))
		for k := uint64(0); ; k++ {
			more, err := r.more(&it, k)
			if err != nil {
				return nil, err
			}
			if !more {
				return a, nil
			}
			e, err := r.next(depth + 1)
			if err != nil {
				return nil, err
			}
			v, err := r.value(e, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	}
	return r.object(it, depth)
}

// object converts a map, read at level depth, to a map[string]any.
func (r *cborReader) object(it cborItem, depth int) (map[string]any, error) {
	m := make(map[string]any, min(it.n, 16))
	for k := uint64(0); ; k++ {
		more, err := r.more(&it, k)
		if err != nil {
			return nil, err
		}
		if !more {
			return m, nil
		}
		key, err := r.key(&it, depth)
		if err != nil {
			return nil, err
		}
		e, err := r.next(depth + 1)
		if err != nil {
			return nil, err
		}
		v, err := r.value(e, depth+1)
		if err != nil {
			return nil, err
		}
		if _, dup := m[key]; dup {
			return nil, errorf("key %s: given twice", quoteName(key))
		}
		m[key] = v
	}
}

// key reads a text map key of map it at level depth.
func (r *cborReader) key(it *cborItem, depth int) (string, error) {
	start := r.i
	k, err := r.next(depth + 1)
	if err != nil {
		return "", err
	}
	if k.kind != kindText {
		return "", errorf("CBOR map key at offset %d is not a text string", start)
	}
	return k.str, r.pairValue(it)
}

// decodeObjectCBOR implements DecodeObject for CBOR.
func decodeObjectCBOR(body []byte) (map[string]any, error) {
	if len(body) == 0 {
		return nil, errEmpty
	}
	r := cborReader{s: string(body)}
	it, err := r.next(1)
	if err != nil {
		return nil, err
	}
	if it.kind != kindMap {
		return nil, errNotObject
	}
	m, err := r.object(it, 1)
	if err != nil {
		return nil, err
	}
	return m, r.end()
}

// decodeObjectTelemetryCBOR decodes a CBOR telemetry map.
func decodeObjectTelemetryCBOR(body []byte) ([]Measurement, error) {
	r := cborReader{s: string(body)}
	it, err := r.next(1)
	if err != nil {
		return nil, err
	}
	if it.kind != kindMap {
		return nil, errNotObject
	}
	r.fs.m = make(map[string]any, min(it.n, 16))
	if err := r.fields(it, 1); err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return r.fs.measurements()
}

// fields flattens map it, at level depth, into r.fs.
func (r *cborReader) fields(it cborItem, depth int) error {
	for k := uint64(0); ; k++ {
		more, err := r.more(&it, k)
		if err != nil || !more {
			return err
		}
		start := r.i
		key, err := r.next(depth + 1)
		if err != nil {
			return err
		}
		if key.kind != kindText {
			if len(r.name) > 0 {
				return errorf("field %s: map key at offset %d is not a text string", quoteName(string(r.name[:len(r.name)-1])), start)
			}
			return errorf("CBOR map key at offset %d is not a text string", start)
		}
		if err := r.pairValue(&it); err != nil {
			return err
		}
		v, err := r.next(depth + 1)
		if err != nil {
			return err
		}
		if depth == 1 && key.str == "ts" {
			err = r.ts(&v)
		} else {
			err = r.field(key.str, v, depth)
		}
		if err != nil {
			return err
		}
	}
}

// field adds member k, with value v, of a map at level depth.
func (r *cborReader) field(k string, v cborItem, depth int) error {
	if k == "" {
		return emptyKeyError(r.name)
	}
	switch v.kind {
	case kindNull:
		return nil // skipped, as in JSON
	case kindBool:
		return r.fs.add(fieldName(r.name, k), v.b)
	case kindNum:
		if !isFinite(v.num) {
			return errorf("field %s: not a finite number", quoteName(fieldName(r.name, k)))
		}
		return r.fs.add(fieldName(r.name, k), v.num)
	case kindText:
		return r.fs.add(fieldName(r.name, k), v.str)
	case kindBytes:
		return r.fs.add(fieldName(r.name, k), b64.EncodeToString([]byte(v.str)))
	case kindArray:
		return errorf("field %s: arrays are not supported", quoteName(fieldName(r.name, k)))
	}
	n := len(r.name)
	r.name = append(r.name, k...)
	if len(r.name) > MaxFieldName {
		return errorf("field %s: name longer than %d bytes", quoteName(string(r.name)), MaxFieldName)
	}
	r.name = append(r.name, '.')
	if err := r.fields(v, depth+1); err != nil {
		return err
	}
	r.name = r.name[:n]
	return nil
}

// ts reads the top-level "ts": an RFC 3339 string (tag 0 or untagged),
// epoch seconds (tag 1), or Unix milliseconds (an untagged number).
func (r *cborReader) ts(v *cborItem) error {
	if r.fs.hasTS {
		return errTSDup
	}
	var ok bool
	switch v.kind {
	case kindNull:
		return nil
	case kindText:
		if v.tag != tagEpoch {
			r.fs.ts, ok = timeFromRFC3339(v.str)
		}
	case kindNum:
		switch v.tag {
		case tagEpoch:
			r.fs.ts, ok = timeFromSeconds(v.num)
		case -1:
			r.fs.ts, ok = timeFromMillis(v.num)
		}
	}
	if !ok {
		return errTS
	}
	r.fs.hasTS = true
	return nil
}

// decodeSenMLCBOR decodes a SenML CBOR pack (RFC 8428 §6).
func decodeSenMLCBOR(body []byte, now func() time.Time) ([]Measurement, error) {
	r := cborReader{s: string(body)}
	top, err := r.next(1)
	if err != nil {
		return nil, err
	}
	if top.kind != kindArray {
		return nil, newError("senml: pack must be an array")
	}
	res := senmlResolver{now: now}
	for idx := 0; ; idx++ {
		more, err := r.more(&top, uint64(idx))
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
		rec, err := r.next(2)
		if err != nil {
			return nil, err
		}
		if rec.kind != kindMap {
			return nil, errorf("senml record %d: not a map", idx)
		}
		var sr senmlRecord
		if err := r.senmlRecord(&rec, &sr, idx); err != nil {
			return nil, err
		}
		if err := res.add(&sr, idx); err != nil {
			return nil, err
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return res.measurements()
}

// senmlRecord reads the labels of record map it.
func (r *cborReader) senmlRecord(it *cborItem, rec *senmlRecord, idx int) error {
	for k := uint64(0); ; k++ {
		more, err := r.more(it, k)
		if err != nil || !more {
			return err
		}
		key, err := r.next(3)
		if err != nil {
			return err
		}
		l := -1
		switch {
		case key.kind == kindNum && key.isInt:
			l = labelByCBOR(key.i)
		case key.kind == kindText:
			l = labelByName(key.str)
			if l < 0 {
				if err := unknownLabel(key.str, idx); err != nil {
					return err
				}
			}
		default:
			return errorf("senml record %d: label is neither an integer nor a text string", idx)
		}
		if err := r.pairValue(it); err != nil {
			return err
		}
		v, err := r.next(3)
		if err != nil {
			return err
		}
		if l < 0 {
			if err := r.skip(v, 3); err != nil {
				return err
			}
			continue
		}
		if err := rec.set(l, idx); err != nil {
			return err
		}
		if err := senmlCBORValue(rec, l, &v, idx); err != nil {
			return err
		}
	}
}

// senmlCBORValue stores value v of label l.
func senmlCBORValue(rec *senmlRecord, l int, v *cborItem, idx int) error {
	switch labelKinds[l] {
	case lkNumber:
		if v.kind == kindNum {
			if !isFinite(v.num) {
				return errorf("senml record %d: %q out of range", idx, labelNames[l])
			}
			rec.num[l] = v.num
			return nil
		}
	case lkString:
		if v.kind == kindText {
			rec.str[l] = v.str
			return nil
		}
	case lkBool:
		if v.kind == kindBool {
			rec.bool = v.b
			return nil
		}
	case lkData:
		switch v.kind {
		case kindBytes:
			rec.str[l] = b64.EncodeToString([]byte(v.str))
			return nil
		case kindText:
			if s := trimPadding(v.str); validBase64URL(s) {
				rec.str[l] = s
				return nil
			}
		}
	}
	return labelTypeError(l, idx)
}
