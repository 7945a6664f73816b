package payload

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// testNow is the clock for relative SenML times in tests.
var testNow = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// raw is literal text inside a hand-written CBOR byte sequence.
type raw string

// cb assembles hand-written CBOR: string arguments are hex bytes (spaces
// and "#" comments to the end of the argument are ignored), raw arguments
// are copied as they are.
func cb(parts ...any) []byte {
	var out []byte
	for _, p := range parts {
		switch p := p.(type) {
		case raw:
			out = append(out, p...)
		case string:
			if i := strings.IndexByte(p, '#'); i >= 0 {
				p = p[:i]
			}
			b, err := hex.DecodeString(strings.Join(strings.Fields(p), ""))
			if err != nil {
				panic(fmt.Sprintf("bad hex %q: %v", p, err))
			}
			out = append(out, b...)
		default:
			panic(fmt.Sprintf("cb: %T", p))
		}
	}
	return out
}

// m builds a measurement from alternating names and values.
func m(t time.Time, kv ...any) Measurement {
	f := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		f[kv[i].(string)] = kv[i+1]
	}
	return Measurement{Time: t, Fields: f}
}

// unixMilli is the UTC time of a Unix millisecond count.
func unixMilli(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// formatMeasurements prints measurements with sorted field names.
func formatMeasurements(ms []Measurement) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteString("; ")
		}
		if m.Time.IsZero() {
			b.WriteString("[no time]")
		} else {
			b.WriteString(m.Time.Format(time.RFC3339Nano))
		}
		keys := make([]string, 0, len(m.Fields))
		for k := range m.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %q=%#v", k, m.Fields[k])
		}
	}
	return b.String()
}

func equalMeasurements(a, b []Measurement) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Time.Equal(b[i].Time) || a[i].Time.Location() != b[i].Time.Location() ||
			!reflect.DeepEqual(a[i].Fields, b[i].Fields) {
			return false
		}
	}
	return true
}

// checkResult compares a decode result with the wanted measurements or
// error reason.
func checkResult(t *testing.T, got []Measurement, err error, want []Measurement, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil {
			t.Fatalf("got %s, want error %q", formatMeasurements(got), wantErr)
		}
		checkError(t, err, wantErr)
		return
	}
	if err != nil {
		t.Fatalf("got error %q, want %s", err, formatMeasurements(want))
	}
	if !equalMeasurements(got, want) {
		t.Fatalf("got  %s\nwant %s", formatMeasurements(got), formatMeasurements(want))
	}
}

// checkError checks that err is an *Error wrapping ErrInvalid with the
// reason want.
func checkError(t *testing.T, err error, want string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %T %q, want *payload.Error", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("got error %q not wrapping ErrInvalid", err)
	}
	if e.Reason != want || err.Error() != want {
		t.Errorf("got error %q, want %q", err, want)
	}
}

// checkInvariants checks what holds for every successful DecodeTelemetry.
func checkInvariants(t *testing.T, ms []Measurement) {
	t.Helper()
	if len(ms) == 0 {
		t.Fatal("got no measurements and no error")
	}
	total := 0
	for _, m := range ms {
		if len(m.Fields) == 0 {
			t.Fatal("got a measurement without fields")
		}
		if !m.Time.IsZero() && m.Time.Location() != time.UTC {
			t.Fatalf("got time in %v, want UTC", m.Time.Location())
		}
		for k, v := range m.Fields {
			total++
			if k == "" || len(k) > MaxFieldName {
				t.Fatalf("got field name %q of %d bytes", k, len(k))
			}
			for _, c := range []byte(k) {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("got control character in field name %q", k)
				}
			}
			switch v := v.(type) {
			case float64:
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("got field %q = %v", k, v)
				}
			case bool, string:
			default:
				t.Fatalf("got field %q of type %T, want float64, bool or string", k, v)
			}
		}
	}
	if total > MaxFields {
		t.Fatalf("got %d fields, want at most %d", total, MaxFields)
	}
}
