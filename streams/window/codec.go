package window

import (
	"encoding/binary"
	"math"
)

// Binary helpers for snapshots: big-endian fixed-width integers and floats,
// unsigned varints for counts and lengths.

func appendF64(b []byte, f float64) []byte { return appendU64(b, math.Float64bits(f)) }

func appendI64(b []byte, x int64) []byte { return appendU64(b, uint64(x)) }

func appendString(b []byte, s string) []byte {
	b = appendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValue(b []byte, v Value) []byte {
	b = append(b, byte(v.kind))
	switch v.kind {
	case KindNumber, KindBool:
		b = appendF64(b, v.num)
	case KindString:
		b = appendString(b, v.str)
	case KindTime:
		b = appendI64(b, v.ns)
	}
	return b
}

func readByte(b []byte) (byte, []byte, error) {
	if len(b) < 1 {
		return 0, b, errCorrupt
	}
	return b[0], b[1:], nil
}

func readU64(b []byte) (uint64, []byte, error) {
	if len(b) < 8 {
		return 0, b, errCorrupt
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}

func readI64(b []byte) (int64, []byte, error) {
	x, b, err := readU64(b)
	return int64(x), b, err
}

func readF64(b []byte) (float64, []byte, error) {
	x, b, err := readU64(b)
	return math.Float64frombits(x), b, err
}

func readUvarint(b []byte) (uint64, []byte, error) {
	x, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, errCorrupt
	}
	return x, b[n:], nil
}

func readString(b []byte) (string, []byte, error) {
	n, b, err := readUvarint(b)
	if err != nil {
		return "", b, err
	}
	if n > uint64(len(b)) {
		return "", b, errCorrupt
	}
	return string(b[:n]), b[n:], nil
}

func readValue(b []byte) (Value, []byte, error) {
	k, b, err := readByte(b)
	if err != nil {
		return Null, b, err
	}
	v := Value{kind: Kind(k)}
	switch v.kind {
	case KindNull:
	case KindNumber, KindBool:
		v.num, b, err = readF64(b)
	case KindString:
		v.str, b, err = readString(b)
	case KindTime:
		v.ns, b, err = readI64(b)
	default:
		return Null, b, errCorrupt
	}
	return v, b, err
}
