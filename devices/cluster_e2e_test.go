package devices_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// TestDeviceMovesToAnotherInstance: two hubs on a 3-node NATS cluster (R3 KV buckets). A
// device leaves hub A; while it is offline a command is queued and desired state set through
// A; it comes back through hub B and gets both there. Its status is the same on both hubs at
// every step, and the command's delivery and answer recorded through B show on A.
func TestDeviceMovesToAnotherInstance(t *testing.T) {
	t.Parallel()
	c := natscluster.ForTest(t, 3)
	ext := func(cfg *hub.Config) { cfg.NATSURL, cfg.NATSAddr = c.URL(), "" }
	a := hubtest.Start(t, ext)
	b := hubtest.Start(t, ext)
	token := a.CreateDevice("roamer", nil)
	// b's API answers from its view of the registry, which follows the KV bucket within moments.
	eventually(t, 10*time.Second, func() bool { return jsonCall(t, b, "GET", "/api/v1/devices/roamer", nil, nil) == 200 }, "device not visible on b")
	statusBoth := func(want string) {
		t.Helper()
		eventually(t, 10*time.Second, func() bool {
			return getDevice(t, a, "roamer").Status == want && getDevice(t, b, "roamer").Status == want
		}, "status on a %q, on b %q; want %q on both", getDevice(t, a, "roamer").Status, getDevice(t, b, "roamer").Status, want)
	}

	onA := mqttDevice(t, a, "roamer", "roamer", token)
	statusBoth("online")
	onA.Disconnect(50)
	statusBoth("offline")

	if code := jsonCall(t, a, "PUT", "/api/v1/devices/roamer/state/desired", map[string]any{"mode": "eco"}, nil); code != 200 {
		t.Fatalf("PUT desired on a: %d", code)
	}
	cmd := sendCommand(t, a, "roamer", "reboot", map[string]any{"payload": map[string]any{"in": 3}, "ttl": "5m"})
	if cmd.Status != "pending" {
		t.Fatalf("command to an offline device: %+v, want pending", cmd)
	}

	got := make(chan paho.Message, 16)
	onB := mqttDevice(t, b, "roamer", "roamer", token)
	mqttSubscribe(t, onB, "devices/roamer/state/desired", 1, func(_ paho.Client, m paho.Message) { got <- m })
	mqttSubscribe(t, onB, "devices/roamer/commands/#", 1, func(_ paho.Client, m paho.Message) { got <- m })
	statusBoth("online")
	var desired, command bool
	for deadline := time.After(10 * time.Second); !desired || !command; {
		select {
		case m := <-got:
			switch m.Topic() {
			case "devices/roamer/state/desired":
				desired = string(m.Payload()) == `{"mode":"eco"}`
			case "devices/roamer/commands/reboot":
				var msg commandMsg
				command = json.Unmarshal(m.Payload(), &msg) == nil && msg.ID == cmd.ID && string(msg.Payload) == `{"in":3}`
			}
		case <-deadline:
			t.Fatalf("on hub b: desired state received %v, queued command received %v", desired, command)
		}
	}
	eventually(t, 10*time.Second, func() bool { return getCommand(t, a, "roamer", cmd.ID).Status == "delivered" }, "delivery through b not seen on a")
	onB.Publish("devices/roamer/commands/reboot/result", 1, false, `{"id":"`+cmd.ID+`","result":"ok"}`).Wait()
	eventually(t, 10*time.Second, func() bool { return getCommand(t, a, "roamer", cmd.ID).Status == "answered" }, "answer through b not seen on a")
	onB.Disconnect(50)
	statusBoth("offline")
}

// TestNewDeviceAtOnceOnAnotherInstance: a device created, or given a new token, through hub A
// can connect to hub B right away, before B's view of the registry has caught up.
func TestNewDeviceAtOnceOnAnotherInstance(t *testing.T) {
	t.Parallel()
	c := natscluster.ForTest(t, 3)
	ext := func(cfg *hub.Config) { cfg.NATSURL, cfg.NATSAddr = c.URL(), "" }
	a := hubtest.Start(t, ext)
	b := hubtest.Start(t, ext)
	for i := range 5 {
		id := fmt.Sprintf("fresh-%d", i)
		token := a.CreateDevice(id, nil)
		mqttDevice(t, b, id, id, token).Disconnect(10)

		var rotated struct{ Token string }
		if code := jsonCall(t, a, "POST", "/api/v1/devices/"+id+"/token", nil, &rotated); code != 200 || rotated.Token == "" {
			t.Fatalf("rotate token of %s on a: %d", id, code)
		}
		mqttDevice(t, b, id+"-r", id, rotated.Token).Disconnect(10)
	}
}
