package devices_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestTwoInstances: two hubs on one NATS share device management: a device connected to one
// is online on the other, its status changes are published once, and desired state and
// commands set through the other reach it, with delivery and answers recorded.
func TestTwoInstances(t *testing.T) {
	ns := streamstest.Server(t)
	ext := func(c *hub.Config) { c.NATSURL = ns.ClientURL(); c.NATSAddr = "" }
	a := hubtest.Start(t, ext)
	b := hubtest.Start(t, ext)
	token := a.CreateDevice("shared", nil)
	eventually(t, 15*time.Second, func() bool { return jsonCall(t, b, "GET", "/api/v1/devices/shared", nil, nil) == 200 }, "device not visible on b")

	var mu sync.Mutex
	var events []string
	statusSub := mqttDevice(t, b, "watcher", "app", hubtest.APIKey)
	mqttSubscribe(t, statusSub, "devices/shared/status", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		events = append(events, string(m.Payload()))
		mu.Unlock()
	})

	got := make(chan paho.Message, 16)
	dev := mqttDevice(t, a, "shared", "shared", token)
	mqttSubscribe(t, dev, "devices/shared/state/desired", 1, func(_ paho.Client, m paho.Message) { got <- m })
	mqttSubscribe(t, dev, "devices/shared/commands/#", 1, func(_ paho.Client, m paho.Message) { got <- m })
	eventually(t, 15*time.Second, func() bool { return getDevice(t, b, "shared").Status == "online" }, "not online on the other instance")

	if code := jsonCall(t, b, "PUT", "/api/v1/devices/shared/state/desired", map[string]any{"fan": "on"}, nil); code != 200 {
		t.Fatalf("PUT desired on b: %d", code)
	}
	cmd := sendCommand(t, b, "shared", "spin", nil)
	seenDesired, seenCmd := false, false
	deadline := time.After(15 * time.Second)
	for !seenDesired || !seenCmd {
		select {
		case m := <-got:
			switch {
			case m.Topic() == "devices/shared/state/desired":
				seenDesired = string(m.Payload()) == `{"fan":"on"}`
			case strings.Contains(string(m.Payload()), cmd.ID):
				seenCmd = true
			}
		case <-deadline:
			t.Fatalf("device on a: desired %v, command %v", seenDesired, seenCmd)
		}
	}
	eventually(t, 15*time.Second, func() bool { return getCommand(t, b, "shared", cmd.ID).Status == "delivered" }, "delivery on a not seen on b")
	dev.Publish("devices/shared/commands/spin/result", 1, false, `{"id":"`+cmd.ID+`","result":"ok"}`).Wait()
	eventually(t, 15*time.Second, func() bool { return getCommand(t, a, "shared", cmd.ID).Status == "answered" }, "not answered")

	dev.Disconnect(50)
	eventually(t, 15*time.Second, func() bool { return getDevice(t, b, "shared").Status == "offline" }, "not offline on the other instance")
	eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= 2
	}, "status events")
	time.Sleep(200 * time.Millisecond) // a duplicate event would arrive about now
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || !strings.Contains(events[0], `"online"`) || !strings.Contains(events[1], `"offline"`) {
		t.Errorf("status events %v; want one online and one offline, whichever instance saw them", events)
	}
}
