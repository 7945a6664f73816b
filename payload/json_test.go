package payload

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

type telemetryCase struct {
	name string
	ct   string
	body string
	want []Measurement
	err  string
}

func runTelemetryCases(t *testing.T, cases []telemetryCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTelemetry(tc.ct, []byte(tc.body), fixedNow)
			checkResult(t, got, err, tc.want, tc.err)
			if err == nil {
				checkInvariants(t, got)
			}
		})
	}
}

// nestedJSON returns n objects nested in each other around "a":1.
func nestedJSON(n int) string {
	return strings.Repeat(`{"a":`, n-1) + `{"a":1}` + strings.Repeat(`}`, n-1)
}

func manyFieldsJSON(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"f` + itoa(i) + `":1`)
	}
	b.WriteByte('}')
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

// manyFields is the measurement manyFieldsJSON(n) gives.
func manyFields(n int) []Measurement {
	f := make(map[string]any, n)
	for i := 0; i < n; i++ {
		f["f"+itoa(i)] = 1.0
	}
	return []Measurement{{Fields: f}}
}

func TestDecodeTelemetryJSONObject(t *testing.T) {
	zero := time.Time{}
	long := strings.Repeat("x", MaxFieldName)
	runTelemetryCases(t, []telemetryCase{
		{
			name: "flat",
			ct:   JSON,
			body: `{"temperature":21.5,"humidity":40,"door":false,"fw":"1.2.3"}`,
			want: []Measurement{m(zero, "temperature", 21.5, "humidity", 40.0, "door", false, "fw", "1.2.3")},
		},
		{
			name: "integers become float64",
			ct:   JSON,
			body: `{"count":3,"neg":-7,"big":12345678901234567890,"exp":1e3,"zero":-0}`,
			want: []Measurement{m(zero, "count", 3.0, "neg", -7.0, "big", 12345678901234567890.0, "exp", 1000.0, "zero", 0.0)},
		},
		{
			name: "ts milliseconds",
			ct:   JSON,
			body: `{"temperature":21.5,"ts":1700000000000}`,
			want: []Measurement{m(unixMilli(1700000000000), "temperature", 21.5)},
		},
		{
			name: "ts fractional milliseconds",
			ct:   JSON,
			body: `{"a":1,"ts":1700000000000.25}`,
			want: []Measurement{m(unixMilli(1700000000000).Add(250*time.Microsecond), "a", 1.0)},
		},
		{
			name: "ts RFC 3339 with offset",
			ct:   JSON,
			body: `{"ts":"2023-11-14T23:13:20+01:00","a":1}`,
			want: []Measurement{m(time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC), "a", 1.0)},
		},
		{
			name: "ts RFC 3339 nanoseconds",
			ct:   JSON,
			body: `{"ts":"2023-11-14T22:13:20.123456789Z","a":1}`,
			want: []Measurement{m(time.Date(2023, 11, 14, 22, 13, 20, 123456789, time.UTC), "a", 1.0)},
		},
		{name: "ts null", ct: JSON, body: `{"ts":null,"a":1}`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "ts zero", ct: JSON, body: `{"ts":0,"a":1}`, want: []Measurement{m(time.Unix(0, 0).UTC(), "a", 1.0)}},
		{name: "ts not a time", ct: JSON, body: `{"ts":"yesterday","a":1}`, err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts date only", ct: JSON, body: `{"ts":"2023-11-14","a":1}`, err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts bool", ct: JSON, body: `{"ts":true,"a":1}`, err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts object", ct: JSON, body: `{"ts":{"ms":1},"a":1}`, err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts after year 9999", ct: JSON, body: `{"ts":253402300800000,"a":1}`, err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts out of float range", ct: JSON, body: `{"ts":1e999,"a":1}`, err: "ts: not RFC 3339 or Unix milliseconds"},
		{name: "ts twice", ct: JSON, body: `{"ts":1,"a":1,"ts":2}`, err: "ts: given twice"},
		{
			name: "nested objects flatten",
			ct:   JSON,
			body: `{"env":{"t":20.5,"rh":{"value":40,"ok":true}},"fw":"x"}`,
			want: []Measurement{m(zero, "env.t", 20.5, "env.rh.value", 40.0, "env.rh.ok", true, "fw", "x")},
		},
		{
			name: "nested ts is a field",
			ct:   JSON,
			body: `{"gps":{"ts":1700000000000,"lat":1.5}}`,
			want: []Measurement{m(zero, "gps.ts", 1700000000000.0, "gps.lat", 1.5)},
		},
		{name: "array", ct: JSON, body: `{"a":1,"b":[1,2]}`, err: `field "b": arrays are not supported`},
		{name: "nested array", ct: JSON, body: `{"a":{"b":[]}}`, err: `field "a.b": arrays are not supported`},
		{name: "null skipped", ct: JSON, body: `{"a":null,"b":1,"c":{"d":null}}`, want: []Measurement{m(zero, "b", 1.0)}},
		{name: "only nulls", ct: JSON, body: `{"a":null}`, err: "no fields"},
		{name: "empty object", ct: JSON, body: `{}`, err: "no fields"},
		{name: "only ts", ct: JSON, body: `{"ts":1700000000000}`, err: "no fields"},
		{name: "only empty nested", ct: JSON, body: `{"a":{}}`, err: "no fields"},
		{name: "duplicate", ct: JSON, body: `{"a":1,"a":2}`, err: `field "a": given twice`},
		{name: "duplicate after flattening", ct: JSON, body: `{"a.b":1,"a":{"b":2}}`, err: `field "a.b": given twice`},
		{name: "repeated key without clash", ct: JSON, body: `{"a":{"b":1},"a":{"c":2},"d":null,"d":3}`, want: []Measurement{m(zero, "a.b", 1.0, "a.c", 2.0, "d", 3.0)}},
		{name: "empty name", ct: JSON, body: `{"":1}`, err: `field "": empty name`},
		{name: "empty nested name", ct: JSON, body: `{"a":{"":1}}`, err: `field "a.": empty name`},
		{name: "longest name", ct: JSON, body: `{"` + long + `":1}`, want: []Measurement{m(zero, long, 1.0)}},
		{
			name: "name too long",
			ct:   JSON,
			body: `{"` + long + `y":1}`,
			err:  `field "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…: name longer than 128 bytes`,
		},
		{
			name: "flattened name too long",
			ct:   JSON,
			body: `{"ab":{"` + long[:126] + `":1}}`,
			err:  `field "ab.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…: name longer than 128 bytes`,
		},
		{
			name: "prefix too long",
			ct:   JSON,
			body: `{"` + long + `y":{}}`,
			err:  `field "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…: name longer than 128 bytes`,
		},
		{name: "control character in name", ct: JSON, body: `{"a\nb":1}`, err: `field "a\nb": control character in name`},
		{name: "DEL in name", ct: JSON, body: `{"a\u007f":1}`, err: `field "a\x7f": control character in name`},
		{name: "most fields", ct: JSON, body: manyFieldsJSON(MaxFields), want: manyFields(MaxFields)},
		{name: "too many fields", ct: JSON, body: manyFieldsJSON(MaxFields + 1), err: "more than 256 fields"},
		{name: "deepest nesting", ct: JSON, body: nestedJSON(MaxDepth), want: []Measurement{m(zero, strings.Repeat("a.", MaxDepth-1)+"a", 1.0)}},
		{name: "too deep", ct: JSON, body: nestedJSON(MaxDepth + 1), err: "nested deeper than 32 levels"},
		{name: "number out of range", ct: JSON, body: `{"a":1e400}`, err: `field "a": number out of range`},
		{
			name: "escapes",
			ct:   JSON,
			body: `{"na\u00efve":"\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t","lone":"\ud800x","ü":"é"}`,
			want: []Measurement{m(zero, "naïve", "😀 \"q\" \\ / \b\f\n\r\t", "lone", "\ufffdx", "ü", "é")},
		},
		{name: "invalid UTF-8 replaced", ct: JSON, body: "{\"a\":\"x\xffy\"}", want: []Measurement{m(zero, "a", "x\ufffdy")}},
		{name: "white space", ct: JSON, body: " \t\r\n{ \"a\" : 1 , \"b\" : { \"c\" : true } } \n", want: []Measurement{m(zero, "a", 1.0, "b.c", true)}},
		{name: "content type parameters", ct: "application/json; charset=utf-8", body: `{"a":1}`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "sniffed", ct: "", body: ` {"a":1}`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "sniffed octet-stream", ct: OctetStream, body: `{"a":1}`, want: []Measurement{m(zero, "a", 1.0)}},

		{name: "unexpected end", ct: JSON, body: `{"a":1`, err: "invalid JSON: unexpected end of input"},
		{name: "unterminated string", ct: JSON, body: `{"a":"x`, err: "invalid JSON: unexpected end of input"},
		{name: "trailing comma", ct: JSON, body: `{"a":1,}`, err: `invalid JSON: unexpected '}' at offset 7`},
		{name: "leading zero", ct: JSON, body: `{"a":01}`, err: `invalid JSON: unexpected '1' at offset 6`},
		{name: "bare dot", ct: JSON, body: `{"a":1.}`, err: `invalid JSON: unexpected '}' at offset 7`},
		{name: "plus sign", ct: JSON, body: `{"a":+1}`, err: `invalid JSON: unexpected '+' at offset 5`},
		{name: "NaN", ct: JSON, body: `{"a":NaN}`, err: `invalid JSON: unexpected 'N' at offset 5`},
		{name: "bad literal", ct: JSON, body: `{"a":tru}`, err: `invalid JSON: unexpected '}' at offset 8`},
		{name: "single quotes", ct: JSON, body: `{'a':1}`, err: `invalid JSON: unexpected '\'' at offset 1`},
		{name: "missing colon", ct: JSON, body: `{"a" 1}`, err: `invalid JSON: unexpected '1' at offset 5`},
		{name: "bad escape", ct: JSON, body: `{"a\x":1}`, err: `invalid JSON: invalid escape at offset 3`},
		{name: "bad unicode escape", ct: JSON, body: `{"a\u12g4":1}`, err: `invalid JSON: invalid \u escape at offset 3`},
		{name: "raw control character", ct: JSON, body: "{\"a\tb\":1}", err: "invalid JSON: control character in string at offset 3"},
		{name: "binary garbage", ct: JSON, body: "{\x00}", err: "invalid JSON: unexpected byte 0x00 at offset 1"},
		{name: "data after object", ct: JSON, body: `{"a":1} {"b":2}`, err: "invalid JSON: data after the top-level value at offset 8"},
		{name: "not an object", ct: JSON, body: `"temperature"`, err: "not an object"},
		{name: "number", ct: JSON, body: `21.5`, err: "not an object"},
		{name: "empty", ct: JSON, body: ``, err: "empty payload"},
		{name: "blank", ct: JSON, body: " \n", err: "empty payload"},
		{name: "sniffed empty", ct: "", body: "", err: "empty payload"},
		{name: "sniffed text", ct: "", body: "hello", err: "unrecognized payload: want a JSON object, a SenML JSON array, or a CBOR map or array"},
		{name: "text/plain", ct: TextPlain, body: `{"a":1}`, err: `unsupported content type "text/plain"`},
		{name: "unknown content type", ct: "application/xml", body: `<a/>`, err: `unsupported content type "application/xml"`},
	})
}
