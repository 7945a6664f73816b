package payload

import (
	"bytes"
	"testing"
	"time"
)

// nestedCBOR returns n maps nested in each other under key "a", around 1.
func nestedCBOR(n int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, 0xa1, 0x61, 'a')
	}
	return append(b, 0x01)
}

func TestDecodeTelemetryCBORObject(t *testing.T) {
	zero := time.Time{}
	cases := []struct {
		name string
		ct   string
		body []byte
		want []Measurement
		err  string
	}{
		{
			name: "flat",
			ct:   CBOR,
			body: cb("a4",
				"6b", raw("temperature"), "f9 4d 60", // half float 21.5
				"64", raw("door"), "f4",
				"62", raw("fw"), "63", raw("1.2"),
				"63", raw("cnt"), "18 28"), // 40
			want: []Measurement{m(zero, "temperature", 21.5, "door", false, "fw", "1.2", "cnt", 40.0)},
		},
		{
			name: "numbers",
			ct:   CBOR,
			body: cb("a5",
				"61", raw("a"), "38 63", // -100
				"61", raw("b"), "fa 3f c0 00 00", // float32 1.5
				"61", raw("c"), "1b ff ff ff ff ff ff ff ff", // 2^64-1
				"61", raw("d"), "c2 49 01 00 00 00 00 00 00 00 00", // bignum 2^64
				"61", raw("e"), "c3 41 00"), // negative bignum -1
			want: []Measurement{m(zero, "a", -100.0, "b", 1.5, "c", 18446744073709551615.0, "d", 18446744073709551616.0, "e", -1.0)},
		},
		{
			name: "ts milliseconds",
			ct:   CBOR,
			body: cb("a2 62", raw("ts"), "1b 00 00 01 8b cf e5 68 00", "61", raw("a"), "01"),
			want: []Measurement{m(unixMilli(1700000000000), "a", 1.0)},
		},
		{
			name: "ts tag 1 seconds",
			ct:   CBOR,
			body: cb("a2 62", raw("ts"), "c1 1a 65 53 f1 00", "61", raw("a"), "01"),
			want: []Measurement{m(unixMilli(1700000000000), "a", 1.0)},
		},
		{
			name: "ts tag 1 float seconds",
			ct:   CBOR,
			body: cb("a2 62", raw("ts"), "c1 fb 41 d9 54 fc 40 00 00 00", "61", raw("a"), "01"), // 1700000000.0
			want: []Measurement{m(unixMilli(1700000000000), "a", 1.0)},
		},
		{
			name: "ts tag 0",
			ct:   CBOR,
			body: cb("a2 62", raw("ts"), "c0 74", raw("2023-11-14T22:13:20Z"), "61", raw("a"), "01"),
			want: []Measurement{m(unixMilli(1700000000000), "a", 1.0)},
		},
		{
			name: "ts untagged text",
			ct:   CBOR,
			body: cb("a2 62", raw("ts"), "74", raw("2023-11-14T22:13:20Z"), "61", raw("a"), "01"),
			want: []Measurement{m(unixMilli(1700000000000), "a", 1.0)},
		},
		{name: "ts undefined", ct: CBOR, body: cb("a2 62", raw("ts"), "f7 61", raw("a"), "01"), want: []Measurement{m(zero, "a", 1.0)}},
		{name: "ts bytes", ct: CBOR, body: cb("a2 62", raw("ts"), "41 00 61", raw("a"), "01"), err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts map", ct: CBOR, body: cb("a2 62", raw("ts"), "a0 61", raw("a"), "01"), err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts tag 1 on text", ct: CBOR, body: cb("a2 62", raw("ts"), "c1 61", raw("1"), "61", raw("a"), "01"), err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts twice", ct: CBOR, body: cb("a3 62", raw("ts"), "01 61", raw("a"), "01 62", raw("ts"), "02"), err: "ts: given twice"},
		{
			name: "nested, bytes, tags, null and undefined",
			ct:   CBOR,
			body: cb("a5",
				"63", raw("env"), "a2 62", raw("rh"), "18 28 61", raw("t"), "f9 4d 60",
				"63", raw("raw"), "42 01 02",
				"63", raw("uri"), "d8 20 63", raw("x:y"), // tag 32 ignored
				"61", raw("n"), "f6",
				"61", raw("u"), "f7"),
			want: []Measurement{m(zero, "env.rh", 40.0, "env.t", 21.5, "raw", "AQI", "uri", "x:y")},
		},
		{
			name: "indefinite lengths",
			ct:   CBOR,
			body: cb("bf 7f 61", raw("a"), "61", raw("b"), "ff 5f 41 01 41 02 ff ff"),
			want: []Measurement{m(zero, "ab", "AQI")},
		},
		{name: "self-described", ct: "", body: cb("d9 d9 f7 a1 61", raw("a"), "01"), want: []Measurement{m(zero, "a", 1.0)}},
		{name: "sniffed", ct: "", body: cb("a1 61", raw("a"), "f5"), want: []Measurement{m(zero, "a", true)}},
		{name: "deepest nesting", ct: CBOR, body: nestedCBOR(MaxDepth), want: []Measurement{m(zero, "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", 1.0)}},
		{name: "too deep", ct: CBOR, body: nestedCBOR(MaxDepth + 1), err: "nested deeper than 32 levels"},
		{name: "array", ct: CBOR, body: cb("a1 61", raw("a"), "82 01 02"), err: `field "a": arrays are not supported`},
		{name: "integer key", ct: CBOR, body: cb("a1 01 02"), err: "CBOR map key at offset 1 is not a text string"},
		{name: "nested integer key", ct: CBOR, body: cb("a1 61", raw("a"), "a1 01 02"), err: `field "a": map key at offset 4 is not a text string`},
		{name: "NaN", ct: CBOR, body: cb("a1 61", raw("a"), "f9 7e 00"), err: `field "a": not a finite number`},
		{name: "infinity", ct: CBOR, body: cb("a1 61", raw("a"), "fa 7f 80 00 00"), err: `field "a": not a finite number`},
		{name: "huge bignum", ct: CBOR, body: append(cb("a1 61", raw("a"), "c2 59 01 00"), bytes.Repeat([]byte{0xff}, 256)...), err: `field "a": not a finite number`},
		{name: "half float that looks like a simple value", ct: CBOR, body: cb("a2 61", raw("a"), "f9 00 14 61", raw("b"), "f9 00 16"), want: []Measurement{m(zero, "a", 20*0x1p-24, "b", 22*0x1p-24)}},
		{name: "most negative integers", ct: CBOR, body: cb("a3 61", raw("a"), "3b 00 20 00 00 00 00 00 01 61", raw("b"), "3b ff ff ff ff ff ff ff ff 61", raw("c"), "c3 48 00 20 00 00 00 00 00 01"), want: []Measurement{m(zero, "a", -9007199254740994.0, "b", -0x1p64, "c", -9007199254740994.0)}},
		{name: "bignum of text", ct: CBOR, body: cb("a1 61", raw("a"), "c2 61", raw("1")), err: "CBOR bignum is not a byte string"},
		{name: "duplicate", ct: CBOR, body: cb("a2 61", raw("a"), "01 61", raw("a"), "02"), err: `field "a": given twice`},
		{name: "empty key", ct: CBOR, body: cb("a1 60 01"), err: `field "": empty name`},
		{name: "control character", ct: CBOR, body: cb("a1 61 00 01"), err: `field "\x00": control character in name`},
		{name: "empty map", ct: CBOR, body: cb("a0"), err: "no fields"},
		{name: "simple value", ct: CBOR, body: cb("a1 61", raw("a"), "e0"), err: "unsupported CBOR simple value 0 at offset 3"},
		{name: "invalid UTF-8", ct: CBOR, body: cb("a1 61", raw("a"), "61 ff"), err: "CBOR text string at offset 3 is not valid UTF-8"},
		{name: "truncated", ct: CBOR, body: cb("a2 61", raw("a"), "01"), err: "invalid CBOR: unexpected end of input"},
		{name: "truncated string", ct: CBOR, body: cb("a1 61", raw("a"), "7b 00 00 00 00 ff ff ff ff", raw("abc")), err: "invalid CBOR: unexpected end of input"},
		{name: "huge map count", ct: CBOR, body: cb("bb ff ff ff ff ff ff ff ff 61", raw("a"), "01"), err: "invalid CBOR: unexpected end of input"},
		{name: "data after map", ct: CBOR, body: cb("a1 61", raw("a"), "01 00"), err: "invalid CBOR: data after the top-level item at offset 4"},
		{name: "reserved additional information", ct: CBOR, body: cb("a1 61", raw("a"), "1c"), err: "invalid CBOR: reserved or invalid additional information at offset 3"},
		{name: "indefinite integer", ct: CBOR, body: cb("a1 61", raw("a"), "1f"), err: "invalid CBOR: reserved or invalid additional information at offset 3"},
		{name: "stray break", ct: CBOR, body: cb("a1 61", raw("a"), "ff"), err: "invalid CBOR: unexpected break at offset 3"},
		{name: "bad chunk", ct: CBOR, body: cb("a1 61", raw("a"), "7f 41 00 ff"), err: "invalid CBOR: bad chunk in indefinite-length string at offset 4"},
		{name: "two-byte simple value below 32", ct: CBOR, body: cb("a1 61", raw("a"), "f8 14"), err: "invalid CBOR: invalid simple value at offset 3"},
		{name: "not a map", ct: CBOR, body: cb("01"), err: "not an object"},
		{name: "empty", ct: CBOR, body: nil, err: "empty payload"},
		{name: "sniffed integer", ct: "", body: cb("01"), err: "unrecognized payload: want a JSON object, a SenML JSON array, or a CBOR map or array"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTelemetry(tc.ct, tc.body, fixedNow)
			checkResult(t, got, err, tc.want, tc.err)
			if err == nil {
				checkInvariants(t, got)
			}
		})
	}
}
