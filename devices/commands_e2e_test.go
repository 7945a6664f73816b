package devices_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

type commandJSON struct {
	ID          string          `json:"id"`
	Device      string          `json:"device"`
	Name        string          `json:"name"`
	Payload     json.RawMessage `json:"payload"`
	Status      string          `json:"status"`
	Sends       int             `json:"sends"`
	ExpiresAt   time.Time       `json:"expires_at"`
	DeliveredAt *time.Time      `json:"delivered_at"`
	AnsweredAt  *time.Time      `json:"answered_at"`
	ExpiredAt   *time.Time      `json:"expired_at"`
	Result      json.RawMessage `json:"result"`
	Error       string          `json:"error"`
}

type commandMsg struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Payload   json.RawMessage `json:"payload"`
	ExpiresAt time.Time       `json:"expires_at"`
}

func sendCommand(t *testing.T, h *hubtest.Hub, dev, name string, body any) commandJSON {
	t.Helper()
	var c commandJSON
	if code := jsonCall(t, h, "POST", "/api/v1/devices/"+dev+"/commands/"+name, body, &c); code != 202 {
		t.Fatalf("send %s to %s: %d %s", name, dev, code, c.Error)
	}
	return c
}

func getCommand(t *testing.T, h *hubtest.Hub, dev, id string) commandJSON {
	t.Helper()
	var c commandJSON
	if code := jsonCall(t, h, "GET", "/api/v1/devices/"+dev+"/commands/"+id, nil, &c); code != 200 {
		t.Fatalf("GET command %s: %d %s", id, code, c.Error)
	}
	return c
}

// TestCommandToOfflineMQTTDevice: a command sent while the device is offline waits (durably,
// in KV) and is delivered when the device comes back and subscribes; the PUBACK makes it
// delivered and the device's result answered.
func TestCommandToOfflineMQTTDevice(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("om", nil)
	cmd := sendCommand(t, h, "om", "reboot", map[string]any{"payload": map[string]any{"delay": 5}, "ttl": "1m"})
	if cmd.Status != "pending" || cmd.Sends != 1 || cmd.ID == "" || string(cmd.Payload) != `{"delay":5}` {
		t.Fatalf("sent to an offline device: %+v; want pending, sent once", cmd)
	}
	if time.Until(cmd.ExpiresAt) < 50*time.Second {
		t.Errorf("expires_at %v, want about a minute from now", cmd.ExpiresAt)
	}

	got := make(chan paho.Message, 16)
	dev := mqttDevice(t, h, "om", "om", token)
	mqttSubscribe(t, dev, "devices/om/commands/#", 1, func(_ paho.Client, m paho.Message) { got <- m })
	var m paho.Message
	select {
	case m = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("pending command not delivered on reconnect")
	}
	var msg commandMsg
	if err := json.Unmarshal(m.Payload(), &msg); err != nil || m.Topic() != "devices/om/commands/reboot" || msg.ID != cmd.ID || msg.Name != "reboot" || string(msg.Payload) != `{"delay":5}` || msg.ExpiresAt.IsZero() {
		t.Fatalf("device got %s %s; want the command with its ID, name, payload and expiry", m.Topic(), m.Payload())
	}
	eventually(t, 5*time.Second, func() bool { return getCommand(t, h, "om", cmd.ID).Status == "delivered" }, "not delivered after the PUBACK")

	dev.Publish("devices/om/commands/reboot/result", 1, false, `{"id":"`+cmd.ID+`","result":{"ok":true,"uptime":0}}`).Wait()
	eventually(t, 5*time.Second, func() bool { return getCommand(t, h, "om", cmd.ID).Status == "answered" }, "not answered after the result")
	c := getCommand(t, h, "om", cmd.ID)
	if string(c.Result) != `{"ok":true,"uptime":0}` || c.DeliveredAt == nil || c.AnsweredAt == nil {
		t.Errorf("answered command %+v", c)
	}

	// Online now: the next command is sent at once.
	cmd2 := sendCommand(t, h, "om", "blink", nil)
	if cmd2.Sends != 1 {
		t.Errorf("sent to an online device: sends %d, want 1", cmd2.Sends)
	}
	// Delivery is at least once: the first command may come again (it was published when sent
	// and again when the device subscribed); devices tell repeats apart by ID.
	for done := false; !done; {
		select {
		case m := <-got:
			if strings.Contains(string(m.Payload()), cmd.ID) {
				continue
			}
			if !strings.Contains(string(m.Payload()), cmd2.ID) || string(msgPayload(m.Payload())) != "null" {
				t.Errorf("got %s", m.Payload())
			}
			done = true
		case <-time.After(5 * time.Second):
			t.Fatal("command to an online device not delivered")
		}
	}
	var list struct{ Commands []commandJSON }
	if code := jsonCall(t, h, "GET", "/api/v1/devices/om/commands", nil, &list); code != 200 || len(list.Commands) != 2 || list.Commands[0].ID != cmd2.ID {
		t.Errorf("list: %d %+v; want both, newest first", code, list.Commands)
	}
}

func msgPayload(b []byte) json.RawMessage {
	var m commandMsg
	json.Unmarshal(b, &m)
	return m.Payload
}

// TestCommandSurvivesRestart: a pending command outlives a hub restart and reaches the device
// afterwards.
func TestCommandSurvivesRestart(t *testing.T) {
	cfg := hubtest.Config(t.TempDir())
	h := hubtest.StartConfig(t, cfg)
	token := h.CreateDevice("rs", nil)
	cmd := sendCommand(t, h, "rs", "update", map[string]any{"payload": "v2"})
	h.Stop()
	h2 := hubtest.StartConfig(t, cfg)
	got := make(chan string, 16)
	dev := mqttDevice(t, h2, "rs", "rs", token)
	mqttSubscribe(t, dev, "devices/rs/commands/update", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	select {
	case p := <-got:
		if !strings.Contains(p, cmd.ID) {
			t.Errorf("got %s", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending command lost in the restart")
	}
	eventually(t, 5*time.Second, func() bool { return getCommand(t, h2, "rs", cmd.ID).Status == "delivered" }, "not delivered")
}

// TestCommandToCoAPDevice: delivered as a confirmable notification to the device observing
// the command's path; the ACK makes it delivered; the result comes back by POST.
func TestCommandToCoAPDevice(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("oc", nil)
	cmd := sendCommand(t, h, "oc", "open", map[string]any{"payload": 1, "ttl": "30s"})
	cc := coapDial(t, h)
	got := make(chan string, 16)
	obs, err := cc.Observe(context.Background(), "/devices/oc/commands/open", func(m *pool.Message) {
		if body, _ := m.ReadBody(); len(body) > 0 {
			got <- string(body)
		}
	}, query("token="+token))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(context.Background())
	var p string
	select {
	case p = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("pending command not notified after the observation was registered")
	}
	var msg commandMsg
	if json.Unmarshal([]byte(p), &msg); msg.ID != cmd.ID || string(msg.Payload) != "1" {
		t.Fatalf("notified %s", p)
	}
	eventually(t, 5*time.Second, func() bool { return getCommand(t, h, "oc", cmd.ID).Status == "delivered" }, "not delivered after the ACK")
	if code, body, _ := coapDo(t, cc, codes.POST, "/devices/oc/commands/open/result", message.AppJSON, `{"id":"`+cmd.ID+`","result":"opened"}`, "token="+token); code != codes.Changed {
		t.Fatalf("result: %v %s", code, body)
	}
	eventually(t, 5*time.Second, func() bool { return getCommand(t, h, "oc", cmd.ID).Status == "answered" }, "not answered")
	if c := getCommand(t, h, "oc", cmd.ID); string(c.Result) != `"opened"` {
		t.Errorf("result %s", c.Result)
	}
}

// TestCommandExpires: a command whose TTL ends before the device takes it is expired and is not
// delivered afterwards.
func TestCommandExpires(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("ex", nil)
	cmd := sendCommand(t, h, "ex", "late", map[string]any{"ttl": "1s"})
	eventually(t, 5*time.Second, func() bool { return getCommand(t, h, "ex", cmd.ID).Status == "expired" }, "not expired after its TTL")
	if c := getCommand(t, h, "ex", cmd.ID); c.ExpiredAt == nil || c.DeliveredAt != nil {
		t.Errorf("expired command %+v", c)
	}
	got := make(chan string, 16)
	dev := mqttDevice(t, h, "ex", "ex", token)
	mqttSubscribe(t, dev, "devices/ex/commands/#", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	// A result for an expired command changes nothing.
	dev.Publish("devices/ex/commands/late/result", 1, false, `{"id":"`+cmd.ID+`","result":1}`).Wait()
	// Probe: a fresh command arrives, the expired one never does.
	probe := sendCommand(t, h, "ex", "probe", nil)
	select {
	case p := <-got:
		if !strings.Contains(p, probe.ID) {
			t.Errorf("got %s; want only the probe", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("probe not delivered")
	}
	if c := getCommand(t, h, "ex", cmd.ID); c.Status != "expired" {
		t.Errorf("after a late result: %s", c.Status)
	}
}

// TestCommandBadInput: clear errors, nothing stored.
func TestCommandBadInput(t *testing.T) {
	h := hubtest.Start(t)
	h.CreateDevice("cb", nil)
	tests := []struct {
		name, path, body string
		code             int
		says             string
	}{
		{"unknown device", "/api/v1/devices/ghost/commands/reboot", `{}`, 404, "ghost"},
		{"bad ttl", "/api/v1/devices/cb/commands/reboot", `{"ttl":"forever"}`, 400, "duration"},
		{"ttl too long", "/api/v1/devices/cb/commands/reboot", `{"ttl":"1000h"}`, 400, "ttl"},
		{"unknown field", "/api/v1/devices/cb/commands/reboot", `{"payload":1,"qos":2}`, 400, "qos"},
		{"bad name", "/api/v1/devices/cb/commands/a+b", `{}`, 400, "command name"},
		{"too large", "/api/v1/devices/cb/commands/x", `{"payload":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "limit"},
	}
	for _, tt := range tests {
		code, data, _ := call(t, h, "POST", tt.path, []byte(tt.body))
		var e apiError
		json.Unmarshal(data, &e)
		if code != tt.code || !strings.Contains(e.Error, tt.says) {
			t.Errorf("%s: %d %s; want %d mentioning %q", tt.name, code, data, tt.code, tt.says)
		}
	}
	var list struct{ Commands []commandJSON }
	if jsonCall(t, h, "GET", "/api/v1/devices/cb/commands", nil, &list); len(list.Commands) != 0 {
		t.Errorf("commands stored by bad requests: %+v", list.Commands)
	}
	var e apiError
	if code := jsonCall(t, h, "GET", "/api/v1/devices/cb/commands/nope", nil, &e); code != 404 {
		t.Errorf("unknown command: %d %s", code, e.Error)
	}
	if code := jsonCall(t, h, "GET", "/api/v1/devices/cb/commands?status=done", nil, &e); code != 400 {
		t.Errorf("bad status filter: %d", code)
	}
}
