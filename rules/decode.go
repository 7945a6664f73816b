package rules

import (
	"encoding/json"
	"maps"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/window"
)

// DeviceLookup finds a device's type and tags. *devices.Registry satisfies it.
type DeviceLookup interface {
	Get(id string) (devices.Device, error)
}

// decodeEvents turns one stored message into the events a rule sees. Messages of devices give
// one event per measurement (telemetry) or one event whose fields are the payload object
// (events, state); messages of rules give one event whose fields are the result's values.
// Type and tags are looked up in the registry when the message is processed.
//
// A message whose payload cannot be decoded still gives one event without fields, so count(*)
// counts it; telemetry that cannot be decoded (never stored by the ingest) gives none.
func decodeEvents(env *streams.Envelope, devs DeviceLookup) []window.Event {
	base := env.EventTime
	if base.IsZero() {
		base = env.ReceivedAt
	}
	ev := window.Event{Time: base, Received: env.ReceivedAt, Device: env.DeviceID, Seq: env.Seq}
	if strings.HasPrefix(env.Topic, "rules/") {
		if decodeResult(env, &ev, devs) {
			return []window.Event{ev}
		}
	}
	if ev.Device == "" {
		if rest, ok := strings.CutPrefix(env.Topic, "devices/"); ok {
			ev.Device, _, _ = strings.Cut(rest, "/")
		}
	}
	lookup(devs, &ev)
	if isTelemetry(env.Topic) || env.Meta["source_topic"] != "" && isTelemetry(env.Meta["source_topic"]) {
		ms, err := payload.DecodeTelemetry(env.ContentType, env.Payload)
		if err != nil || len(ms) == 0 {
			if isTelemetry(env.Topic) {
				return nil
			}
		} else {
			return measurementEvents(ev, ms)
		}
	}
	if obj, err := payload.DecodeObject(env.ContentType, env.Payload); err == nil {
		ev.Fields = obj
	}
	return []window.Event{ev}
}

func isTelemetry(topic string) bool {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return false
	}
	_, kind, _ := strings.Cut(rest, "/")
	return kind == "telemetry"
}

// measurementEvents gives each measurement its time the way the ingest and the time-series
// writer do: without a time of its own it takes the envelope's event time; when the first
// measurement has one, the event time stands for it and the others keep their offsets, so
// SenML times relative to "now" resolve to the same instants every time the message is read.
func measurementEvents(ev window.Event, ms []payload.Measurement) []window.Event {
	out := make([]window.Event, len(ms))
	anchor := ms[0].Time
	for i, m := range ms {
		e := ev
		switch {
		case m.Time.IsZero():
		case !anchor.IsZero():
			e.Time = ev.Time.Add(m.Time.Sub(anchor))
		}
		e.Fields = m.Fields
		out[i] = e
	}
	return out
}

func lookup(devs DeviceLookup, ev *window.Event) {
	if devs == nil || ev.Device == "" {
		return
	}
	if d, err := devs.Get(ev.Device); err == nil {
		ev.Type, ev.Tags = d.Type, d.Tags
	}
}

// decodeResult reads a rule's result or notification: fields are the values, plus group keys
// that are payload fields, plus "state" for notifications and "rule"; the device, type and
// tags come from the group where it has them, else from the registry.
func decodeResult(env *streams.Envelope, ev *window.Event, devs DeviceLookup) bool {
	var m struct {
		Rule   string         `json:"rule"`
		Group  map[string]any `json:"group"`
		Values map[string]any `json:"values"`
		State  string         `json:"state"`
	}
	if json.Unmarshal(env.Payload, &m) != nil || m.Values == nil {
		return false
	}
	fields := make(map[string]any, len(m.Values)+len(m.Group)+2)
	var groupTags map[string]string
	for k, v := range m.Group {
		switch {
		case k == "device":
			if s, ok := v.(string); ok {
				ev.Device = s
			}
		case k == "type":
		case strings.HasPrefix(k, "tags."):
			if s, ok := v.(string); ok {
				if groupTags == nil {
					groupTags = map[string]string{}
				}
				groupTags[k[len("tags."):]] = s
			}
		default:
			fields[strings.TrimPrefix(k, "payload.")] = v
		}
	}
	lookup(devs, ev)
	if t, ok := m.Group["type"].(string); ok {
		ev.Type = t
	}
	if groupTags != nil {
		tags := maps.Clone(ev.Tags)
		if tags == nil {
			tags = map[string]string{}
		}
		maps.Copy(tags, groupTags)
		ev.Tags = tags
	}
	if m.Rule != "" {
		fields["rule"] = m.Rule
	}
	if m.State != "" {
		fields["state"] = m.State
	}
	for k, v := range m.Values {
		fields[k] = v
	}
	ev.Fields = fields
	return true
}

// Result is the JSON of a result on rules/<name>/results, and of a notification on
// rules/<name>/alerts, MQTT outputs, commands and webhooks (which add State).
type Result struct {
	Rule        string         `json:"rule"`
	ID          string         `json:"id"`
	Group       map[string]any `json:"group"`
	GroupKey    string         `json:"group_key"`
	WindowStart time.Time      `json:"window_start"`
	WindowEnd   time.Time      `json:"window_end"`
	Values      map[string]any `json:"values"`
	// State is "fired" or "cleared" in notifications of rules with notify "change".
	State string `json:"state,omitempty"`
}
