package window_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

func TestValueOf(t *testing.T) {
	ts := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	cases := []struct {
		in   any
		kind window.Kind
		str  string
		out  any
	}{
		{21.5, window.KindNumber, "21.5", 21.5},
		{float32(1.5), window.KindNumber, "1.5", 1.5},
		{int(-3), window.KindNumber, "-3", -3.0},
		{int8(-3), window.KindNumber, "-3", -3.0},
		{int16(300), window.KindNumber, "300", 300.0},
		{int32(7), window.KindNumber, "7", 7.0},
		{int64(1 << 40), window.KindNumber, "1099511627776", float64(1 << 40)},
		{uint(1), window.KindNumber, "1", 1.0},
		{uint8(2), window.KindNumber, "2", 2.0},
		{uint16(3), window.KindNumber, "3", 3.0},
		{uint32(4), window.KindNumber, "4", 4.0},
		{uint64(5), window.KindNumber, "5", 5.0},
		{json.Number("1e3"), window.KindNumber, "1000", 1000.0},
		{json.Number("x"), window.KindNull, "null", nil},
		{"a\"b", window.KindString, `"a\"b"`, "a\"b"},
		{true, window.KindBool, "true", true},
		{false, window.KindBool, "false", false},
		{ts, window.KindTime, `"2024-01-02T03:04:05.000000006Z"`, ts},
		{nil, window.KindNull, "null", nil},
		{map[string]any{"a": 1}, window.KindNull, "null", nil},
		{[]any{1}, window.KindNull, "null", nil},
		{math.Inf(1), window.KindNumber, "+Inf", nil},
		{window.StringValue("v"), window.KindString, `"v"`, "v"},
	}
	for _, c := range cases {
		v := window.ValueOf(c.in)
		if v.Kind() != c.kind || v.String() != c.str {
			t.Errorf("ValueOf(%#v): got %s %s, want %s %s", c.in, v.Kind(), v, c.kind, c.str)
		}
		if got := v.Any(); got != c.out {
			t.Errorf("ValueOf(%#v).Any(): got %#v, want %#v", c.in, got, c.out)
		}
		if !v.Equal(window.ValueOf(c.in)) {
			t.Errorf("ValueOf(%#v) not equal to itself", c.in)
		}
	}
	if got, ok := window.TimeValue(ts).Time(); !ok || !got.Equal(ts) {
		t.Errorf("Time: got %v %v", got, ok)
	}
	if _, ok := window.NumberValue(1).Time(); ok {
		t.Error("a number is not a time")
	}
	nan := window.NumberValue(math.NaN())
	if !nan.Equal(nan) || window.NumberValue(1).Equal(window.StringValue("1")) || window.Null.Equal(window.BoolValue(false)) {
		t.Error("Equal")
	}
	if window.KindTime.String() != "time" || window.Kind(99).String() != "kind(99)" {
		t.Error("Kind.String")
	}
}

// Group keys of different kinds are different groups; -0 and 0 are one,
// and so are all NaNs.
func TestGroupKeyKinds(t *testing.T) {
	e := engine(t, "SELECT k, count(*) AS n FROM 'devices/#' GROUP BY k, TUMBLING(1m)", window.Options{})
	for _, k := range []any{1.0, "1", true, 1, 0.0, math.Copysign(0, -1), math.NaN(), math.NaN(), nil, time.Unix(5, 0)} {
		e.Process(window.Event{Time: at("1s"), Fields: map[string]any{"k": k}})
	}
	got := map[string]float64{}
	for _, r := range e.Flush() {
		got[r.GroupKey] = r.Values["n"].(float64)
	}
	want := map[string]float64{`[1]`: 2, `["1"]`: 1, `[true]`: 1, `[0]`: 2, `[NaN]`: 2, `[null]`: 1, `["1970-01-01T00:00:05Z"]`: 1}
	eq(t, "groups", got, want)
}
