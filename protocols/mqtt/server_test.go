package mqtt_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/mqtt"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

func TestQoS1StoredBeforeAckAndDeliveredOnce(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	tcp := "tcp://" + h.srv.Addr()
	deliveries := metricValue(protocols.Deliveries.WithLabelValues("mqtt"))

	app3, in3 := mustV3(t, tcp, "app-v3", protocols.AppUsername, apiKey)
	if got := v3Subscribe(t, app3, "devices/+/telemetry", 1); got != 1 {
		t.Fatalf("v3 app SUBACK: got %#x, want 0x01", got)
	}
	app5 := mustV5(t, h.srv.Addr(), "app-v5", protocols.AppUsername, apiKey)
	if got := app5.subscribe(t, "devices/#", 1); got != 1 {
		t.Fatalf("v5 app SUBACK: got %#x, want 0x01", got)
	}

	dev, _ := mustV3(t, tcp, "d1", "d1", h.tokens["d1"])
	const payload = `{"temperature":21.5,"door":false}`
	if err := v3Publish(t, dev, "devices/d1/telemetry", 1, payload); err != nil {
		t.Fatalf("QoS 1 publish: %v", err)
	}
	// The PUBACK has arrived: the message must be in the stream already, no waiting.
	stored := h.stored(t, "devices/d1/telemetry")
	if len(stored) != 1 || string(stored[0].Payload) != payload || stored[0].Protocol != "mqtt" || stored[0].DeviceID != "d1" {
		t.Fatalf("stream right after PUBACK: got %d messages %v, want the one published", len(stored), stored)
	}

	// A v5 device names its payload format with the Content-Type property.
	dev5 := mustV5(t, h.srv.Addr(), "d2", "d2", h.tokens["d2"])
	senml := `[{"n":"temp","v":20.5}]`
	if rc := dev5.publish(t, "devices/d2/telemetry", 1, []byte(senml), "application/senml+json"); rc != 0 {
		t.Fatalf("v5 QoS 1 publish: got reason %#x, want 0", rc)
	}
	if s := h.stored(t, "devices/d2/telemetry"); len(s) != 1 || s[0].ContentType != "application/senml+json" {
		t.Fatalf("stored v5 message: got %v, want one with content type application/senml+json", s)
	}

	// The marker is stored after both; a subscriber that has the marker has had its chance to
	// receive a duplicate of the others (the fan-out keeps stream order).
	if err := v3Publish(t, dev, "devices/d1/telemetry", 1, `{"marker":1}`); err != nil {
		t.Fatalf("marker: %v", err)
	}
	for name, in := range map[string]*inbox{"v3": in3, "v5": app5.in} {
		in.waitFor(t, "devices/d1/telemetry", `{"marker":1}`)
		if n := in.count("devices/d1/telemetry", payload); n != 1 {
			t.Errorf("%s app received the telemetry %d times, want 1", name, n)
		}
		if n := in.count("devices/d2/telemetry", senml); n != 1 {
			t.Errorf("%s app received the SenML telemetry %d times, want 1", name, n)
		}
		if got := len(in.all()); got != 3 {
			t.Errorf("%s app received %d messages %v, want 3", name, got, in.all())
		}
	}
	if m := app5.in.waitFor(t, "devices/d2/telemetry", senml); m.ContentType != "application/senml+json" {
		t.Errorf("v5 delivery content type: got %q, want application/senml+json", m.ContentType)
	}
	waitFor(t, func() error { // counted just after the write
		if got := metricValue(protocols.Deliveries.WithLabelValues("mqtt")) - deliveries; got != 6 {
			return fmt.Errorf("deliveries counted: got %v, want 6 (3 messages to 2 subscribers)", got)
		}
		return nil
	})
}

func TestQoS0AndWebSocket(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	app := mustV5(t, h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	if rc := app.subscribe(t, "devices/d1/#", 0); rc != 0 {
		t.Fatalf("SUBACK: got %#x, want 0", rc)
	}
	// The device publishes over WebSocket, at QoS 0.
	dev, _ := mustV3(t, "ws://"+h.srv.WSAddr()+"/mqtt", "d1-ws", "d1", h.tokens["d1"])
	for i := range 3 {
		if err := v3Publish(t, dev, "devices/d1/events/door", 0, fmt.Sprintf(`{"open":%d}`, i)); err != nil {
			t.Fatalf("QoS 0 publish over WebSocket: %v", err)
		}
	}
	for i := range 3 {
		app.in.waitFor(t, "devices/d1/events/door", fmt.Sprintf(`{"open":%d}`, i))
	}
	waitFor(t, func() error {
		if n := len(h.stored(t, "devices/d1/events/door")); n != 3 {
			return fmt.Errorf("stored: got %d, want 3", n)
		}
		return nil
	})
	// A subscriber over WebSocket gets messages too.
	wsApp, wsIn := mustV3(t, "ws://"+h.srv.WSAddr(), "app-ws", protocols.AppUsername, apiKey)
	v3Subscribe(t, wsApp, "devices/d1/events/+", 0)
	if err := v3Publish(t, dev, "devices/d1/events/door", 0, `{"open":9}`); err != nil {
		t.Fatal(err)
	}
	wsIn.waitFor(t, "devices/d1/events/door", `{"open":9}`)
}

func TestRefusedLogins(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	tcp := "tcp://" + h.srv.Addr()
	const v3NotAuthorized, v5NotAuthorized = 0x05, 0x87

	for _, tc := range []struct{ name, user, pass string }{
		{"wrong token", "d1", "nope"},
		{"unknown device", "ghost", "whatever"},
		{"wrong API key", protocols.AppUsername, "nope"},
		{"no username", "", ""},
	} {
		if got := v3Code(t, tcp, tc.user, tc.pass); got != v3NotAuthorized {
			t.Errorf("v3 %s: got return code %#x, want %#x", tc.name, got, v3NotAuthorized)
		}
		_, ca, err := v5(t, h.srv.Addr(), "refused", tc.user, tc.pass, nil)
		if err == nil || ca == nil || ca.ReasonCode != v5NotAuthorized {
			t.Errorf("v5 %s: got CONNACK %+v (%v), want reason %#x", tc.name, ca, err, v5NotAuthorized)
		}
	}
	// Wrong token and unknown device read the same, so IDs cannot be probed.
	for _, dev := range []string{"d1", "ghost"} {
		d := h.deadLetter(t, dev, "unknown device or wrong token")
		if d.Protocol != "mqtt" || !strings.Contains(d.Meta[streams.MetaReason], "not authorized") {
			t.Errorf("dead letter for %s: got protocol %q reason %q, want mqtt, not authorized", dev, d.Protocol, d.Meta[streams.MetaReason])
		}
	}
	h.deadLetter(t, "", "wrong API key")
	h.deadLetter(t, "", "no username")
}

func TestForeignTopic(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	app := mustV5(t, h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	app.subscribe(t, "devices/#", 1)

	dev5 := mustV5(t, h.srv.Addr(), "d1-v5", "d1", h.tokens["d1"])
	if rc := dev5.publish(t, "devices/d2/telemetry", 1, []byte(`{"t":1}`), ""); rc != 0x87 {
		t.Errorf("v5 publish to another device's topic: got reason %#x, want 0x87", rc)
	}
	if rc := dev5.publish(t, "devices/d1/commands/reboot", 1, []byte(`{}`), ""); rc != 0x87 {
		t.Errorf("v5 device publishing a command to itself: got reason %#x, want 0x87", rc)
	}
	// Still connected after a refusal.
	if rc := dev5.publish(t, "devices/d1/telemetry", 1, []byte(`{"ok":1}`), ""); rc != 0 {
		t.Errorf("v5 publish after a refusal: got reason %#x, want 0", rc)
	}

	dev3, _ := mustV3(t, "tcp://"+h.srv.Addr(), "d1-v3", "d1", h.tokens["d1"])
	tok := dev3.Publish("devices/d2/telemetry", 1, false, `{"t":2}`)
	tok.WaitTimeout(testTimeout / 2) // no PUBACK comes; the connection is closed
	waitFor(t, func() error {
		if dev3.IsConnectionOpen() {
			return fmt.Errorf("v3 client publishing to a foreign topic: got connected, want disconnected")
		}
		return nil
	})

	for _, payload := range []string{`{"t":1}`, `{"t":2}`} {
		waitFor(t, func() error {
			page, err := h.bus.DeadLetters(context.Background(), "d1", 100, 0)
			if err != nil {
				return err
			}
			for _, d := range page.Messages {
				if string(d.Payload) == payload && d.Topic == "devices/d2/telemetry" &&
					strings.Contains(d.Meta[streams.MetaReason], "may publish only under devices/d1/") {
					return nil
				}
			}
			return fmt.Errorf("got %d dead letters, want %s on devices/d2/telemetry with the reason", len(page.Messages), payload)
		})
	}
	app.in.waitFor(t, "devices/d1/telemetry", `{"ok":1}`)
	if got := app.in.all(); len(got) != 1 {
		t.Errorf("subscriber received %v, want only the accepted message", got)
	}
	if s := h.stored(t, "devices/d2/telemetry"); len(s) != 0 {
		t.Errorf("stored on devices/d2/telemetry: got %d, want 0", len(s))
	}
}

func TestInvalidAndOversizedPayloads(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	dev, ca, err := v5(t, h.srv.Addr(), "d1", "d1", h.tokens["d1"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint32(testMaxPayload + 64<<10); ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != want {
		t.Errorf("CONNACK maximum packet size: got %+v, want %d", ca.Properties, want)
	}

	if rc := dev.publish(t, "devices/d1/telemetry", 1, []byte(`{"temperature": 21.5,`), ""); rc != 0x99 {
		t.Errorf("malformed JSON telemetry: got reason %#x, want 0x99", rc)
	}
	d := h.deadLetter(t, "d1", "telemetry")
	if !strings.Contains(d.Meta[streams.MetaReason], "invalid payload") || string(d.Payload) != `{"temperature": 21.5,` {
		t.Errorf("dead letter: got reason %q payload %q, want invalid payload with the original bytes", d.Meta[streams.MetaReason], d.Payload)
	}
	if rc := dev.publish(t, "devices/d1/state/reported", 1, []byte(`[1,2]`), ""); rc != 0x99 {
		t.Errorf("reported state not an object: got reason %#x, want 0x99", rc)
	}
	if rc := dev.publish(t, "devices/d1/nonsense", 1, []byte(`{}`), ""); rc != 0x90 {
		t.Errorf("unknown device topic: got reason %#x, want 0x90", rc)
	}

	big := []byte(`{"blob":"` + strings.Repeat("x", testMaxPayload) + `"}`)
	if rc := dev.publish(t, "devices/d1/telemetry", 1, big, ""); rc != 0x95 {
		t.Errorf("payload over the ingest limit: got reason %#x, want 0x95", rc)
	}
	h.deadLetter(t, "d1", fmt.Sprintf("payload is %d bytes, the limit is %d", len(big), testMaxPayload))

	// MQTT 3.1.1 cannot be told: the message is acknowledged, dropped and dead-lettered.
	dev3, _ := mustV3(t, "tcp://"+h.srv.Addr(), "d1-v3", "d1", h.tokens["d1"])
	if err := v3Publish(t, dev3, "devices/d1/telemetry", 1, `not json`); err != nil {
		t.Errorf("v3 invalid payload: got %v, want an acknowledgement", err)
	}
	h.deadLetter(t, "d1", "telemetry")
	if !dev3.IsConnectionOpen() {
		t.Errorf("v3 client after an invalid payload: got disconnected, want connected")
	}
	if s := h.stored(t, "devices/d1/telemetry"); len(s) != 0 {
		t.Errorf("stored telemetry: got %d messages, want 0", len(s))
	}

	// Beyond the broker's packet limit the connection is closed.
	huge := make([]byte, testMaxPayload+70<<10)
	dev3.Publish("devices/d1/events/blob", 0, false, huge)
	waitFor(t, func() error {
		if dev3.IsConnectionOpen() {
			return fmt.Errorf("after a packet over the limit: got connected, want disconnected")
		}
		return nil
	})
}

func TestDeviceSubscriptions(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	dev5 := mustV5(t, h.srv.Addr(), "d1-v5", "d1", h.tokens["d1"])
	if rc := dev5.subscribe(t, "devices/d2/commands/#", 1); rc != 0x87 {
		t.Errorf("v5 device subscribing to another device's commands: got %#x, want 0x87", rc)
	}
	if rc := dev5.subscribe(t, "devices/+/telemetry", 0); rc != 0x87 {
		t.Errorf("v5 device subscribing to everyone's telemetry: got %#x, want 0x87", rc)
	}
	dev3, in3 := mustV3(t, "tcp://"+h.srv.Addr(), "d1-v3", "d1", h.tokens["d1"])
	if rc := v3Subscribe(t, dev3, "devices/d2/commands/#", 1); rc != 0x80 {
		t.Errorf("v3 device subscribing to another device's commands: got %#x, want 0x80", rc)
	}

	if rc := dev5.subscribe(t, "devices/d1/state/desired", 1); rc != 1 {
		t.Fatalf("subscribe to own desired state: got %#x, want 0x01", rc)
	}
	if rc := dev5.subscribe(t, "devices/d1/commands/+", 1); rc != 1 {
		t.Fatalf("subscribe to own commands: got %#x, want 0x01", rc)
	}
	// The hub sets the desired state on the bus; the subscribed device gets it live...
	desired := `{"interval":30}`
	if _, err := h.bus.Publish(context.Background(), &streams.Envelope{Topic: "devices/d1/state/desired", Payload: []byte(desired), Protocol: "hub", ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	if m := dev5.in.waitFor(t, "devices/d1/state/desired", desired); m.QoS != 1 {
		t.Errorf("desired state delivered at QoS %d, want 1", m.QoS)
	}
	// ...and one that subscribes later gets it retained.
	if rc := v3Subscribe(t, dev3, "devices/d1/state/desired", 1); rc != 1 {
		t.Fatalf("v3 subscribe to own desired state: got %#x, want 0x01", rc)
	}
	if m := in3.waitFor(t, "devices/d1/state/desired", desired); !m.Retain {
		t.Errorf("desired state on subscribe: got retain false, want true")
	}

	// An application sends a command over MQTT; the device gets it at QoS 1.
	app, _ := mustV3(t, "tcp://"+h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	if err := v3Publish(t, app, "devices/d1/commands/reboot", 1, `{"delay":5}`); err != nil {
		t.Fatal(err)
	}
	if m := dev5.in.waitFor(t, "devices/d1/commands/reboot", `{"delay":5}`); m.QoS != 1 || m.Retain {
		t.Errorf("command delivered with QoS %d retain %t, want QoS 1, not retained", m.QoS, m.Retain)
	}
	// Commands for d2 never reach d1.
	if err := v3Publish(t, app, "devices/d2/commands/reboot", 1, `{}`); err != nil {
		t.Fatal(err)
	}
	if err := v3Publish(t, app, "devices/d1/commands/marker", 1, `{}`); err != nil {
		t.Fatal(err)
	}
	dev5.in.waitFor(t, "devices/d1/commands/marker", `{}`)
	for _, m := range dev5.in.all() {
		if !strings.HasPrefix(m.Topic, "devices/d1/") {
			t.Errorf("device d1 received %v, want only its own topics", m)
		}
	}
}

func TestRetainedDesiredStateSurvivesRestart(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	desired := `{"led":"green"}`
	if _, err := h.bus.Publish(context.Background(), &streams.Envelope{Topic: "devices/d2/state/desired", Payload: []byte(desired), Protocol: "hub"}); err != nil {
		t.Fatal(err)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	// A new server on the same stream restores it before clients connect.
	log := streamstest.Logger(t)
	in := protocols.NewIngest(h.bus, 0, log)
	srv, err := mqtt.New(mqtt.Config{Addr: "127.0.0.1:0"}, in, creds{reg: h.reg, key: apiKey}, h.bus, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	}()
	<-srv.Ready()
	dev := mustV5(t, srv.Addr(), "d2", "d2", h.tokens["d2"])
	dev.subscribe(t, "devices/d2/state/desired", 1)
	if m := dev.in.waitFor(t, "devices/d2/state/desired", desired); !m.Retain {
		t.Errorf("restored desired state: got retain false, want true")
	}
}

func TestBusMessagesReachSubscribersOnce(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	app3, in3 := mustV3(t, "tcp://"+h.srv.Addr(), "app-v3", protocols.AppUsername, apiKey)
	v3Subscribe(t, app3, "#", 1)
	app5 := mustV5(t, h.srv.Addr(), "app-v5", protocols.AppUsername, apiKey)
	app5.subscribe(t, "devices/d2/+", 1)

	// As if it came in over CoAP.
	coap := &streams.Envelope{Topic: "devices/d2/telemetry", DeviceID: "d2", Payload: []byte(`{"rssi":-70}`), Protocol: "coap", ContentType: "application/json"}
	if _, err := h.bus.Publish(context.Background(), coap); err != nil {
		t.Fatal(err)
	}
	marker := &streams.Envelope{Topic: "devices/d2/telemetry", DeviceID: "d2", Payload: []byte(`{"marker":true}`), Protocol: "coap"}
	if _, err := h.bus.Publish(context.Background(), marker); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*inbox{"v3": in3, "v5": app5.in} {
		in.waitFor(t, "devices/d2/telemetry", `{"marker":true}`)
		if got := in.all(); len(got) != 2 || in.count("devices/d2/telemetry", `{"rssi":-70}`) != 1 {
			t.Errorf("%s subscriber: got %v, want the message and the marker once each", name, got)
		}
	}
	// Delivering it did not store it again (no loop through the broker).
	if s := h.stored(t, "devices/d2/telemetry"); len(s) != 2 {
		t.Errorf("stored on devices/d2/telemetry: got %d, want 2", len(s))
	}
}

func TestWill(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	app := mustV5(t, h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	app.subscribe(t, "devices/#", 0)

	// A Will on the device's own topic is stored and delivered when the connection drops...
	dev, _, err := v5(t, h.srv.Addr(), "d1", "d1", h.tokens["d1"], &paho.WillMessage{Topic: "devices/d1/events/offline", Payload: []byte(`{"why":"lost"}`), QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	dev.conn.Close()
	app.in.waitFor(t, "devices/d1/events/offline", `{"why":"lost"}`)
	if s := h.stored(t, "devices/d1/events/offline"); len(s) != 1 {
		t.Errorf("stored Will: got %d, want 1", len(s))
	}
	// ...one on another device's topic is dead-lettered, not delivered.
	dev2, _, err := v5(t, h.srv.Addr(), "d2", "d2", h.tokens["d2"], &paho.WillMessage{Topic: "devices/d1/events/offline", Payload: []byte(`{"spoof":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	dev2.conn.Close()
	h.deadLetter(t, "d2", "may publish only under devices/d2/")
	if n := app.in.count("devices/d1/events/offline", `{"spoof":1}`); n != 0 {
		t.Errorf("spoofed Will delivered %d times, want 0", n)
	}
}

func TestSessionBelongsToItsIdentity(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	mustV5(t, h.srv.Addr(), "shared-id", protocols.AppUsername, apiKey)
	// Another identity cannot take the session (and its subscriptions) over.
	_, ca, err := v5(t, h.srv.Addr(), "shared-id", "d1", h.tokens["d1"], nil)
	if err == nil || ca == nil || ca.ReasonCode != 0x85 {
		t.Errorf("device taking over an app's client ID: got %+v (%v), want CONNACK 0x85", ca, err)
	}
	h.deadLetter(t, "d1", "client ID in use by another identity")
	// The same identity may (a reconnect).
	mustV5(t, h.srv.Addr(), "shared-id", protocols.AppUsername, apiKey)
}

func TestPresenceAndConnectedGauge(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	gauge := protocols.Connected.WithLabelValues("mqtt")
	before := metricValue(gauge)

	app, _ := mustV3(t, "tcp://"+h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	a, _ := mustV3(t, "tcp://"+h.srv.Addr(), "d1-a", "d1", h.tokens["d1"])
	b := mustV5(t, h.srv.Addr(), "d1-b", "d1", h.tokens["d1"]) // a second connection of d1
	waitFor(t, func() error {                                  // counted once the session is established, just after the CONNACK
		if got := metricValue(gauge) - before; got != 3 {
			return fmt.Errorf("connected gauge: got +%v, want +3", got)
		}
		return nil
	})
	a.Disconnect(100)
	waitFor(t, func() error {
		if got := metricValue(gauge) - before; got != 2 {
			return fmt.Errorf("connected gauge after one disconnect: got +%v, want +2", got)
		}
		return nil
	})
	if got, want := h.presence.String(), "up d1 mqtt true"; got != want {
		t.Errorf("presence with one of two connections left: got %q, want %q", got, want)
	}
	_ = b.Disconnect(&paho.Disconnect{})
	app.Disconnect(100)
	waitFor(t, func() error {
		if got, want := h.presence.String(), "up d1 mqtt true, down d1 mqtt"; got != want {
			return fmt.Errorf("presence: got %q, want %q", got, want)
		}
		if got := metricValue(gauge) - before; got != 0 {
			return fmt.Errorf("connected gauge: got +%v, want +0", got)
		}
		return nil
	})
}

func TestRunStopsCleanly(t *testing.T) {
	waitFor(t, func() error { // those of earlier tests end at their cleanup
		if g := adapterGoroutines(); len(g) != 0 {
			return fmt.Errorf("adapter goroutines before the test: got %d, want 0", len(g))
		}
		return nil
	})
	h := startHub(t, mqtt.Config{})
	app, _ := mustV3(t, "tcp://"+h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	v3Subscribe(t, app, "#", 1)
	mustV3(t, "ws://"+h.srv.WSAddr(), "d1", "d1", h.tokens["d1"])
	d2 := mustV5(t, h.srv.Addr(), "d2", "d2", h.tokens["d2"])
	d2.publish(t, "devices/d2/telemetry", 1, []byte(`{"x":1}`), "")

	if err := h.stop(); err != nil {
		t.Fatalf("Run after cancel: got %v, want nil", err)
	}
	waitFor(t, func() error {
		if g := adapterGoroutines(); len(g) != 0 {
			return fmt.Errorf("got %d adapter goroutines still running, want 0; first:\n%s", len(g), g[0])
		}
		return nil
	})
	waitFor(t, func() error {
		if app.IsConnectionOpen() {
			return fmt.Errorf("client connection: got open, want closed")
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  mqtt.Config
		want string // "" valid, else the field named
	}{
		{mqtt.Config{}, ""},
		{mqtt.Config{Addr: ":1883", WSAddr: ":8083", MaxPacketSize: 1 << 20, MaxInflight: 100}, ""},
		{mqtt.Config{Addr: ":1883", WSAddr: ":1883"}, "mqtt_ws_addr"},
		{mqtt.Config{MaxPacketSize: 10}, "mqtt_max_packet_size"},
		{mqtt.Config{MaxPacketSize: 1 << 29}, "mqtt_max_packet_size"},
		{mqtt.Config{MaxClients: -1}, "mqtt_max_clients"},
		{mqtt.Config{MaxInflight: 70000}, "mqtt_max_inflight"},
		{mqtt.Config{MaxPendingWrites: -1}, "mqtt_max_pending_writes"},
		{mqtt.Config{SessionExpiry: -1}, "mqtt_session_expiry"},
		{mqtt.Config{Timeout: -1}, "mqtt_timeout"},
		{mqtt.Config{ConnectTimeout: -1}, "mqtt_connect_timeout"},
		{mqtt.Config{RetainedRestore: -2}, "mqtt_retained_restore"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: got %v, want valid", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// gatedIngest holds publishes to one topic until released.
type gatedIngest struct {
	*protocols.Ingest
	topic   string
	entered chan struct{}
	release chan struct{}
}

func (g *gatedIngest) Accept(ctx context.Context, m protocols.Message) (*streams.Envelope, error) {
	if m.Topic == g.topic {
		close(g.entered)
		<-g.release
	}
	return g.Ingest.Accept(ctx, m)
}

func TestShutdownAcksWhatItStores(t *testing.T) {
	gate := &gatedIngest{topic: "devices/d1/telemetry", entered: make(chan struct{}), release: make(chan struct{})}
	h := startHubWith(t, mqtt.Config{}, func(in *protocols.Ingest) mqtt.Ingester { gate.Ingest = in; return gate })
	dev := mustV5(t, h.srv.Addr(), "d1", "d1", h.tokens["d1"])
	acked := make(chan byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		pr, err := dev.Publish(ctx, &paho.Publish{Topic: "devices/d1/telemetry", QoS: 1, Payload: []byte(`{"last":1}`)})
		if err != nil || pr == nil {
			close(acked)
			return
		}
		acked <- pr.ReasonCode
	}()
	<-gate.entered // the publish is being stored...
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }() // ...when the hub shuts down
	waitFor(t, func() error {
		c, err := net.Dial("tcp", h.srv.Addr())
		if err == nil {
			c.Close()
			return fmt.Errorf("dial during shutdown: got a connection, want refused")
		}
		return nil
	})
	close(gate.release)
	if rc, ok := <-acked; !ok || rc != 0 {
		t.Errorf("publish in flight at shutdown: got PUBACK %#x (received %t), want 0x00", rc, ok)
	}
	if s := h.stored(t, "devices/d1/telemetry"); len(s) != 1 {
		t.Errorf("stored: got %d messages, want the acknowledged one", len(s))
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
}

func TestQoS2(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	app := mustV5(t, h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	app.subscribe(t, "devices/d1/#", 2)
	dev := mustV5(t, h.srv.Addr(), "d1", "d1", h.tokens["d1"])
	ctx := context.Background()
	pr, err := dev.Publish(ctx, &paho.Publish{Topic: "devices/d1/events/x", QoS: 2, Payload: []byte(`{"q":2}`)})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("QoS 2 publish: got %+v, %v; want PUBCOMP 0x00", pr, err)
	}
	if s := h.stored(t, "devices/d1/events/x"); len(s) != 1 {
		t.Errorf("stored after PUBCOMP: got %d, want 1", len(s))
	}
	// A refusal ends the exchange with a PUBREC carrying the reason.
	pr, _ = dev.Publish(ctx, &paho.Publish{Topic: "devices/d2/events/x", QoS: 2, Payload: []byte(`{}`)})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Errorf("QoS 2 publish to a foreign topic: got %+v, want PUBREC 0x87", pr)
	}
	app.in.waitFor(t, "devices/d1/events/x", `{"q":2}`)
}

func TestCommandsQueuedForPersistentSession(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	url := "tcp://" + h.srv.Addr()
	in := &inbox{}
	persistent := func() pahov3.Client {
		opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("d1-persistent").
			SetUsername("d1").SetPassword(h.tokens["d1"]).SetCleanSession(false).SetAutoReconnect(false).
			SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
				in.add(msg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos()})
			})
		c := pahov3.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
			t.Fatalf("connect with a persistent session: %v", tok.Error())
		}
		return c
	}
	dev := persistent()
	if rc := v3Subscribe(t, dev, "devices/d1/commands/+", 1); rc != 1 {
		t.Fatalf("SUBACK: got %#x, want 0x01", rc)
	}
	dev.Disconnect(100)

	app, _ := mustV3(t, url, "app", protocols.AppUsername, apiKey)
	if err := v3Publish(t, app, "devices/d1/commands/open", 1, `{"door":1}`); err != nil {
		t.Fatal(err)
	}
	// The fan-out has handed the command to the broker once the marker reaches a live
	// subscriber; the device is offline, so it waits in its session.
	watcher, seen := mustV3(t, url, "watcher", protocols.AppUsername, apiKey)
	v3Subscribe(t, watcher, "devices/d1/commands/+", 1)
	if err := v3Publish(t, app, "devices/d1/commands/marker", 1, `{}`); err != nil {
		t.Fatal(err)
	}
	seen.waitFor(t, "devices/d1/commands/marker", `{}`)

	dev = persistent()
	defer dev.Disconnect(100)
	if m := in.waitFor(t, "devices/d1/commands/open", `{"door":1}`); m.QoS != 1 {
		t.Errorf("queued command delivered at QoS %d, want 1", m.QoS)
	}
}

func TestPublishInline(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	app := mustV5(t, h.srv.Addr(), "app", protocols.AppUsername, apiKey)
	app.subscribe(t, "hub/notices", 1)
	h.srv.Publish("hub/notices", []byte("maintenance at 02:00"), false, 1)
	if m := app.in.waitFor(t, "hub/notices", "maintenance at 02:00"); m.QoS != 1 {
		t.Errorf("inline publish delivered at QoS %d, want 1", m.QoS)
	}
	if s := h.stored(t, "hub/notices"); len(s) != 0 {
		t.Errorf("inline publish stored %d times, want 0 (it is not ingested)", len(s))
	}
}

type failingSubscriber struct{}

func (failingSubscriber) Subscribe(context.Context, streams.Subscription, func(*streams.Envelope)) error {
	return errors.New("no stream")
}

func TestRunFailsWhenFanOutCannotSubscribe(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	srv, err := mqtt.New(mqtt.Config{Addr: "127.0.0.1:0"}, protocols.NewIngest(h.bus, 0, streamstest.Logger(t)),
		creds{reg: h.reg, key: apiKey}, failingSubscriber{}, nil, streamstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no stream") {
			t.Errorf("Run: got %v, want the fan-out's error", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return when the fan-out failed")
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Errorf("second Run: got nil, want an error")
	}
}

func TestRunFailsWhenAddressInUse(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	srv, err := mqtt.New(mqtt.Config{Addr: h.srv.Addr()}, protocols.NewIngest(h.bus, 0, streamstest.Logger(t)),
		creds{reg: h.reg, key: apiKey}, h.bus, nil, streamstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), h.srv.Addr()) {
		t.Errorf("Run on a taken address: got %v, want an error naming it", err)
	}
}

// stallConn is a client connection whose reads stop once stalled: a client that no longer reads.
type stallConn struct {
	net.Conn
	stalled atomic.Bool
	stop    chan struct{}
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.stalled.Load() {
		<-c.stop
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

// TestShutdownWithClientNotReading: a subscriber that stops reading while messages pile up
// for it cannot hold up the adapter's shutdown (writes to it are cut short).
func TestShutdownWithClientNotReading(t *testing.T) {
	h := startHub(t, mqtt.Config{})
	raw, err := net.DialTimeout("tcp", h.srv.Addr(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	conn := &stallConn{Conn: raw, stop: make(chan struct{})}
	defer close(conn.stop)
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "slow-app", Username: protocols.AppUsername, UsernameFlag: true,
		Password: []byte(apiKey), PasswordFlag: true, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/+/telemetry", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	conn.stalled.Store(true)
	// 8 MB for a client that reads nothing: more than the sockets' buffers hold.
	payload := make([]byte, 4000)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for range 2000 {
			h.srv.Publish("devices/d1/telemetry", payload, false, 0)
		}
	}()
	time.Sleep(time.Second) // let the writes to the client block
	start := time.Now()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown with a client that does not read took %v, want about a second", took)
	}
	select {
	case <-published: // the stopped broker refuses the rest at once
	case <-time.After(testTimeout):
		t.Error("publishing to the stopped adapter still blocked")
	}
}
