package payload

import (
	"bytes"
	"math"
	"time"
)

// Limits on what a single message may carry.
const (
	// MaxFieldName is the longest field name, in bytes, after flattening
	// (JSON/CBOR objects) or resolving the base name (SenML).
	MaxFieldName = 128
	// MaxFields is the most fields one message may carry, summed over all
	// its measurements.
	MaxFields = 256
	// MaxDepth is the deepest nesting of objects and arrays accepted; the
	// top-level object or SenML array is level 1.
	MaxDepth = 32
)

// Measurement is one timestamped set of fields. Time is zero when the device
// gave none. Field values are float64, bool or string only.
type Measurement struct {
	Time   time.Time
	Fields map[string]any
}

// DecodeTelemetry parses a telemetry payload: a JSON object, a CBOR map, or a
// SenML pack in JSON or CBOR. See the package documentation for the mapping.
//
// contentType "" or OctetStream means sniff: the first non-space byte '{'
// selects a JSON object, '[' SenML JSON; anything else is tried as CBOR (a
// map is an object, an array a SenML pack). With JSON or CBOR, a top-level
// array is likewise read as a SenML pack; SenMLJSON and SenMLCBOR require
// one. Media type parameters such as "; charset=utf-8" are ignored. Other
// content types (TextPlain included) are refused.
//
// Errors are of type *Error and wrap ErrInvalid.
func DecodeTelemetry(contentType string, body []byte) ([]Measurement, error) {
	return decodeTelemetry(contentType, body, time.Now)
}

// decodeTelemetry is DecodeTelemetry with the clock used to resolve relative
// SenML times; it is called only for SenML packs.
func decodeTelemetry(contentType string, body []byte, now func() time.Time) ([]Measurement, error) {
	switch ct := normalType(contentType); ct {
	case JSON:
		switch firstJSONByte(body) {
		case '[':
			return decodeSenMLJSON(body, now)
		case 0:
			return nil, errEmpty
		}
		return decodeObjectTelemetryJSON(body)
	case SenMLJSON:
		if firstJSONByte(body) == 0 {
			return nil, errEmpty
		}
		return decodeSenMLJSON(body, now)
	case CBOR:
		switch cborKind(body) {
		case kindArray:
			return decodeSenMLCBOR(body, now)
		case kindNone:
			return nil, errEmpty
		}
		return decodeObjectTelemetryCBOR(body)
	case SenMLCBOR:
		if len(body) == 0 {
			return nil, errEmpty
		}
		return decodeSenMLCBOR(body, now)
	case "", OctetStream:
		switch firstJSONByte(body) {
		case '{':
			return decodeObjectTelemetryJSON(body)
		case '[':
			return decodeSenMLJSON(body, now)
		case 0:
			return nil, errEmpty
		}
		switch cborKind(body) {
		case kindMap:
			return decodeObjectTelemetryCBOR(body)
		case kindArray:
			return decodeSenMLCBOR(body, now)
		}
		return nil, errUnrecognized
	default:
		return nil, errorf("unsupported content type %q", contentType)
	}
}

// DecodeObject parses a JSON object or CBOR map (for reported and desired
// state) into a map with JSON-compatible values: float64, string, bool, nil,
// []any and map[string]any, as encoding/json would produce. contentType ""
// or OctetStream sniffs: a first non-space byte '{' means JSON, anything else
// is tried as CBOR.
//
// CBOR specifics: map keys must be text strings; byte strings become
// base64url strings without padding (RFC 8949 §6.1); tag numbers are
// ignored except bignums (tags 2 and 3), which become numbers; NaN and
// infinities are refused as JSON cannot carry them. Duplicate keys are an
// error in both syntaxes. Nesting is limited to MaxDepth levels.
func DecodeObject(contentType string, body []byte) (map[string]any, error) {
	switch ct := normalType(contentType); ct {
	case JSON:
		return decodeObjectJSON(body)
	case CBOR:
		return decodeObjectCBOR(body)
	case "", OctetStream:
		switch firstJSONByte(body) {
		case '{', '[':
			return decodeObjectJSON(body)
		case 0:
			return nil, errEmpty
		}
		return decodeObjectCBOR(body)
	default:
		return nil, errorf("unsupported content type %q", contentType)
	}
}

var (
	errEmpty        = newError("empty payload")
	errUnrecognized = newError("unrecognized payload: want a JSON object, a SenML JSON array, or a CBOR map or array")
	errNoFields     = newError("no fields")
	errTooMany      = errorf("more than %d fields", MaxFields)
	errDepth        = errorf("nested deeper than %d levels", MaxDepth)
	errTS           = newError("ts: not RFC 3339 or Unix milliseconds")
	errTSDup        = newError("ts: given twice")
	errNotObject    = newError("not an object")
	errNotFinite    = newError("not a finite number")
)

// firstJSONByte returns the first byte that is not JSON white space, or 0
// if there is none.
func firstJSONByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}

// fieldSet collects the fields of one flattened JSON or CBOR object.
type fieldSet struct {
	m     map[string]any
	ts    time.Time
	hasTS bool
}

// add adds a field after checking its name; name is the full dotted name.
func (f *fieldSet) add(name string, v any) error {
	if err := checkFieldName(name); err != nil {
		return err
	}
	n := len(f.m)
	if n >= MaxFields {
		if _, dup := f.m[name]; !dup {
			return errTooMany
		}
	}
	// Assigning and then looking at the length hashes the name once; the
	// value overwritten by a duplicate does not matter as decoding fails.
	f.m[name] = v
	if len(f.m) == n {
		return errorf("field %s: given twice", quoteName(name))
	}
	return nil
}

func (f *fieldSet) measurements() ([]Measurement, error) {
	if len(f.m) == 0 {
		return nil, errNoFields
	}
	return []Measurement{{Time: f.ts, Fields: f.m}}, nil
}

// checkFieldName checks the length of a field name and that it holds no
// control characters (which no time-series store takes in a field key).
func checkFieldName(name string) error {
	if len(name) > MaxFieldName {
		return errorf("field %s: name longer than %d bytes", quoteName(name), MaxFieldName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return errorf("field %s: control character in name", quoteName(name))
		}
	}
	return nil
}

// emptyKeyError reports an empty key inside the object at prefix (the
// flattened name so far, ending in '.' unless at the top level).
func emptyKeyError(prefix []byte) error {
	return errorf("field %s: empty name", quoteName(string(prefix)))
}

// fieldName returns the flattened name of key inside prefix.
func fieldName(prefix []byte, key string) string {
	if len(prefix) == 0 {
		return key
	}
	return string(prefix) + key
}

// maxUnixSeconds is 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const maxUnixSeconds = 253402300799

// timeFromMillis converts a "ts" given as Unix milliseconds. Fractions of a
// millisecond are kept to the microsecond.
func timeFromMillis(ms float64) (time.Time, bool) {
	if !(math.Abs(ms) <= maxUnixSeconds*1000+999) {
		return time.Time{}, false
	}
	whole := math.Trunc(ms)
	w := int64(whole)
	frac := math.Round((ms-whole)*1e3) * 1e3 // ns, rounded to the microsecond
	return time.Unix(w/1000, (w%1000)*1e6+int64(frac)).UTC(), true
}

// timeFromSeconds converts Unix seconds, rounded to the microsecond: a
// float64 holds about a quarter of a microsecond at current dates, so finer
// digits are noise.
func timeFromSeconds(s float64) (time.Time, bool) {
	if !(math.Abs(s) <= maxUnixSeconds) {
		return time.Time{}, false
	}
	whole := math.Trunc(s)
	frac := math.Round((s-whole)*1e6) * 1e3
	return time.Unix(int64(whole), int64(frac)).UTC(), true
}

// timeFromRFC3339 parses a "ts" string.
func timeFromRFC3339(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// isFinite reports whether f is neither NaN nor an infinity.
func isFinite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// mapSizeHint guesses the number of fields of a JSON object from its colons,
// so that the map does not grow while being filled.
func mapSizeHint(body []byte) int {
	n := bytes.Count(body, []byte{':'})
	if n > MaxFields {
		n = MaxFields
	}
	return n
}
