package hub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestQoS1MessagesAndDevicesSurviveRestart: every PUBACKed message is readable after the hub
// restarts on the same data dir, and so is the device.
func TestQoS1MessagesAndDevicesSurviveRestart(t *testing.T) {
	cfg := hubtest.Config(t.TempDir())
	h := hubtest.StartConfig(t, cfg)
	token := h.CreateDevice("keeper", map[string]any{"type": "meter"})
	dev := mqttConnect(t, h.MQTTAddr(), "keeper", "keeper", token)
	const n = 50
	for i := range n {
		if tok := dev.Publish("devices/keeper/telemetry", 1, false, fmt.Sprintf(`{"i":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	dev.Disconnect(10)
	h.Stop()

	h2 := hubtest.StartConfig(t, cfg)
	var d struct{ ID, Type string }
	if code := h2.Do("GET", "/api/v1/devices/keeper", nil, &d); code != 200 || d.Type != "meter" {
		t.Fatalf("device after restart: %d %+v", code, d)
	}
	var raw struct {
		Messages []map[string]any
	}
	if code := h2.Do("GET", "/api/v1/devices/keeper/messages?limit=1000", nil, &raw); code != 200 || len(raw.Messages) != n {
		t.Fatalf("messages after restart: %d, %d messages, want %d", code, len(raw.Messages), n)
	}
	for i, m := range raw.Messages {
		if got, _ := m["payload"].(map[string]any); got == nil || got["i"] != float64(i) {
			t.Errorf("message %d = %v, want i=%d", i, m["payload"], i)
		}
	}
	// The device's token still works.
	if err := mqttTry(h2.MQTTAddr(), "keeper", token); err != nil {
		t.Errorf("device token after restart: %v", err)
	}
}

// TestExternalNATS runs the hub against a separately started nats-server.
func TestExternalNATS(t *testing.T) {
	ns := streamstest.Server(t)
	h := &testHub{Hub: hubtest.Start(t, func(c *hub.Config) { c.NATSURL = ns.ClientURL(); c.NATSAddr = "" })}
	h.tokens = map[string]string{"d1": h.CreateDevice("d1", nil)}
	if h.NATSURL() != "" {
		t.Errorf("hub reports an embedded NATS URL %q while using an external server", h.NATSURL())
	}
	subs := attachSubscribersAt(t, h, ns.ClientURL())
	dev := mqttConnect(t, h.MQTTAddr(), "d1", "d1", h.token("d1"))
	dev.Publish("devices/d1/telemetry", 1, false, `{"external":true}`).Wait()
	subs.expectOnce(t, `{"external":true}`)
	// The stream lives in the external server.
	jsz, _ := ns.Jsz(&server.JSzOptions{Streams: true})
	if jsz == nil || jsz.Streams < 2 {
		t.Errorf("external server has %v streams, want the hub's", jsz)
	}
}
