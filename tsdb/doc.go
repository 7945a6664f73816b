// Package tsdb stores device telemetry in InfluxDB and answers time-series queries, from
// InfluxDB when one is configured and from the hub's own IOT stream when not.
//
// # Writer
//
// A Writer is a durable JetStream consumer on the IOT stream (one per InfluxDB, bucket and
// subject filter; a new one starts from the oldest message the stream holds) that turns
// messages into points with a Mapper and writes them in batches with influxdb-client-go's
// blocking write API. A message is acknowledged only after the request holding its points has
// succeeded. When InfluxDB is unreachable or slow, the writer retries the same batch with
// exponential backoff and jitter and fetches nothing more: the consumer lags (visible in
// Writer.Status, Writer.Lag and tributary_tsdb_consumer_lag), memory stays bounded by
// Config.MaxAckPending, and the backlog is written when InfluxDB returns. Points InfluxDB
// refuses do not block the stream: the batch is split in halves until the refused message is
// alone, and that message goes to dead letters with InfluxDB's reason.
//
// The writer is generic: a Mapping pairs a subject filter with a Mapper, so results of other
// components can be written the same way. TelemetryMapping is the one for device telemetry.
//
// # Telemetry point mapping
//
// Each measurement of a message on devices/{id}/telemetry becomes one point:
//
//   - measurement: "telemetry" (Config.Measurement)
//   - tags: device=<device ID>; type=<device type> when it has one; and each of the device's
//     own tags with the prefix "tag_" (the tag site=berlin is written tag_site=berlin), so they
//     never collide with device, type or names InfluxDB reserves. Type and tags are looked up
//     in the registry when the message is written; an unknown device gets only its device tag.
//   - fields: the measurement's fields as decoded by package payload (nested objects flatten
//     to dotted names). The one name InfluxDB refuses, "time", is stored as "time_".
//   - timestamp: the event time in nanoseconds: the device's own timestamp when it sent one,
//     else the time the hub received the message. Further measurements of one message (SenML
//     packs) keep their offsets from the first.
//
// The same message always makes the same point, so a redelivered message overwrites itself
// and storing is idempotent. (If the device's tags change between a write and its
// redelivery, the copy lands in the new series.)
//
// # Field types
//
// InfluxDB fixes a field's type when it is first written (per measurement and shard, across
// all devices) and refuses later values of another type. So that normal devices never hit
// this, every JSON, CBOR or SenML number is stored as a float: a device sending 21 and later
// 21.5 writes the same float field. Booleans are boolean fields, strings string fields. The
// conflict left is a field that changes kind (number, string, boolean), e.g. "temp": 21.5 and
// later "temp": "n/a": that message is dead-lettered with InfluxDB's reason ("field type
// conflict") and its neighbours are stored. Use a new field name when a value changes kind.
//
// # Queries
//
// A Querier answers Query (one field of one device over a time range) and Latest. Both
// implementations, InfluxQuerier (Flux) and StreamQuerier (the raw stream, within its
// retention), give the same answers:
//
//   - The range is [From, To): From inclusive, To exclusive. Defaults: To now, From one hour
//     (DefaultRange) before To.
//   - Every = 0 and no Agg: the raw points in time order. At one timestamp there is one value:
//     the last written (InfluxDB overwrites; the stream querier keeps the latest message).
//   - Every > 0: windows of length Every aligned to the Unix epoch (a window starts at a
//     multiple of Every since 1970-01-01T00:00:00Z, as Flux's aggregateWindow); each point is
//     stamped with its window's start, also when From cuts the first window short. Windows
//     without values are left out. Agg defaults to mean.
//   - Every = 0 with Agg: one aggregate over the whole range, stamped with From (nothing when
//     the range is empty).
//   - Agg is one of mean, min, max, sum (numbers only: a boolean or string field gives
//     ErrFieldType, naming the field), count (int64), first and last (any type; by time).
//   - Answers hold at most MaxPoints points (ErrTooManyPoints); Every that would give more
//     windows is refused up front (ErrBadQuery).
//   - Latest gives the newest value of each field by event time (from 1970 to 2200).
//
// ParseQuery, ParseTime, ParseDuration and ParseAgg read the HTTP query parameters: times
// are RFC 3339, Unix milliseconds, "now", or relative like "-1h", "-30m", "-7d".
package tsdb
