package payload

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeObject(t *testing.T) {
	cases := []struct {
		name string
		ct   string
		body []byte
		want map[string]any
		err  string
	}{
		{
			name: "JSON",
			ct:   JSON,
			body: []byte(`{"led":"on","level":3,"pos":{"x":1.5,"tags":["a",null,true,[]]},"gone":null,"e":{}}`),
			want: map[string]any{"led": "on", "level": 3.0, "pos": map[string]any{"x": 1.5, "tags": []any{"a", nil, true, []any{}}}, "gone": nil, "e": map[string]any{}},
		},
		{name: "JSON empty", ct: JSON, body: []byte(` {} `), want: map[string]any{}},
		{name: "JSON sniffed", ct: "", body: []byte(`{"a":1}`), want: map[string]any{"a": 1.0}},
		{name: "JSON duplicate", ct: JSON, body: []byte(`{"a":1,"a":2}`), err: `key "a": given twice`},
		{name: "JSON array", ct: JSON, body: []byte(`[{"a":1}]`), err: "not an object"},
		{name: "JSON array sniffed", ct: "", body: []byte(`[{"a":1}]`), err: "not an object"},
		{name: "JSON string", ct: JSON, body: []byte(`"on"`), err: "not an object"},
		{name: "JSON number out of range", ct: JSON, body: []byte(`{"a":[1e500]}`), err: "number out of range at offset 11"},
		{name: "JSON deepest", ct: JSON, body: []byte(`{"a":` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `}`), want: map[string]any{"a": nestedArrays(MaxDepth - 1)}},
		{name: "JSON too deep", ct: JSON, body: []byte(`{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`), err: "nested deeper than 32 levels"},
		{name: "JSON syntax", ct: JSON, body: []byte(`{"a":[1,]}`), err: `invalid JSON: unexpected ']' at offset 8`},
		{name: "JSON trailing", ct: JSON, body: []byte(`{}}`), err: "invalid JSON: data after the top-level value at offset 2"},
		{name: "JSON empty body", ct: JSON, body: nil, err: "empty payload"},
		{
			name: "CBOR",
			ct:   CBOR,
			body: cb("a4 63", raw("led"), "62", raw("on"), "61", raw("b"), "42 01 02", "61", raw("l"), "9f 01 f6 a1 61", raw("x"), "f5 ff", "61", raw("u"), "f7"),
			want: map[string]any{"led": "on", "b": "AQI", "l": []any{1.0, nil, map[string]any{"x": true}}, "u": nil},
		},
		{name: "CBOR sniffed", ct: "", body: cb("a1 61", raw("a"), "01"), want: map[string]any{"a": 1.0}},
		{name: "CBOR content type parameters", ct: "application/cbor; x=y", body: cb("a0"), want: map[string]any{}},
		{name: "CBOR integer key", ct: CBOR, body: cb("a1 01 02"), err: "CBOR map key at offset 1 is not a text string"},
		{name: "CBOR nested integer key", ct: CBOR, body: cb("a1 61", raw("a"), "81 a1 20 02"), err: "CBOR map key at offset 5 is not a text string"},
		{name: "CBOR duplicate", ct: CBOR, body: cb("a2 61", raw("a"), "01 61", raw("a"), "02"), err: `key "a": given twice`},
		{name: "CBOR NaN", ct: CBOR, body: cb("a1 61", raw("a"), "f9 7e 00"), err: "not a finite number"},
		{name: "CBOR array", ct: CBOR, body: cb("80"), err: "not an object"},
		{name: "CBOR too deep", ct: CBOR, body: append(cb("a1 61", raw("a")), append([]byte(strings.Repeat("\x81", MaxDepth)), 0x01)...), err: "nested deeper than 32 levels"},
		{name: "CBOR truncated", ct: CBOR, body: cb("a1 61", raw("a")), err: "invalid CBOR: unexpected end of input"},
		{name: "CBOR empty", ct: CBOR, body: nil, err: "empty payload"},
		{name: "SenML", ct: SenMLJSON, body: []byte(`{}`), err: `unsupported content type "application/senml+json"`},
		{name: "empty sniffed", ct: "", body: []byte(" "), err: "empty payload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeObject(tc.ct, tc.body)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("got %v, want error %q", got, tc.err)
				}
				checkError(t, err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("got error %q, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func nestedArrays(n int) any {
	var v any = []any{}
	for i := 1; i < n; i++ {
		v = []any{v}
	}
	return v
}

// TestDecodeObjectMatchesEncodingJSON compares with encoding/json on
// inputs without duplicate keys.
func TestDecodeObjectMatchesEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"a":1,"b":-0.5e-3,"c":"\u00e9\ud83d\ude00\ud800","d":[true,false,null,{"e":[]}],"f":{}}`,
		"{\"x\":\"\xff\xfe\xc3\"}",
		`{"big":123456789012345678901234567890,"small":1e-320}`,
	} {
		got, err := DecodeObject(JSON, []byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var want map[string]any
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v, want %#v", in, got, want)
		}
	}
}
