package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

func TestOutcome(t *testing.T) {
	rej := func(kind error) error { return &protocols.Rejection{Kind: kind, Reason: "because"} }
	unavailable := &protocols.Rejection{Kind: protocols.ErrUnavailable, Reason: "nats: timeout"}
	for _, tc := range []struct {
		version, qos byte
		err          error
		act          action
		code         byte
	}{
		{5, 1, nil, actAck, 0x00},
		{4, 1, nil, actAck, 0x00},
		{5, 0, nil, actAck, 0x00},
		{5, 1, rej(protocols.ErrForbidden), actNack, 0x87},
		{5, 2, rej(protocols.ErrForbidden), actNack, 0x87},
		{5, 1, rej(protocols.ErrNotAuthorized), actNack, 0x87},
		{5, 1, rej(protocols.ErrUnknownTopic), actNack, 0x90},
		{5, 1, rej(protocols.ErrInvalidPayload), actNack, 0x99},
		{5, 1, rej(protocols.ErrTooLarge), actNack, 0x95},
		{5, 0, rej(protocols.ErrForbidden), actNoAck, 0x87},
		{5, 0, rej(protocols.ErrInvalidPayload), actNoAck, 0x99},
		{5, 1, unavailable, actRetry, 0x83},
		{5, 1, errors.New("context deadline exceeded"), actRetry, 0x83},
		{4, 1, rej(protocols.ErrForbidden), actDisconnect, 0x87},
		{4, 0, rej(protocols.ErrForbidden), actDisconnect, 0x87},
		{3, 1, rej(protocols.ErrForbidden), actDisconnect, 0x87},
		{4, 1, rej(protocols.ErrInvalidPayload), actAck, 0x99},
		{4, 1, rej(protocols.ErrUnknownTopic), actAck, 0x90},
		{4, 1, rej(protocols.ErrTooLarge), actAck, 0x95},
		{4, 1, unavailable, actRetry, 0x83},
		{4, 0, unavailable, actNoAck, 0x83},
	} {
		act, code := outcome(tc.version, tc.qos, tc.err)
		if act != tc.act || code.Code != tc.code {
			t.Errorf("v%d QoS %d %v: got %v %#x, want %v %#x", tc.version, tc.qos, tc.err, act, code.Code, tc.act, tc.code)
		}
	}
}

func TestToMessage(t *testing.T) {
	dev := identify([]byte("d1"))
	if dev.App || dev.DeviceID != "d1" {
		t.Fatalf("identify(d1): got %+v, want device d1", dev)
	}
	if app := identify([]byte(protocols.AppUsername)); !app.App || app.DeviceID != "" {
		t.Fatalf("identify(app): got %+v, want an application", app)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName:   "devices/d1/telemetry",
		Payload:     []byte(`{"t":1}`),
		Properties:  packets.Properties{ContentType: " application/json "},
	}
	m := toMessage(dev, pk)
	want := protocols.Message{From: dev, Topic: "devices/d1/telemetry", ContentType: "application/json",
		Payload: pk.Payload, Protocol: "mqtt", Reliable: true, Meta: map[string]string{MetaRetain: "true"}}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("toMessage: got %+v, want %+v", m, want)
	}
	pk.FixedHeader.Qos, pk.FixedHeader.Retain, pk.Properties.ContentType = 0, false, ""
	if m := toMessage(dev, pk); m.Reliable || m.Meta != nil || m.ContentType != "" {
		t.Errorf("QoS 0, no retain, no content type: got %+v, want unreliable, no meta, sniffed type", m)
	}
}

func TestContentType(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "",
		"application/json":                "application/json",
		"  application/senml+cbor\t":      "application/senml+cbor",
		"text/plain; charset=utf-8":       "text/plain; charset=utf-8",
		"application/json\x00":            "",
		"bad\nvalue":                      "",
		"\xff\xfe":                        "",
		strings.Repeat("a", 300):          "",
		"application/vnd.example+json; v": "application/vnd.example+json; v",
	} {
		if got := contentType(in); got != want {
			t.Errorf("contentType(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestReasonString(t *testing.T) {
	rej := &protocols.Rejection{Kind: protocols.ErrInvalidPayload, Reason: "telemetry: unexpected end of JSON input"}
	if got := reasonString(rej); got != rej.Reason {
		t.Errorf("got %q, want the rejection's reason %q", got, rej.Reason)
	}
	long := &protocols.Rejection{Kind: protocols.ErrInvalidPayload, Reason: strings.Repeat("é", 200) + "\xff"}
	if got := reasonString(long); len(got) > maxReasonString || !utf8.ValidString(got) {
		t.Errorf("long reason: got %d bytes (valid UTF-8 %t), want at most %d valid", len(got), utf8.ValidString(got), maxReasonString)
	}
}

func TestDelivery(t *testing.T) {
	for _, tc := range []struct {
		topic  string
		meta   map[string]string
		retain bool
		qos    byte
	}{
		{"devices/d1/state/desired", nil, true, 1},
		{"devices/d1/commands/reboot", nil, false, 1},
		{"devices/d1/commands/reboot/result", nil, false, 0},
		{"devices/d1/telemetry", nil, false, 0},
		{"devices/d1/state/reported", map[string]string{MetaRetain: "true"}, true, 0},
		{"devices/d1/events/door", nil, false, 0},
		{"apps/alerts", map[string]string{MetaRetain: "true"}, true, 0},
		{"apps/alerts", map[string]string{"other": "x"}, false, 0},
	} {
		retain, qos := delivery(&streams.Envelope{Topic: tc.topic, Meta: tc.meta})
		if retain != tc.retain || qos != tc.qos {
			t.Errorf("%s %v: got retain %t QoS %d, want %t %d", tc.topic, tc.meta, retain, qos, tc.retain, tc.qos)
		}
	}
}

// FuzzPublishTranslation feeds arbitrary PUBLISH fields through the translations the publish
// hook and the fan-out make, checking what they promise: the topic and payload reach the
// pipeline unchanged, reliability follows the QoS, the content type is clean, a refusal never
// acks an MQTT 5 message that was not stored, and the fan-out answer is a valid QoS.
func FuzzPublishTranslation(f *testing.F) {
	f.Add("devices/d1/telemetry", "application/json", []byte(`{"t":1}`), byte(1), byte(5), true, "d1")
	f.Add("devices/d1/state/desired", "", []byte(`{}`), byte(0), byte(4), false, "app")
	f.Add("devices/d2/commands/x", " text/plain; charset=utf-8 ", []byte("on"), byte(2), byte(3), false, "d1")
	f.Add("", "\xff\x00", []byte{0xa1, 0x61, 0x74, 0x01}, byte(7), byte(0), true, "")
	f.Add("devices//state/desired", strings.Repeat("x", 300), []byte(nil), byte(1), byte(5), true, "app")
	kinds := []error{nil, protocols.ErrForbidden, protocols.ErrNotAuthorized, protocols.ErrUnknownTopic,
		protocols.ErrInvalidPayload, protocols.ErrTooLarge, protocols.ErrUnavailable, errors.New("timeout")}
	f.Fuzz(func(t *testing.T, topic, ct string, payload []byte, qos, version byte, retain bool, user string) {
		qos %= 3
		from := identify([]byte(user))
		if from.App != (user == protocols.AppUsername) || (!from.App && from.DeviceID != user) {
			t.Fatalf("identify(%q): got %+v", user, from)
		}
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
			TopicName:   topic, Payload: payload, Properties: packets.Properties{ContentType: ct},
		}
		m := toMessage(from, pk)
		if m.Topic != topic || string(m.Payload) != string(payload) || m.Protocol != "mqtt" || m.From != from {
			t.Fatalf("toMessage changed the message: got %+v", m)
		}
		if m.Reliable != (qos > 0) {
			t.Fatalf("QoS %d: got Reliable %t", qos, m.Reliable)
		}
		if (m.Meta[MetaRetain] == "true") != retain {
			t.Fatalf("retain %t: got meta %v", retain, m.Meta)
		}
		if c := m.ContentType; len(c) > maxContentType || !utf8.ValidString(c) || strings.TrimSpace(c) != c || strings.ContainsAny(c, "\x00\r\n") {
			t.Fatalf("content type %q: got %q", ct, c)
		}

		for _, kind := range kinds {
			var err error
			if kind != nil {
				err = &protocols.Rejection{Kind: kind, Reason: string(payload)}
				if kind.Error() == "timeout" {
					err = kind
				}
			}
			act, code := outcome(version, qos, err)
			switch {
			case err == nil && act != actAck:
				t.Fatalf("stored: got %v, want ack", act)
			case err != nil && version >= 5 && act == actAck:
				t.Fatalf("v5 %v: acked a message that was not stored", err)
			case act == actNack && (version < 5 || qos == 0 || code.Code < 0x80):
				t.Fatalf("v%d QoS %d %v: got nack %#x", version, qos, err, code.Code)
			case errors.Is(err, protocols.ErrUnavailable) && qos == 0 && act != actNoAck:
				t.Fatalf("unavailable, QoS 0: got %v, want no ack", act)
			case errors.Is(err, protocols.ErrUnavailable) && qos > 0 && act != actRetry:
				t.Fatalf("unavailable: got %v, want retry (no ack, disconnect) so the client resends", act)
			case act == actDisconnect && !(version < 5 && (errors.Is(err, protocols.ErrForbidden) || errors.Is(err, protocols.ErrNotAuthorized))):
				t.Fatalf("v%d %v: got disconnect", version, err)
			}
			if err != nil {
				if s := reasonString(err); len(s) > maxReasonString || !utf8.ValidString(s) {
					t.Fatalf("reason string %q is not a short valid UTF-8 string", s)
				}
			}
		}

		env := &streams.Envelope{Topic: topic, Payload: payload, Meta: m.Meta}
		r, q := delivery(env)
		if q > 1 {
			t.Fatalf("fan-out QoS %d for %q", q, topic)
		}
		if retain && !r {
			t.Fatalf("publisher's retain flag lost for %q", topic)
		}
		if dt, ok := protocols.ParseDeviceTopic(topic); ok && dt.Kind == protocols.KindStateDesired && (!r || q != 1) {
			t.Fatalf("desired state %q: got retain %t QoS %d, want retained at QoS 1", topic, r, q)
		}
	})
}
