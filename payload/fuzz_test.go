package payload

import (
	"encoding/json"
	"errors"
	"math"
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

func FuzzDecodeTelemetryJSON(f *testing.F) {
	addTelemetrySeeds(f, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := fuzzTelemetry(t, JSON, data)
		checkJSONAgreement(t, data, err)
	})
}

func FuzzDecodeTelemetrySenMLJSON(f *testing.F) {
	addTelemetrySeeds(f, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := fuzzTelemetry(t, SenMLJSON, data)
		checkJSONAgreement(t, data, err)
	})
}

func FuzzDecodeTelemetryCBOR(f *testing.F) {
	addTelemetrySeeds(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := fuzzTelemetry(t, CBOR, data)
		checkCBORAgreement(t, data, err)
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
