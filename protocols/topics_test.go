package protocols

import "testing"

func TestParseDeviceTopic(t *testing.T) {
	tests := []struct {
		topic string
		isDev bool
		id    string
		kind  Kind
		name  string
	}{
		{"devices/d1/telemetry", true, "d1", KindTelemetry, ""},
		{"devices/d1/events/door", true, "d1", KindEvent, "door"},
		{"devices/d1/state/reported", true, "d1", KindStateReported, ""},
		{"devices/d1/state/desired", true, "d1", KindStateDesired, ""},
		{"devices/d1/commands/reboot", true, "d1", KindCommand, "reboot"},
		{"devices/d1/commands/reboot/result", true, "d1", KindCommandResult, "reboot"},
		{"devices/d1/status", true, "d1", KindStatus, ""},
		{"devices/d1/telemetry/x", true, "d1", KindInvalid, ""},
		{"devices/d1/events", true, "d1", KindInvalid, ""},
		{"devices/d1/events/", true, "d1", KindInvalid, ""},
		{"devices/d1/state/other", true, "d1", KindInvalid, ""},
		{"other/d1/telemetry", false, "", KindInvalid, ""},
	}
	for _, tt := range tests {
		dt, ok := ParseDeviceTopic(tt.topic)
		if ok != tt.isDev || dt.DeviceID != tt.id || dt.Kind != tt.kind || dt.Name != tt.name {
			t.Errorf("ParseDeviceTopic(%q) = %+v, %v; want {%s %v %s}, %v", tt.topic, dt, ok, tt.id, tt.kind, tt.name, tt.isDev)
		}
	}
}

func TestDeviceMaySubscribe(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"devices/d1/state/desired", true},
		{"devices/d1/commands/#", true},
		{"devices/d1/commands/+", true},
		{"devices/d1/commands/reboot", true},
		{"devices/d2/commands/#", false},
		{"devices/+/commands/#", false},
		{"devices/d1/#", false},
		{"devices/d1/telemetry", false},
		{"#", false},
	}
	for _, tt := range tests {
		if got := DeviceMaySubscribe("d1", tt.filter); got != tt.want {
			t.Errorf("DeviceMaySubscribe(d1, %q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}
