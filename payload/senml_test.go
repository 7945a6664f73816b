package payload

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Packs from RFC 8428 §5.1, in JSON, with the measurements they resolve to.
const (
	rfcSingle = `[
  {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
]`
	rfcMultipleDatapoints = `[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]`
	rfcMultipleMeasurements = `[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
]`
	rfcDataTypes = `[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
  {"n":"label","vs":"Machine Room"},
  {"n":"open","vb":false},
  {"n":"nfc-reader","vd":"aGkgCg"}
]`
)

// rfcBT is the base time of rfcMultipleMeasurements.
var rfcBT = time.Date(2010, 6, 8, 18, 1, 16, 1000000, time.UTC)

var (
	wantSingle = []Measurement{
		m(time.Time{}, "urn:dev:ow:10e2073a01080063", 23.1),
	}
	wantMultipleDatapoints = []Measurement{
		m(time.Time{}, "urn:dev:ow:10e2073a01080063:voltage", 120.1, "urn:dev:ow:10e2073a01080063:current", 1.2),
	}
	wantMultipleMeasurements = []Measurement{
		m(rfcBT, "urn:dev:ow:10e2073a0108006:voltage", 120.1, "urn:dev:ow:10e2073a0108006:current", 1.7),
		m(rfcBT.Add(-5*time.Second), "urn:dev:ow:10e2073a0108006:current", 1.2),
		m(rfcBT.Add(-4*time.Second), "urn:dev:ow:10e2073a0108006:current", 1.3),
		m(rfcBT.Add(-3*time.Second), "urn:dev:ow:10e2073a0108006:current", 1.4),
		m(rfcBT.Add(-2*time.Second), "urn:dev:ow:10e2073a0108006:current", 1.5),
		m(rfcBT.Add(-1*time.Second), "urn:dev:ow:10e2073a0108006:current", 1.6),
	}
	wantDataTypes = []Measurement{
		m(time.Time{},
			"urn:dev:ow:10e2073a01080063:temp", 23.1,
			"urn:dev:ow:10e2073a01080063:label", "Machine Room",
			"urn:dev:ow:10e2073a01080063:open", false,
			"urn:dev:ow:10e2073a01080063:nfc-reader", "aGkgCg"),
	}
)

// The same packs in SenML CBOR (RFC 8428 §6), written out by hand. Labels:
// bver=-1 (0x20), bn=-2 (0x21), bt=-3 (0x22), bu=-4 (0x23), n=0, u=1, v=2,
// vs=3, vb=4, t=6, vd=8.
var (
	cborSingle = cb(
		"81",                                           // array(1)
		"a3",                                           // map(3)
		"00 78 1b", raw("urn:dev:ow:10e2073a01080063"), // n: text(27)
		"01 63", raw("Cel"), // u: text(3)
		"02 fb 40 37 19 99 99 99 99 9a", // v: 23.1
	)
	cborMultipleDatapoints = cb(
		"82",                                            // array(2)
		"a4",                                            // map(4)
		"21 78 1c", raw("urn:dev:ow:10e2073a01080063:"), // bn: text(28)
		"00 67", raw("voltage"), // n
		"01 61", raw("V"), // u
		"02 fb 40 5e 06 66 66 66 66 66", // v: 120.1
		"a3",                            // map(3)
		"00 67", raw("current"),         // n
		"01 61", raw("A"), // u
		"02 fb 3f f3 33 33 33 33 33 33", // v: 1.2
	)
	cborMultipleMeasurements = cb(
		"87",                                           // array(7)
		"a7",                                           // map(7)
		"21 78 1b", raw("urn:dev:ow:10e2073a0108006:"), // bn: text(27)
		"22 fb 41 d3 03 a1 5b 00 10 62", // bt: 1.276020076001e+09
		"23 61", raw("A"),               // bu
		"20 05",                 // bver: 5
		"00 67", raw("voltage"), // n
		"01 61", raw("V"), // u
		"02 fb 40 5e 06 66 66 66 66 66",                                   // v: 120.1
		"a3 00 67", raw("current"), "06 24 02 fb 3f f3 33 33 33 33 33 33", // t: -5, v: 1.2
		"a3 00 67", raw("current"), "06 23 02 fb 3f f4 cc cc cc cc cc cd", // t: -4, v: 1.3
		"a3 00 67", raw("current"), "06 22 02 fb 3f f6 66 66 66 66 66 66", // t: -3, v: 1.4
		"a3 00 67", raw("current"), "06 21 02 fb 3f f8 00 00 00 00 00 00", // t: -2, v: 1.5
		"a3 00 67", raw("current"), "06 20 02 fb 3f f9 99 99 99 99 99 9a", // t: -1, v: 1.6
		"a2 00 67", raw("current"), "02 fb 3f fb 33 33 33 33 33 33", // v: 1.7
	)
	cborDataTypes = cb(
		"84",                                            // array(4)
		"a4",                                            // map(4)
		"21 78 1c", raw("urn:dev:ow:10e2073a01080063:"), // bn
		"00 64", raw("temp"), // n
		"01 63", raw("Cel"), // u
		"02 fb 40 37 19 99 99 99 99 9a",                        // v: 23.1
		"a2 00 65", raw("label"), "03 6c", raw("Machine Room"), // n, vs: text(12)
		"a2 00 64", raw("open"), "04 f4", // n, vb: false
		"a2 00 6a", raw("nfc-reader"), "08 44 68 69 20 0a", // n, vd: bytes(4) "hi \n"
	)
)

var goldenPacks = []struct {
	name string
	json string
	cbor []byte
	want []Measurement
}{
	{"single datapoint", rfcSingle, cborSingle, wantSingle},
	{"multiple datapoints", rfcMultipleDatapoints, cborMultipleDatapoints, wantMultipleDatapoints},
	{"multiple measurements", rfcMultipleMeasurements, cborMultipleMeasurements, wantMultipleMeasurements},
	{"data types", rfcDataTypes, cborDataTypes, wantDataTypes},
}

func TestSenMLGolden(t *testing.T) {
	for _, g := range goldenPacks {
		t.Run(g.name+"/json", func(t *testing.T) {
			got, err := decodeTelemetry(SenMLJSON, []byte(g.json), fixedNow)
			checkResult(t, got, err, g.want, "")
		})
		t.Run(g.name+"/cbor", func(t *testing.T) {
			got, err := decodeTelemetry(SenMLCBOR, g.cbor, fixedNow)
			checkResult(t, got, err, g.want, "")
		})
		t.Run(g.name+"/sniffed", func(t *testing.T) {
			got, err := decodeTelemetry("", g.cbor, fixedNow)
			checkResult(t, got, err, g.want, "")
			got, err = decodeTelemetry("", []byte(g.json), fixedNow)
			checkResult(t, got, err, g.want, "")
		})
	}
}

// TestSenMLGoldenBytes checks the hand-written CBOR against the RFC's JSON
// with an independent decoder: same records, labels mapped by RFC 8428 §6.
func TestSenMLGoldenBytes(t *testing.T) {
	labels := map[int64]string{-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
		0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}
	for _, g := range goldenPacks {
		var fromJSON []map[string]any
		if err := json.Unmarshal([]byte(g.json), &fromJSON); err != nil {
			t.Fatal(err)
		}
		var records []map[int64]any
		if err := cbor.Unmarshal(g.cbor, &records); err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		var fromCBOR []map[string]any
		for _, r := range records {
			mr := map[string]any{}
			for k, v := range r {
				switch v := v.(type) {
				case uint64:
					mr[labels[k]] = float64(v)
				case int64:
					mr[labels[k]] = float64(v)
				case []byte:
					mr[labels[k]] = base64.RawURLEncoding.EncodeToString(v)
				default:
					mr[labels[k]] = v
				}
			}
			fromCBOR = append(fromCBOR, mr)
		}
		if !reflect.DeepEqual(fromCBOR, fromJSON) {
			t.Errorf("%s: got %v, want %v", g.name, fromCBOR, fromJSON)
		}
	}
}

func TestDecodeTelemetrySenMLJSON(t *testing.T) {
	zero := time.Time{}
	runTelemetryCases(t, []telemetryCase{
		{name: "relative past", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":-60}]`, want: []Measurement{m(testNow.Add(-time.Minute), "a", 1.0)}},
		{name: "relative future", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":0.5}]`, want: []Measurement{m(testNow.Add(500*time.Millisecond), "a", 1.0)}},
		{name: "relative base time", ct: SenMLJSON, body: `[{"bt":-10,"n":"a","v":1},{"n":"b","v":2,"t":10}]`, want: []Measurement{m(testNow.Add(-10*time.Second), "a", 1.0), m(zero, "b", 2.0)}},
		{name: "just below 2^28 is relative", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":268435455}]`, want: []Measurement{m(testNow.Add(268435455*time.Second), "a", 1.0)}},
		{name: "2^28 is absolute", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":268435456}]`, want: []Measurement{m(time.Unix(268435456, 0).UTC(), "a", 1.0)}},
		{name: "absolute with fraction", ct: SenMLJSON, body: `[{"bt":1700000000,"n":"a","v":1,"t":0.123456}]`, want: []Measurement{m(time.Unix(1700000000, 123456000).UTC(), "a", 1.0)}},
		{name: "time rounded to microseconds", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":1700000000.1234567}]`, want: []Measurement{m(time.Unix(1700000000, 123457000).UTC(), "a", 1.0)}},
		{name: "no time", ct: SenMLJSON, body: `[{"n":"a","v":1},{"n":"b","v":2,"t":0}]`, want: []Measurement{m(zero, "a", 1.0, "b", 2.0)}},
		{
			name: "grouped by resolved time in order of appearance",
			ct:   SenMLJSON,
			body: `[{"bn":"d/","bt":1700000000,"n":"a","v":1},{"n":"a","t":60,"v":2},{"n":"b","v":3},{"n":"b","t":60,"v":4}]`,
			want: []Measurement{
				m(time.Unix(1700000000, 0).UTC(), "d/a", 1.0, "d/b", 3.0),
				m(time.Unix(1700000060, 0).UTC(), "d/a", 2.0, "d/b", 4.0),
			},
		},
		{
			name: "base values carry over and change",
			ct:   SenMLJSON,
			body: `[{"bn":"x:","bv":100,"bs":10,"n":"a","v":1},{"n":"b","s":5},{"bn":"y:","bv":0,"n":"a","v":1}]`,
			want: []Measurement{m(zero, "x:a", 101.0, "x:b", 15.0, "y:a", 1.0)},
		},
		{name: "base name alone", ct: SenMLJSON, body: `[{"bn":"sensor1","v":3}]`, want: []Measurement{m(zero, "sensor1", 3.0)}},
		{name: "value and sum", ct: SenMLJSON, body: `[{"n":"energy","v":2.5,"s":1000}]`, want: []Measurement{m(zero, "energy", 2.5, "energy.sum", 1000.0)}},
		{name: "sum only", ct: SenMLJSON, body: `[{"n":"energy","s":1000}]`, want: []Measurement{m(zero, "energy", 1000.0)}},
		{name: "string bool data", ct: SenMLJSON, body: `[{"n":"s","vs":""},{"n":"b","vb":true},{"n":"d","vd":"aGk="}]`, want: []Measurement{m(zero, "s", "", "b", true, "d", "aGk")}},
		{name: "update time and units checked, not kept", ct: SenMLJSON, body: `[{"bu":"Cel","n":"a","u":"%RH","ut":60,"v":1}]`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "unknown label ignored", ct: SenMLJSON, body: `[{"n":"a","v":1,"foo":{"x":[1,{"y":null}]},"bar":"z"}]`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "version 10", ct: SenMLJSON, body: `[{"bver":10,"n":"a","v":1}]`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "JSON content type with array", ct: JSON, body: ` [{"n":"a","v":1}]`, want: []Measurement{m(zero, "a", 1.0)}},
		{name: "sniffed", ct: "", body: "\n[{\"n\":\"a\",\"v\":1}]", want: []Measurement{m(zero, "a", 1.0)}},

		{name: "no value", ct: SenMLJSON, body: `[{"n":"a","v":1},{"n":"b","u":"V"}]`, err: "senml record 1: no value"},
		{name: "base record only", ct: SenMLJSON, body: `[{"bn":"x:","bt":1700000000},{"n":"a","v":1}]`, err: "senml record 0: no value"},
		{name: "two values", ct: SenMLJSON, body: `[{"n":"a","v":1,"vs":"1"}]`, err: "senml record 0: more than one value"},
		{name: "no name", ct: SenMLJSON, body: `[{"v":1}]`, err: "senml record 0: no name"},
		{name: "space in name", ct: SenMLJSON, body: `[{"n":"a b","v":1}]`, err: `senml record 0: invalid name "a b"`},
		{name: "name starts with dash", ct: SenMLJSON, body: `[{"bn":"-x","n":"a","v":1}]`, err: `senml record 0: invalid name "-xa"`},
		{name: "name too long", ct: SenMLJSON, body: `[{"bn":"` + strings.Repeat("b", 100) + `","n":"` + strings.Repeat("n", 29) + `","v":1}]`, err: `senml record 0: name "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"… longer than 128 bytes`},
		{name: "sum name too long", ct: SenMLJSON, body: `[{"n":"` + strings.Repeat("n", 125) + `","v":1,"s":2}]`, err: `senml record 0: name "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"… longer than 128 bytes`},
		{name: "same name same time", ct: SenMLJSON, body: `[{"n":"a","v":1},{"n":"a","u":"V","v":2}]`, err: `senml record 1: field "a" given twice for the same time`},
		{name: "sum collides", ct: SenMLJSON, body: `[{"n":"e.sum","v":1},{"n":"e","v":2,"s":3}]`, err: `senml record 1: field "e.sum" given twice for the same time`},
		{name: "newer version", ct: SenMLJSON, body: `[{"bver":11,"n":"a","v":1}]`, err: "senml record 0: unsupported version 11"},
		{name: "must-understand label", ct: SenMLJSON, body: `[{"n":"a","v":1,"foo_":1}]`, err: `senml record 0: unsupported label "foo_"`},
		{name: "duplicate label", ct: SenMLJSON, body: `[{"n":"a","v":1,"v":2}]`, err: `senml record 0: duplicate label "v"`},
		{name: "string value", ct: SenMLJSON, body: `[{"n":"a","v":"1"}]`, err: `senml record 0: "v" must be a number`},
		{name: "number name", ct: SenMLJSON, body: `[{"n":1,"v":1}]`, err: `senml record 0: "n" must be a string`},
		{name: "string bool", ct: SenMLJSON, body: `[{"n":"a","vb":"true"}]`, err: `senml record 0: "vb" must be a boolean`},
		{name: "bad data", ct: SenMLJSON, body: `[{"n":"a","vd":"a+b/"}]`, err: `senml record 0: "vd" must be base64url data`},
		{name: "null value", ct: SenMLJSON, body: `[{"n":"a","v":null}]`, err: `senml record 0: "v" must be a number`},
		{name: "value out of range", ct: SenMLJSON, body: `[{"n":"a","v":1e999}]`, err: `senml record 0: "v" out of range`},
		{name: "value overflows with base value", ct: SenMLJSON, body: `[{"bv":1e308,"n":"a","v":1e308}]`, err: "senml record 0: value out of range"},
		{name: "time after year 9999", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":1e12}]`, err: "senml record 0: time out of range"},
		{name: "relative time too far back", ct: SenMLJSON, body: `[{"n":"a","v":1,"t":-268435456}]`, err: "senml record 0: time out of range"},
		{name: "record not an object", ct: SenMLJSON, body: `[{"n":"a","v":1},2]`, err: "senml record 1: not an object"},
		{name: "nested pack", ct: SenMLJSON, body: `[[{"n":"a","v":1}]]`, err: "senml record 0: not an object"},
		{name: "empty pack", ct: SenMLJSON, body: `[]`, err: "no fields"},
		{name: "object", ct: SenMLJSON, body: `{"n":"a","v":1}`, err: "senml: pack must be an array"},
		{name: "empty", ct: SenMLJSON, body: ``, err: "empty payload"},
		{name: "truncated", ct: SenMLJSON, body: `[{"n":"a","v":1}`, err: "invalid JSON: unexpected end of input"},
		{name: "truncated record", ct: SenMLJSON, body: `[{"n":"a","v":`, err: "invalid JSON: unexpected end of input"},
		{name: "missing comma", ct: SenMLJSON, body: `[{"n":"a","v":1} {"n":"b","v":1}]`, err: `invalid JSON: unexpected '{' at offset 17`},
		{name: "garbage element", ct: SenMLJSON, body: `[}`, err: `invalid JSON: unexpected '}' at offset 1`},
		{name: "too deep unknown label", ct: SenMLJSON, body: `[{"n":"a","v":1,"x":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}]`, err: "nested deeper than 32 levels"},
		{name: "too many fields", ct: SenMLJSON, body: senmlManyJSON(MaxFields + 1), err: "more than 256 fields"},
		{name: "most fields", ct: SenMLJSON, body: senmlManyJSON(MaxFields), want: manyFields(MaxFields)},
	})
}

// senmlManyJSON is a pack of n records "f0" … "f<n-1>", each 1.
func senmlManyJSON(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"n":"f` + itoa(i) + `","v":1}`)
	}
	b.WriteByte(']')
	return b.String()
}

func TestDecodeTelemetrySenMLCBOR(t *testing.T) {
	zero := time.Time{}
	cases := []struct {
		name string
		ct   string
		body []byte
		want []Measurement
		err  string
	}{
		{
			name: "indefinite lengths and half floats",
			ct:   SenMLCBOR,
			body: cb("9f bf 00 61", raw("a"), "02 f9 3e 00 ff ff"),
			want: []Measurement{m(zero, "a", 1.5)},
		},
		{
			name: "text labels",
			ct:   SenMLCBOR,
			body: cb("81 a2 61", raw("n"), "61", raw("a"), "61", raw("v"), "01"),
			want: []Measurement{m(zero, "a", 1.0)},
		},
		{
			name: "integer time, sum, base sum",
			ct:   SenMLCBOR,
			body: cb("81 a4 00 61", raw("e"), "06 1a 65 53 f1 00", "25 0a", "05 01"),
			want: []Measurement{m(time.Unix(1700000000, 0).UTC(), "e", 11.0)},
		},
		{
			name: "data as text",
			ct:   SenMLCBOR,
			body: cb("81 a2 00 61", raw("d"), "08 62", raw("aQ")),
			want: []Measurement{m(zero, "d", "aQ")},
		},
		{
			name: "unknown labels skipped",
			ct:   SenMLCBOR,
			body: cb("81 a4 00 61", raw("a"), "02 01", "18 63 82 a1 01 02 9f ff", "63", raw("foo"), "f6"),
			want: []Measurement{m(zero, "a", 1.0)},
		},
		{name: "must-understand text label", ct: SenMLCBOR, body: cb("81 a3 00 61", raw("a"), "02 01 64", raw("foo_"), "01"), err: `senml record 0: unsupported label "foo_"`},
		{name: "duplicate label as integer and text", ct: SenMLCBOR, body: cb("81 a3 00 61", raw("a"), "02 01 61", raw("v"), "02"), err: `senml record 0: duplicate label "v"`},
		{name: "float label", ct: SenMLCBOR, body: cb("81 a2 00 61", raw("a"), "f9 40 00 01"), err: "senml record 0: label is neither an integer nor a text string"},
		{name: "NaN value", ct: SenMLCBOR, body: cb("81 a2 00 61", raw("a"), "02 f9 7e 00"), err: `senml record 0: "v" out of range`},
		{name: "text value", ct: SenMLCBOR, body: cb("81 a2 00 61", raw("a"), "02 61", raw("1")), err: `senml record 0: "v" must be a number`},
		{name: "no value", ct: SenMLCBOR, body: cb("81 a1 00 61", raw("a")), err: "senml record 0: no value"},
		{name: "record not a map", ct: SenMLCBOR, body: cb("81 01"), err: "senml record 0: not a map"},
		{name: "map", ct: SenMLCBOR, body: cb("a1 00 61", raw("a")), err: "senml: pack must be an array"},
		{name: "empty pack", ct: SenMLCBOR, body: cb("80"), err: "no fields"},
		{name: "truncated", ct: SenMLCBOR, body: cb("82 a2 00 61", raw("a"), "02 01"), err: "invalid CBOR: unexpected end of input"},
		{name: "break as key value", ct: SenMLCBOR, body: cb("81 bf 00 ff"), err: "invalid CBOR: map key without value at offset 3"},
		{name: "data after pack", ct: SenMLCBOR, body: cb("81 a2 00 61", raw("a"), "02 01 00"), err: "invalid CBOR: data after the top-level item at offset 7"},
		{name: "empty", ct: SenMLCBOR, body: nil, err: "empty payload"},
		{name: "CBOR content type with array", ct: CBOR, body: cb("81 a2 00 61", raw("a"), "02 01"), want: []Measurement{m(zero, "a", 1.0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTelemetry(tc.ct, tc.body, fixedNow)
			checkResult(t, got, err, tc.want, tc.err)
		})
	}
}

func TestDecodeTelemetryUsesClock(t *testing.T) {
	before := time.Now()
	got, err := DecodeTelemetry(SenMLJSON, []byte(`[{"n":"a","v":1,"t":-1}]`))
	if err != nil {
		t.Fatal(err)
	}
	if tm := got[0].Time; tm.Before(before.Add(-2*time.Second)) || tm.After(time.Now()) {
		t.Errorf("got time %v, want about a second before %v", tm, before)
	}
}
