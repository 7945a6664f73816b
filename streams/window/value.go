package window

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Kind is the type of a Value.
type Kind uint8

// The kinds of Value. The zero Value is KindNull.
const (
	KindNull Kind = iota
	KindNumber
	KindString
	KindBool
	KindTime
)

var kindNames = [...]string{"null", "number", "string", "bool", "time"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a scalar in rule evaluation: a group key, an aggregate's input or
// result, an output column. It is a small struct rather than an interface so
// that the per-event path does not allocate. All numbers are float64. The zero
// Value is NULL (a missing field, an empty aggregate).
type Value struct {
	kind Kind
	num  float64 // KindNumber; KindBool as 0 or 1
	ns   int64   // KindTime: Unix nanoseconds
	str  string  // KindString
}

// Null is the NULL value (the zero Value).
var Null = Value{}

// NumberValue returns a number.
func NumberValue(f float64) Value { return Value{kind: KindNumber, num: f} }

// StringValue returns a string.
func StringValue(s string) Value { return Value{kind: KindString, str: s} }

// BoolValue returns a boolean.
func BoolValue(b bool) Value {
	if b {
		return Value{kind: KindBool, num: 1}
	}
	return Value{kind: KindBool}
}

// TimeValue returns a time, kept with nanosecond precision as Unix time.
func TimeValue(t time.Time) Value { return Value{kind: KindTime, ns: t.UnixNano()} }

// ValueOf converts a payload value: numbers of any Go numeric type and
// json.Number become numbers, strings, bools and time.Time keep their kind.
// Anything else (nil, objects, arrays) is NULL.
func ValueOf(x any) Value {
	switch v := x.(type) {
	case float64:
		return Value{kind: KindNumber, num: v}
	case string:
		return Value{kind: KindString, str: v}
	case bool:
		return BoolValue(v)
	case int:
		return Value{kind: KindNumber, num: float64(v)}
	case int64:
		return Value{kind: KindNumber, num: float64(v)}
	case float32:
		return Value{kind: KindNumber, num: float64(v)}
	case int32:
		return Value{kind: KindNumber, num: float64(v)}
	case int16:
		return Value{kind: KindNumber, num: float64(v)}
	case int8:
		return Value{kind: KindNumber, num: float64(v)}
	case uint:
		return Value{kind: KindNumber, num: float64(v)}
	case uint64:
		return Value{kind: KindNumber, num: float64(v)}
	case uint32:
		return Value{kind: KindNumber, num: float64(v)}
	case uint16:
		return Value{kind: KindNumber, num: float64(v)}
	case uint8:
		return Value{kind: KindNumber, num: float64(v)}
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return Null
		}
		return Value{kind: KindNumber, num: f}
	case time.Time:
		return TimeValue(v)
	case Value:
		return v
	}
	return Null
}

// Kind reports the value's kind.
func (v Value) Kind() Kind { return v.kind }

// IsNull reports whether v is NULL.
func (v Value) IsNull() bool { return v.kind == KindNull }

// Number returns the number and true if v is a number.
func (v Value) Number() (float64, bool) { return v.num, v.kind == KindNumber }

// Str returns the string and true if v is a string.
func (v Value) Str() (string, bool) { return v.str, v.kind == KindString }

// Bool returns the boolean and true if v is a boolean.
func (v Value) Bool() (bool, bool) { return v.num != 0, v.kind == KindBool }

// Time returns the time (in UTC) and true if v is a time.
func (v Value) Time() (time.Time, bool) {
	if v.kind != KindTime {
		return time.Time{}, false
	}
	return time.Unix(0, v.ns).UTC(), true
}

// Any returns v as a plain Go value for output: float64, string, bool,
// time.Time or nil. Numbers that are not finite (NaN, ±Inf) have no JSON form
// and become nil.
func (v Value) Any() any {
	switch v.kind {
	case KindNumber:
		if math.IsNaN(v.num) || math.IsInf(v.num, 0) {
			return nil
		}
		return v.num
	case KindString:
		return v.str
	case KindBool:
		return v.num != 0
	case KindTime:
		return time.Unix(0, v.ns).UTC()
	}
	return nil
}

// Equal reports whether v and w have the same kind and value. Unlike SQL
// equality, NULL equals NULL and NaN equals NaN; it is meant for keys and tests.
func (v Value) Equal(w Value) bool {
	if v.kind != w.kind {
		return false
	}
	switch v.kind {
	case KindNumber:
		return v.num == w.num || (v.num != v.num && w.num != w.num)
	case KindString:
		return v.str == w.str
	case KindBool:
		return v.num == w.num
	case KindTime:
		return v.ns == w.ns
	}
	return true
}

// String formats v for humans and for canonical group keys, as JSON would
// where JSON can: null, true, numbers in the shortest form that round-trips
// (NaN, +Inf, -Inf otherwise), strings JSON-quoted and times as quoted
// RFC 3339 with nanoseconds.
func (v Value) String() string { return string(v.appendCanonical(nil)) }

func (v Value) appendCanonical(b []byte) []byte {
	switch v.kind {
	case KindNumber:
		return appendNumber(b, v.num)
	case KindString:
		q, _ := json.Marshal(v.str) // a string always marshals
		return append(b, q...)
	case KindBool:
		return strconv.AppendBool(b, v.num != 0)
	case KindTime:
		b = append(b, '"')
		b = time.Unix(0, v.ns).UTC().AppendFormat(b, time.RFC3339Nano)
		return append(b, '"')
	}
	return append(b, "null"...)
}

// appendNumber formats like encoding/json: plain digits unless the
// exponent is below -6 or at least 21.
func appendNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendFloat(b, f, 'g', -1, 64)
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if n := len(b); format == 'e' && n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
		b[n-2] = b[n-1] // e-07 → e-7
		b = b[:n-1]
	}
	return b
}

// appendKey appends an injective binary encoding of v, used for the group
// map. Numbers are normalised so that -0 == 0 and all NaNs are one key.
func (v Value) appendKey(b []byte) []byte {
	b = append(b, byte(v.kind))
	switch v.kind {
	case KindNumber:
		f := v.num
		if f == 0 {
			f = 0
		}
		bits := math.Float64bits(f)
		if f != f {
			bits = 0x7ff8000000000001
		}
		return appendU64(b, bits)
	case KindString:
		b = appendUvarint(b, uint64(len(v.str)))
		return append(b, v.str...)
	case KindBool:
		if v.num != 0 {
			return append(b, 1)
		}
		return append(b, 0)
	case KindTime:
		return appendU64(b, uint64(v.ns))
	}
	return b
}

func appendU64(b []byte, x uint64) []byte {
	return append(b, byte(x>>56), byte(x>>48), byte(x>>40), byte(x>>32), byte(x>>24), byte(x>>16), byte(x>>8), byte(x))
}

func appendUvarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}
