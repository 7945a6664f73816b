// Package payload decodes device payloads: telemetry measurements and
// device state objects, in JSON, CBOR and SenML (RFC 8428). It is pure: no
// I/O, no state, safe for concurrent use.
//
// # Telemetry
//
// [DecodeTelemetry] turns a telemetry payload into measurements, each a
// time and a set of fields, ready for a time-series store.
//
// A JSON object or CBOR map is one measurement:
//
//	{"temperature": 21.5, "door": false, "fw": "1.2", "env": {"rh": 40},
//	 "ts": 1700000000000}
//
// gives the fields temperature=21.5, door=false, fw="1.2", env.rh=40.0 at
// 2023-11-14T22:13:20Z. The mapping:
//
//   - Numbers become float64, integers included, so that a field never
//     changes type between integer and float in InfluxDB (which refuses a
//     float written to a field created as an integer, and the reverse).
//     NaN and infinities (CBOR) and numbers beyond float64 (JSON) are
//     errors.
//   - Booleans stay bool, strings stay string. CBOR byte strings become
//     base64url text without padding (RFC 8949 §6.1).
//   - Nested objects flatten to dotted names: {"a":{"b":1}} is the field
//     "a.b". Arrays are refused, naming the field. Empty names are refused.
//   - Null (and CBOR undefined) values are skipped: one sensor that could
//     not be read does not void the others.
//   - A top-level "ts" is the device's timestamp and not a field: an
//     RFC 3339 string or a number of Unix milliseconds (fractions kept to
//     the microsecond); in CBOR also tag 0 (RFC 3339) or tag 1 (Unix
//     seconds). "ts": null means no timestamp. Nested "ts" members are
//     ordinary fields ("a.ts").
//   - Without a timestamp, Measurement.Time is zero and the hub uses the
//     time it received the message. Times are in UTC.
//   - The same field name twice is an error: {"a":1,"a":2}, or "a.b" next
//     to {"a":{"b":2}}. Keys repeated without a clash, as in
//     {"a":{"b":1},"a":{"c":2}} or {"a":null,"a":1}, are accepted.
//
// A SenML pack (JSON content-format 110, CBOR 112 with the integer labels
// of RFC 8428 §6) is resolved as RFC 8428 §4.6 says: base name, time,
// value and sum carry over to the following records; the field name is
// base name + name; the value is base value + v, or vs, vb, or vd (kept as
// base64url text); a record with only a sum gives the sum under the name,
// and a sum next to a value is stored as "<name>.sum". Resolved time is
// base time + time in seconds: 0 (no time given) leaves Time zero, values
// below 2^28 are relative to now (negative: in the past), larger ones are
// Unix times; times are rounded to the microsecond. Records with equal
// resolved times become one measurement, in the order they first appear.
// Units are checked but not kept. Names must follow RFC 8428 §4.5.1
// (letters, digits and "-:./_", starting with a letter or digit). Labels
// this package does not know are ignored unless they end in "_" (RFC 8428
// §4.4); a version (bver) above 10 is refused. Records are counted from 0
// in error messages ("senml record 0: no value"). A record without a value
// or sum, two values in one record, or the same name twice at the same time
// are errors.
//
// Limits, for every format: names of at most [MaxFieldName] bytes without
// control characters, at most [MaxFields] fields per message, nesting at
// most [MaxDepth] levels deep. A message with no fields is an error.
//
// # State
//
// [DecodeObject] parses a JSON object or CBOR map into a map[string]any
// holding what encoding/json would produce (float64, string, bool, nil,
// []any, map[string]any), for reported and desired device state. Nulls are
// kept there: in desired state they delete a key.
//
// # Errors
//
// Every error is an [*Error] whose Reason says what is wrong in words fit
// for the device's developer ("field \"x\": arrays are not supported"), and
// wraps [ErrInvalid].
package payload
