package tsdb

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/streams"
)

// Mapper turns one message into the points that store it. It must be deterministic: the same
// message always gives the same points (measurement, tags, fields and timestamp), so writing a
// redelivered message again changes nothing. An error sends the message to dead letters with
// the error as the reason; no points and no error skips the message.
type Mapper func(*streams.Envelope) ([]*write.Point, error)

// Mapping says which messages of the IOT stream a Writer stores, and how.
type Mapping struct {
	// Subject is the NATS subject filter, e.g. TelemetrySubject.
	Subject string
	// Map builds the points of one message.
	Map Mapper
	// Durable names the JetStream consumer. Empty: "tsdb-" and a hash of the InfluxDB URL,
	// bucket and Subject, so each InfluxDB gets its own consumer and position.
	Durable string
}

// DeviceLookup finds a device's type and tags. *devices.Registry satisfies it.
type DeviceLookup interface {
	Get(id string) (devices.Device, error)
}

// TelemetrySubject matches every device's telemetry.
const TelemetrySubject = streams.SubjectPrefix + ".devices.*.telemetry"

// Tag keys written with every telemetry point.
const (
	TagDevice = "device"
	TagType   = "type"
	// TagPrefix starts the key of each of the device's own tags: the tag "site" is written as
	// "tag_site", so device tags never collide with "device", "type", or names InfluxDB reserves.
	TagPrefix = "tag_"
)

// TelemetryMapping stores device telemetry: see the package documentation for the mapping.
// devices may be nil (points then carry only the device tag).
func TelemetryMapping(devs DeviceLookup, measurement string) Mapping {
	if measurement == "" {
		measurement = DefaultMeasurement
	}
	return Mapping{Subject: TelemetrySubject, Map: TelemetryMapper(devs, measurement)}
}

// TelemetryMapper builds one point per measurement of a telemetry message.
func TelemetryMapper(devs DeviceLookup, measurement string) Mapper {
	return func(env *streams.Envelope) ([]*write.Point, error) {
		samples, err := DecodeSamples(env)
		if err != nil {
			return nil, err
		}
		tags := deviceTags(devs, env.DeviceID)
		pts := make([]*write.Point, 0, len(samples))
		for _, s := range samples {
			pts = append(pts, write.NewPoint(measurement, tags, s.Fields, s.Time))
		}
		return pts, nil
	}
}

func deviceTags(devs DeviceLookup, id string) map[string]string {
	tags := map[string]string{TagDevice: id}
	if devs == nil {
		return tags
	}
	d, err := devs.Get(id)
	if err != nil {
		return tags // unknown (e.g. deleted) device: still stored, under its ID
	}
	if d.Type != "" {
		tags[TagType] = d.Type
	}
	for k, v := range d.Tags {
		if v != "" { // InfluxDB drops empty tag values anyway
			tags[TagPrefix+k] = v
		}
	}
	return tags
}

// Sample is one timestamped set of fields of a telemetry message, as stored.
type Sample struct {
	Time   time.Time
	Fields map[string]any // float64, bool or string
}

// Range of timestamps InfluxDB can store (int64 nanoseconds, minus its sentinels).
var (
	minStorable = time.Unix(0, -1<<63+2).UTC()
	maxStorable = time.Unix(0, 1<<63-2).UTC()
)

// DecodeSamples decodes a telemetry message into what is stored, the same way for the writer
// and the stream-backed querier:
//
//   - Times: a measurement without its own time takes the envelope's event time. When the
//     message's first measurement has a time, the event time stands for it (the ingest took
//     it from there) and later measurements keep their offsets from it. So SenML times
//     relative to "now" resolve to the same instants each time the message is read.
//   - Field names: "time", which InfluxDB refuses as a field name, is stored as "time_".
func DecodeSamples(env *streams.Envelope) ([]Sample, error) {
	ms, err := payload.DecodeTelemetry(env.ContentType, env.Payload)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, errors.New("telemetry without measurements")
	}
	base := env.EventTime
	if base.IsZero() {
		base = env.ReceivedAt
	}
	if base.IsZero() {
		return nil, errors.New("message has no event time")
	}
	anchor := ms[0].Time
	out := make([]Sample, len(ms))
	for i, m := range ms {
		t := m.Time
		switch {
		case t.IsZero():
			t = base
		case !anchor.IsZero():
			t = base.Add(t.Sub(anchor))
		}
		if t.Before(minStorable) || t.After(maxStorable) {
			return nil, fmt.Errorf("time %s is outside what InfluxDB can store", t.Format(time.RFC3339Nano))
		}
		fields := m.Fields
		if _, ok := fields[reservedField]; ok {
			fields = make(map[string]any, len(m.Fields))
			for k, v := range m.Fields {
				fields[StoredField(k)] = v
			}
		}
		out[i] = Sample{Time: t.UTC(), Fields: fields}
	}
	return out, nil
}

const reservedField = "time"

// StoredField is the field name under which a device's field is stored: the name itself,
// except "time", which InfluxDB refuses, becomes "time_".
func StoredField(name string) string {
	if name == reservedField {
		return reservedField + "_"
	}
	return name
}

// consumerName derives a durable name that is stable for one InfluxDB, bucket and subject.
func consumerName(cfg Config, subject string) string {
	h := fnv64a(strings.TrimRight(cfg.URL, "/") + "\x00" + cfg.Org + "\x00" + cfg.Bucket + "\x00" + subject)
	return fmt.Sprintf("tsdb-%016x", h)
}

func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
