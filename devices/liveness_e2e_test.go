package devices_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// TestLivenessMQTT: a device is online from its MQTT connection to its disconnection, and each
// change is an event on devices/{id}/status that MQTT, SSE and NATS subscribers see.
func TestLivenessMQTT(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("m1", map[string]any{"type": "meter"})
	if d := getDevice(t, h, "m1"); d.Status != "offline" || d.LastSeen != nil {
		t.Fatalf("new device: status %q, last_seen %v; want offline, never seen", d.Status, d.LastSeen)
	}
	nc := natsSubscribe(t, h, "iot.devices.*.status")
	app := mqttDevice(t, h, "watcher", "app", hubtest.APIKey)
	var appGot collector
	mqttSubscribe(t, app, "devices/+/status", 1, appGot.add)
	sse := sseSubscribe(t, h, "devices/+/status")

	dev := mqttDevice(t, h, "m1", "m1", token)
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "m1").Status == "online" }, "device not online after connecting")
	d := getDevice(t, h, "m1")
	if d.Protocol != "mqtt" || !strings.HasPrefix(d.RemoteAddr, "127.0.0.1:") || d.LastSeen == nil || d.StatusSince == nil {
		t.Errorf("online device: %+v; want protocol mqtt, a remote address, last_seen and status_since", d)
	}
	var list struct{ Devices []deviceJSON }
	jsonCall(t, h, "GET", "/api/v1/devices?status=online", nil, &list)
	if len(list.Devices) != 1 || list.Devices[0].ID != "m1" {
		t.Errorf("?status=online: %+v, want m1", list.Devices)
	}

	dev.Disconnect(50)
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "m1").Status == "offline" }, "device not offline after disconnecting")
	eventually(t, 5*time.Second, func() bool { return len(nc.statuses("m1")) == 2 }, "NATS status events: %v, want 2", nc.statuses("m1"))
	evs := nc.statuses("m1")
	if evs[0]["status"] != "online" || evs[0]["protocol"] != "mqtt" || evs[0]["reason"] != "connected" || evs[0]["at"] == nil ||
		evs[1]["status"] != "offline" || evs[1]["reason"] != "disconnected" {
		t.Errorf("status events %v; want online (mqtt, connected) then offline (disconnected)", evs)
	}
	eventually(t, 5*time.Second, func() bool { return len(appGot.payloads("devices/m1/status")) == 2 }, "MQTT status events: %v", appGot.payloads(""))
	eventually(t, 5*time.Second, func() bool { return len(sse.payloads()) == 2 }, "SSE status events: %v", sse.payloads())

	// A device cannot fake its status, and neither can an application.
	dev = mqttDevice(t, h, "m1", "m1", token)
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "m1").Status == "online" }, "not online after reconnecting")
	tok := app.Publish("devices/m1/status", 1, false, `{"status":"offline"}`)
	tok.WaitTimeout(5 * time.Second)
	if d := getDevice(t, h, "m1"); d.Status != "online" {
		t.Errorf("after an app published a fake status: %q", d.Status)
	}
	_ = dev
}

// TestLivenessMQTTKeepAliveExpiry: a client that stops sending packets is disconnected by the
// broker after 1.5 × its keep-alive, and the device goes offline.
func TestLivenessMQTTKeepAliveExpiry(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("k1", nil)
	conn, err := net.Dial("tcp", h.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A hand-made MQTT 3.1.1 CONNECT with keep-alive 1s; the client then goes silent. mochi
	// allows keepalive + keepalive/2 in whole seconds without a packet: 1s here.
	start := time.Now()
	if _, err := conn.Write(connectPacket("k1", "k1", token, 1)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x, %v; want accepted", ack, err)
	}
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "k1").Status == "online" }, "not online")
	eventually(t, 10*time.Second, func() bool { return getDevice(t, h, "k1").Status == "offline" }, "not offline after keep-alive expiry")
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("offline after %v, before the keep-alive could expire", el)
	}
}

// connectPacket encodes an MQTT 3.1.1 CONNECT (clean session, username and password).
func connectPacket(clientID, user, pass string, keepAlive uint16) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var v []byte
	v = append(v, str("MQTT")...)
	v = append(v, 4, 0xC2, byte(keepAlive>>8), byte(keepAlive))
	v = append(v, str(clientID)...)
	v = append(v, str(user)...)
	v = append(v, str(pass)...)
	return append([]byte{0x10, byte(len(v))}, v...)
}

// TestLivenessCoAP: a CoAP device is online from its first request, goes offline when its
// inactivity timeout passes without one, and online again with its next message.
func TestLivenessCoAP(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("c1", map[string]any{"inactivity_timeout": "1s"})
	nc := natsSubscribe(t, h, "iot.devices.*.status")
	cc := coapDial(t, h)
	post := func() {
		if code, body, _ := coapDo(t, cc, codes.POST, "/devices/c1/telemetry", message.AppJSON, `{"t":1}`, "token="+token); code != codes.Changed {
			t.Fatalf("post: %v %s", code, body)
		}
	}
	post()
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "c1").Status == "online" }, "not online after a request")
	d := getDevice(t, h, "c1")
	if d.Protocol != "coap" || d.RemoteAddr != cc.LocalAddr().String() {
		t.Errorf("online: protocol %q remote %q; want coap and %s", d.Protocol, d.RemoteAddr, cc.LocalAddr())
	}
	wentOnline := time.Now()
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "c1").Status == "offline" }, "not offline after its 1s timeout")
	if el := time.Since(wentOnline); el < 900*time.Millisecond {
		t.Errorf("offline after %v, before its timeout", el)
	}
	post()
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "c1").Status == "online" }, "not online again after its next message")
	eventually(t, 5*time.Second, func() bool { return len(nc.statuses("c1")) >= 3 }, "status events %v", nc.statuses("c1"))
	evs := nc.statuses("c1")
	if evs[0]["status"] != "online" || evs[1]["status"] != "offline" || evs[1]["reason"] != "inactivity timeout" || evs[2]["status"] != "online" {
		t.Errorf("events %v; want online, offline (inactivity timeout), online", evs)
	}

	// Messages while online keep it online.
	stop := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(stop) {
		post()
		if s := getDevice(t, h, "c1").Status; s != "online" {
			t.Fatalf("went %s while talking every 300ms", s)
		}
		time.Sleep(300 * time.Millisecond) // the device's own pace, not synchronisation
	}
}

// TestInactivityTimeoutPerType: a type's timeout applies to its devices without their own.
func TestInactivityTimeoutPerType(t *testing.T) {
	h := hubtest.Start(t)
	var typ struct {
		Type              string `json:"type"`
		InactivityTimeout string `json:"inactivity_timeout"`
	}
	if code := jsonCall(t, h, "PUT", "/api/v1/device-types/beacon", map[string]any{"inactivity_timeout": "1s"}, &typ); code != 200 || typ.InactivityTimeout != "1s" {
		t.Fatalf("PUT type: %d %+v", code, typ)
	}
	var e apiError
	if code := jsonCall(t, h, "PUT", "/api/v1/device-types/beacon", map[string]any{"inactivity_timeout": "10ms"}, &e); code != 400 || !strings.Contains(e.Error, "inactivity_timeout") {
		t.Errorf("too short a timeout: %d %q", code, e.Error)
	}
	token := h.CreateDevice("b1", map[string]any{"type": "beacon"})
	cc := coapDial(t, h)
	if code, body, _ := coapDo(t, cc, codes.POST, "/devices/b1/events/hello", message.TextPlain, "hi", "token="+token); code != codes.Changed {
		t.Fatalf("post: %v %s", code, body)
	}
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "b1").Status == "online" }, "not online")
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "b1").Status == "offline" }, "not offline after the type's 1s")
}

// sseClient reads Server-Sent Events payloads.
type sseClient struct {
	mu   sync.Mutex
	msgs []string
}

func (s *sseClient) payloads() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func sseSubscribe(t *testing.T, h *hubtest.Hub, topic string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/api/v1/stream?topic="+strings.ReplaceAll(topic, "+", "%2B"), nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sse: %v %v", resp, err)
	}
	s := &sseClient{}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m struct{ Payload json.RawMessage }
			if json.Unmarshal([]byte(data), &m) == nil && len(m.Payload) > 0 {
				s.mu.Lock()
				s.msgs = append(s.msgs, string(m.Payload))
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// TestLivenessHubRestart: devices connected to a hub that stops are offline ("hub stopped"),
// not left online, when the hub starts again.
func TestLivenessHubRestart(t *testing.T) {
	cfg := hubtest.Config(t.TempDir())
	h := hubtest.StartConfig(t, cfg)
	token := h.CreateDevice("r1", nil)
	mqttDevice(t, h, "r1", "r1", token)
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "r1").Status == "online" }, "not online")
	h.Stop()
	h2 := hubtest.StartConfig(t, cfg)
	if d := getDevice(t, h2, "r1"); d.Status != "offline" {
		t.Errorf("after a restart: %+v; want offline", d)
	}
	// The offline event was published before the hub stopped.
	js := statusEvents(t, h2, "r1")
	// The broker may close the connection before the liveness tracker marks its devices: either
	// reason says the device went offline with the hub.
	if len(js) != 2 || js[1]["status"] != "offline" || (js[1]["reason"] != "hub stopped" && js[1]["reason"] != "disconnected") {
		t.Errorf("status events %v; want online, then offline (hub stopped or disconnected)", js)
	}
}

// statusEvents reads device id's status events from the stream with nats.go.
func statusEvents(t *testing.T, h *hubtest.Hub, id string) []map[string]any {
	t.Helper()
	nc, err := nats.Connect(h.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "IOT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"iot.devices." + id + ".status"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev map[string]any
			json.Unmarshal(m.Data(), &ev)
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}
