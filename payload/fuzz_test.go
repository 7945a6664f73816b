package payload

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// The fuzz targets check that no input panics or hangs, that errors are
// *Error wrapping ErrInvalid, that results keep the documented invariants,
// and, where an independent parser exists (encoding/json, fxamacker/cbor),
// that both agree on what is well-formed. Seeds: testdata/fuzz/<target>,
// hand-written ones named seed-*, the others kept from fuzzing runs.

// wellformedCBOR is an independent CBOR well-formedness check with limits
// above anything a test input can reach.
var wellformedCBOR = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels:  65535,
		MaxArrayElements: math.MaxInt32,
		MaxMapPairs:      math.MaxInt32,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// checkFuzzError checks an error from a decoder.
func checkFuzzError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.Reason == "" || err.Error() != e.Reason {
		t.Fatalf("got error %T %q, want *Error wrapping ErrInvalid", err, err)
	}
}

// fuzzTelemetry decodes data twice as ct and checks the result.
func fuzzTelemetry(t *testing.T, ct string, data []byte) ([]Measurement, error) {
	got, err := decodeTelemetry(ct, data, fixedNow)
	if err != nil {
		checkFuzzError(t, err)
		return nil, err
	}
	checkInvariants(t, got)
	again, err := decodeTelemetry(ct, data, fixedNow)
	if err != nil || !equalMeasurements(got, again) {
		t.Fatalf("second decode: got %s, %v, want %s", formatMeasurements(again), err, formatMeasurements(got))
	}
	return got, nil
}

// checkJSONAgreement checks that JSON syntax errors are reported exactly
// for what encoding/json finds invalid.
func checkJSONAgreement(t *testing.T, data []byte, err error) {
	t.Helper()
	valid := json.Valid(data)
	if err == nil && !valid {
		t.Fatalf("accepted JSON that encoding/json finds invalid")
	}
	if err != nil && valid && strings.HasPrefix(err.Error(), "invalid JSON") {
		t.Fatalf("got %q for JSON that encoding/json finds valid", err)
	}
}

// checkCBORAgreement checks CBOR well-formedness against fxamacker/cbor.
func checkCBORAgreement(t *testing.T, data []byte, err error) {
	t.Helper()
	werr := wellformedCBOR.Wellformed(data)
	if err == nil && werr != nil {
		t.Fatalf("accepted CBOR that fxamacker/cbor finds malformed: %v", werr)
	}
	if err != nil && werr == nil && strings.HasPrefix(err.Error(), "invalid CBOR") {
		t.Fatalf("got %q for CBOR that fxamacker/cbor finds well-formed", err)
	}
	if werr != nil && err == nil {
		t.Fatalf("accepted malformed CBOR")
	}
}

func addTelemetrySeeds(f *testing.F, jsonSeeds bool) {
	for _, g := range goldenPacks {
		if jsonSeeds {
			f.Add([]byte(g.json))
		} else {
			f.Add(g.cbor)
		}
	}
	if jsonSeeds {
		f.Add([]byte(benchJSONObject))
		f.Add([]byte(benchSenMLJSON))
	} else {
		f.Add(benchCBORMap)
	}
}

// checkFlattening checks a decoded telemetry object against DecodeObject
// of the same payload, flattened by the documented rules.
func checkFlattening(t *testing.T, ct string, data []byte, got []Measurement) {
	t.Helper()
	obj, err := DecodeObject(ct, data)
	if err != nil {
		// Telemetry refuses a duplicate field name, not a duplicate key
		// whose values flatten to different names ({"a":{"b":1},"a":2}).
		if strings.HasSuffix(err.Error(), "given twice") {
			return
		}
		t.Fatalf("telemetry accepted, DecodeObject: %v", err)
	}
	want := map[string]any{}
	var flatten func(prefix string, o map[string]any)
	flatten = func(prefix string, o map[string]any) {
		for k, v := range o {
			switch v := v.(type) {
			case nil:
			case map[string]any:
				flatten(prefix+k+".", v)
			default:
				want[prefix+k] = v
			}
		}
	}
	delete(obj, "ts")
	flatten("", obj)
	if len(got) != 1 || !reflect.DeepEqual(got[0].Fields, want) {
		t.Fatalf("got %s, want fields %v", formatMeasurements(got), want)
	}
}

func FuzzDecodeTelemetryJSON(f *testing.F) {
	addTelemetrySeeds(f, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := fuzzTelemetry(t, JSON, data)
		checkJSONAgreement(t, data, err)
		if err == nil && firstJSONByte(data) == '{' {
			checkFlattening(t, JSON, data, got)
		}
	})
}

func FuzzDecodeTelemetrySenMLJSON(f *testing.F) {
	addTelemetrySeeds(f, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := fuzzTelemetry(t, SenMLJSON, data)
		checkJSONAgreement(t, data, err)
		if err != nil {
			return
		}
		// The same pack in CBOR, with text labels, resolves the same.
		var pack any
		if err := json.Unmarshal(data, &pack); err != nil {
			t.Fatal(err)
		}
		c, err := cbor.Marshal(pack)
		if err != nil {
			t.Fatal(err)
		}
		fromCBOR, err := decodeTelemetry(SenMLCBOR, c, fixedNow)
		if err != nil || !equalMeasurements(fromCBOR, got) {
			t.Fatalf("as CBOR: got %s, %v, want %s", formatMeasurements(fromCBOR), err, formatMeasurements(got))
		}
	})
}

func FuzzDecodeTelemetryCBOR(f *testing.F) {
	addTelemetrySeeds(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := fuzzTelemetry(t, CBOR, data)
		checkCBORAgreement(t, data, err)
		if err == nil && cborKind(data) == kindMap {
			checkFlattening(t, CBOR, data, got)
		}
	})
}

func FuzzDecodeTelemetrySenMLCBOR(f *testing.F) {
	addTelemetrySeeds(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := fuzzTelemetry(t, SenMLCBOR, data)
		checkCBORAgreement(t, data, err)
	})
}

// FuzzDecodeTelemetrySniff checks that sniffing picks the decoder the
// explicit content types would.
func FuzzDecodeTelemetrySniff(f *testing.F) {
	addTelemetrySeeds(f, true)
	addTelemetrySeeds(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := fuzzTelemetry(t, "", data)
		var ct string
		switch firstJSONByte(data) {
		case '{':
			ct = JSON
		case '[':
			ct = SenMLJSON
		case 0:
			return
		default:
			switch cborKind(data) {
			case kindMap:
				ct = CBOR
			case kindArray:
				ct = SenMLCBOR
			default:
				if err == nil {
					t.Fatal("accepted a payload that is neither JSON nor a CBOR map or array")
				}
				return
			}
		}
		want, werr := decodeTelemetry(ct, data, fixedNow)
		if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) || !equalMeasurements(got, want) {
			t.Fatalf("sniffed: got %s, %v; as %s: got %s, %v", formatMeasurements(got), err, ct, formatMeasurements(want), werr)
		}
	})
}

func FuzzDecodeObjectJSON(f *testing.F) {
	f.Add([]byte(`{"led":"on","level":3,"pos":{"x":1.5,"tags":["a",null,true,[]]},"gone":null}`))
	f.Add([]byte(benchJSONObject))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeObject(JSON, data)
		checkJSONAgreement(t, data, err)
		if err != nil {
			checkFuzzError(t, err)
			return
		}
		var want map[string]any
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v, encoding/json got %#v", got, want)
		}
	})
}

func FuzzDecodeObjectCBOR(f *testing.F) {
	f.Add(benchCBORMap)
	f.Add(cb("a4 63", raw("led"), "62", raw("on"), "61", raw("b"), "42 01 02", "61", raw("l"), "9f 01 f6 a1 61", raw("x"), "f5 ff", "61", raw("u"), "f7"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeObject(CBOR, data)
		checkCBORAgreement(t, data, err)
		if err != nil {
			checkFuzzError(t, err)
			return
		}
		// fxamacker/cbor reads the same values, where it accepts the input
		// (it is stricter about the content of tags 0 to 3).
		var v any
		if wellformedCBOR.Unmarshal(data, &v) == nil {
			if want, ok := jsonCompatible(v); ok && !reflect.DeepEqual(any(got), want) {
				t.Fatalf("got %#v, fxamacker/cbor got %#v", got, want)
			}
		}
		// The result is JSON-compatible: it survives a round trip through
		// JSON, and through CBOR, unchanged.
		j, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("result is not JSON-compatible: %v", err)
		}
		if back, err := DecodeObject(JSON, j); err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("JSON round trip: got %#v, %v, want %#v", back, err, got)
		}
		c, err := cbor.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeObject(CBOR, c); err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("CBOR round trip: got %#v, %v, want %#v", back, err, got)
		}
	})
}

// jsonCompatible converts what fxamacker/cbor decodes into an interface
// value to what DecodeObject documents. ok is false for values that cannot
// be compared: times (tags 0 and 1 are decoded to time.Time) and simple
// values.
func jsonCompatible(v any) (any, bool) {
	switch v := v.(type) {
	case nil, bool, string:
		return v, true
	case uint64:
		return float64(v), true
	case int64:
		return float64(v), true
	case float64:
		return v, true
	case big.Int:
		f, _ := new(big.Float).SetInt(&v).Float64()
		return f, true
	case []byte:
		return base64.RawURLEncoding.EncodeToString(v), true
	case cbor.Tag:
		return jsonCompatible(v.Content)
	case []any:
		a := make([]any, len(v))
		for i, e := range v {
			var ok bool
			if a[i], ok = jsonCompatible(e); !ok {
				return nil, false
			}
		}
		return a, true
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, false
			}
			if m[ks], ok = jsonCompatible(e); !ok {
				return nil, false
			}
		}
		return m, true
	}
	return nil, false
}
