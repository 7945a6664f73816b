package protocols

import (
	"strings"
)

// Kind is what a topic under devices/{id}/ carries.
type Kind int

const (
	KindInvalid       Kind = iota
	KindTelemetry          // devices/{id}/telemetry            device → hub
	KindEvent              // devices/{id}/events/{name}        device → hub
	KindStateReported      // devices/{id}/state/reported       device → hub
	KindStateDesired       // devices/{id}/state/desired        hub → device
	KindCommand            // devices/{id}/commands/{name}      hub → device
	KindCommandResult      // devices/{id}/commands/{name}/result device → hub
	KindStatus             // devices/{id}/status               hub only (liveness events)
)

func (k Kind) String() string {
	return [...]string{"invalid", "telemetry", "event", "state/reported", "state/desired", "command", "command result", "status"}[k]
}

// FromDevice reports whether devices may publish this kind.
func (k Kind) FromDevice() bool {
	return k == KindTelemetry || k == KindEvent || k == KindStateReported || k == KindCommandResult
}

// DeviceTopic is a parsed devices/{id}/... topic.
type DeviceTopic struct {
	DeviceID string
	Kind     Kind
	Name     string // event or command name
}

// validName accepts event and command names: one topic level of printable characters, no
// wildcards.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	return !strings.ContainsAny(s, "/+#\x00")
}

// ParseDeviceTopic parses a topic of the device layout in SPEC.md. ok is false when the topic is
// not under devices/; a topic under devices/ that fits no kind has Kind KindInvalid.
func ParseDeviceTopic(topic string) (dt DeviceTopic, ok bool) {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return DeviceTopic{}, false
	}
	parts := strings.Split(rest, "/")
	dt.DeviceID = parts[0]
	switch {
	case len(parts) == 2 && parts[1] == "telemetry":
		dt.Kind = KindTelemetry
	case len(parts) == 2 && parts[1] == "status":
		dt.Kind = KindStatus
	case len(parts) == 3 && parts[1] == "events" && validName(parts[2]):
		dt.Kind, dt.Name = KindEvent, parts[2]
	case len(parts) == 3 && parts[1] == "state" && parts[2] == "reported":
		dt.Kind = KindStateReported
	case len(parts) == 3 && parts[1] == "state" && parts[2] == "desired":
		dt.Kind = KindStateDesired
	case len(parts) == 3 && parts[1] == "commands" && validName(parts[2]):
		dt.Kind, dt.Name = KindCommand, parts[2]
	case len(parts) == 4 && parts[1] == "commands" && validName(parts[2]) && parts[3] == "result":
		dt.Kind, dt.Name = KindCommandResult, parts[2]
	}
	return dt, true
}

// DeviceMaySubscribe reports whether device id may subscribe to filter: only its own
// state/desired and commands (SPEC.md).
func DeviceMaySubscribe(id, filter string) bool {
	prefix := "devices/" + id + "/"
	rest, ok := strings.CutPrefix(filter, prefix)
	if !ok {
		return false
	}
	switch rest {
	case "state/desired", "commands/#", "commands/+":
		return true
	}
	if name, ok := strings.CutPrefix(rest, "commands/"); ok && validName(name) {
		return true
	}
	return false
}
