package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// received collects what one subscriber got, keyed by payload.
type received struct {
	mu   sync.Mutex
	msgs []string
}

func (r *received) add(s string) {
	r.mu.Lock()
	r.msgs = append(r.msgs, s)
	r.mu.Unlock()
}

func (r *received) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == s {
			n++
		}
	}
	return n
}

func mqttConnect(t *testing.T, addr, id, user, pass string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pass).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// subscribers attaches one subscriber per protocol to devices/d1/telemetry.
type subscribers struct {
	mqtt, coap, sse, nats received
}

func attachSubscribers(t *testing.T, h *testHub) *subscribers {
	t.Helper()
	return attachSubscribersAt(t, h, h.NATSURL())
}

// attachSubscribersAt is attachSubscribers with the NATS subscriber on natsURL.
func attachSubscribersAt(t *testing.T, h *testHub, natsURL string) *subscribers {
	t.Helper()
	s := &subscribers{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	app := mqttConnect(t, h.MQTTAddr(), "app-sub", "app", hubtest.APIKey)
	if tok := app.Subscribe("devices/+/telemetry", 1, func(_ paho.Client, m paho.Message) { s.mqtt.add(string(m.Payload())) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe: %v", tok.Error())
	}

	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	first := make(chan struct{})
	var once sync.Once
	obs, err := cc.Observe(ctx, "/devices/d1/telemetry", func(m *pool.Message) {
		once.Do(func() { close(first) })
		if m.Code() != codes.Content {
			return
		}
		body, _ := m.ReadBody()
		if len(body) > 0 {
			s.coap.add(string(body))
		}
	}, message.Option{ID: message.URIQuery, Value: []byte("key=" + hubtest.APIKey)})
	if err != nil {
		t.Fatalf("coap observe: %v", err)
	}
	t.Cleanup(func() { obs.Cancel(context.Background()) })

	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/api/v1/stream?topic=devices/%2B/telemetry", nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sse: %v %v", resp, err)
	}
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
				s.sse.add(string(m.Payload))
			}
		}
	}()

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe("iot.devices.*.telemetry", func(m *nats.Msg) { s.nats.add(string(m.Data)) }); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	// The live consumers start delivering at "now": wait until a probe reaches all four.
	probeDev := mqttConnect(t, h.MQTTAddr(), "probe", "d1", h.token("d1"))
	for i := 0; ; i++ {
		probe := fmt.Sprintf(`{"probe":%d}`, i)
		probeDev.Publish("devices/d1/telemetry", 1, false, probe).Wait()
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if s.mqtt.count(probe) > 0 && s.coap.count(probe) > 0 && s.sse.count(probe) > 0 && s.nats.count(probe) > 0 {
				return s
			}
			time.Sleep(10 * time.Millisecond)
		}
		if i == 10 {
			t.Fatalf("subscribers not live after 10 probes: mqtt %d coap %d sse %d nats %d", len(s.mqtt.msgs), len(s.coap.msgs), len(s.sse.msgs), len(s.nats.msgs))
		}
	}
}

func (s *subscribers) expectOnce(t *testing.T, payload string) {
	t.Helper()
	hubtest.Eventually(t, 5*time.Second, func() bool {
		return s.mqtt.count(payload) >= 1 && s.coap.count(payload) >= 1 && s.sse.count(payload) >= 1 && s.nats.count(payload) >= 1
	}, "%s not delivered everywhere: mqtt %d coap %d sse %d nats %d", payload, s.mqtt.count(payload), s.coap.count(payload), s.sse.count(payload), s.nats.count(payload))
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive right behind the original
	for name, r := range map[string]*received{"mqtt": &s.mqtt, "coap": &s.coap, "sse": &s.sse, "nats": &s.nats} {
		if n := r.count(payload); n != 1 {
			t.Errorf("%s subscriber got %s %d times, want exactly once", name, payload, n)
		}
	}
}

func TestDeviceMessagesReachEverySubscriber(t *testing.T) {
	h := start(t)
	subs := attachSubscribers(t, h)

	dev := mqttConnect(t, h.MQTTAddr(), "d1-mqtt", "d1", h.token("d1"))
	fromMQTT := `{"temperature":21.5,"via":"mqtt"}`
	if tok := dev.Publish("devices/d1/telemetry", 1, false, fromMQTT); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	subs.expectOnce(t, fromMQTT)

	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	fromCoAP := `{"temperature":22.5,"via":"coap"}`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/devices/d1/telemetry", message.AppJSON, strings.NewReader(fromCoAP),
		message.Option{ID: message.URIQuery, Value: []byte("token=" + h.token("d1"))})
	if err != nil || (resp.Code() != codes.Changed && resp.Code() != codes.Created) {
		t.Fatalf("coap post: %v %v", resp, err)
	}
	subs.expectOnce(t, fromCoAP)

	// Both are readable over the API, newest last, with their protocols.
	var page struct {
		Messages []struct {
			Protocol string
			Payload  json.RawMessage
		}
	}
	if code := h.Do("GET", "/api/v1/devices/d1/messages?limit=2", nil, &page); code != 200 || len(page.Messages) != 2 {
		t.Fatalf("messages: %d, %d messages", code, len(page.Messages))
	}
	if string(page.Messages[0].Payload) != fromMQTT || page.Messages[0].Protocol != "mqtt" ||
		string(page.Messages[1].Payload) != fromCoAP || page.Messages[1].Protocol != "coap" {
		t.Errorf("messages = %+v, want the MQTT then the CoAP message", page.Messages)
	}
}

func start(t *testing.T) *testHub {
	h := &testHub{Hub: hubtest.Start(t)}
	h.tokens = map[string]string{"d1": h.CreateDevice("d1", map[string]any{"type": "thermostat"})}
	return h
}

type testHub struct {
	*hubtest.Hub
	tokens map[string]string
}

func (h *testHub) token(id string) string { return h.tokens[id] }
