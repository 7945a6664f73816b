package protocols_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

func TestIngestAcceptsAndRejects(t *testing.T) {
	bus := streamstest.New(t)
	in := protocols.NewIngest(bus, 64, streamstest.Logger(t))
	ctx := context.Background()
	dev := protocols.Identity{DeviceID: "d1"}

	env, err := in.Accept(ctx, protocols.Message{From: dev, Topic: "devices/d1/telemetry", Payload: []byte(`{"t":21.5,"ts":1700000000000}`), Protocol: "mqtt", Reliable: true})
	if err != nil {
		t.Fatalf("valid telemetry rejected: %v", err)
	}
	if want := time.UnixMilli(1700000000000); !env.EventTime.Equal(want) || env.ContentType != "application/json" {
		t.Errorf("event time %v, content type %q; want %v and application/json", env.EventTime, env.ContentType, want)
	}
	if env.ReceivedAt.Equal(env.EventTime) {
		t.Errorf("receive time should be kept apart from the device's timestamp")
	}
	page, err := bus.Latest(ctx, []string{"devices/d1/telemetry"}, 10, 0)
	if err != nil || len(page.Messages) != 1 || page.Messages[0].ID != env.ID {
		t.Fatalf("stored: %d messages, %v; want the accepted one", len(page.Messages), err)
	}

	tests := []struct {
		name    string
		msg     protocols.Message
		kind    error
		inWords string
	}{
		{"foreign device", protocols.Message{From: dev, Topic: "devices/d2/telemetry", Payload: []byte(`{"t":1}`)}, protocols.ErrForbidden, "devices/d1/"},
		{"outside devices/", protocols.Message{From: dev, Topic: "x/y", Payload: []byte(`{}`)}, protocols.ErrForbidden, "devices/d1/"},
		{"hub-to-device kind", protocols.Message{From: dev, Topic: "devices/d1/state/desired", Payload: []byte(`{}`)}, protocols.ErrForbidden, "state/desired"},
		{"unknown kind", protocols.Message{From: dev, Topic: "devices/d1/nonsense", Payload: []byte(`{}`)}, protocols.ErrUnknownTopic, "devices/d1/nonsense"},
		{"bad json", protocols.Message{From: dev, Topic: "devices/d1/telemetry", Payload: []byte(`{"t":`)}, protocols.ErrInvalidPayload, "telemetry"},
		{"state not an object", protocols.Message{From: dev, Topic: "devices/d1/state/reported", Payload: []byte(`[1]`)}, protocols.ErrInvalidPayload, "state/reported"},
		{"status from a device", protocols.Message{From: dev, Topic: "devices/d1/status", Payload: []byte(`{}`)}, protocols.ErrForbidden, "status"},
		{"status from an app", protocols.Message{From: protocols.Identity{App: true}, Topic: "devices/d1/status", Payload: []byte(`{}`)}, protocols.ErrForbidden, "hub only"},
		{"too large", protocols.Message{From: dev, Topic: "devices/d1/events/x", Payload: []byte(strings.Repeat("x", 65))}, protocols.ErrTooLarge, "65 bytes"},
	}
	for _, tt := range tests {
		tt.msg.Protocol = "coap"
		_, err := in.Accept(ctx, tt.msg)
		var rej *protocols.Rejection
		if !errors.As(err, &rej) || !errors.Is(err, tt.kind) || !strings.Contains(rej.Reason, tt.inWords) {
			t.Errorf("%s: got %v, want %v mentioning %q", tt.name, err, tt.kind, tt.inWords)
		}
	}
	dead, err := bus.DeadLetters(ctx, "", 100, 0)
	if err != nil || len(dead.Messages) != len(tests) {
		t.Fatalf("dead letters: %d, %v; want %d", len(dead.Messages), err, len(tests))
	}
	for i, d := range dead.Messages {
		if d.Meta[streams.MetaReason] == "" || d.Protocol != "coap" {
			t.Errorf("dead letter %d (%s) has reason %q protocol %q", i, d.Topic, d.Meta[streams.MetaReason], d.Protocol)
		}
	}
	// Events pass through as bytes; apps may publish anywhere valid.
	if _, err := in.Accept(ctx, protocols.Message{From: dev, Topic: "devices/d1/events/raw", Payload: []byte{0xff, 0x00}, Reliable: true}); err != nil {
		t.Errorf("binary event rejected: %v", err)
	}
	if _, err := in.Accept(ctx, protocols.Message{From: protocols.Identity{App: true}, Topic: "apps/alerts", Payload: []byte("x"), Reliable: true}); err != nil {
		t.Errorf("app publish rejected: %v", err)
	}
}
