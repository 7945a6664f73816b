package clustertest

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
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// inbox counts the payloads one subscriber received.
type inbox struct {
	name string
	mu   sync.Mutex
	got  map[string]int
}

func (b *inbox) add(p string) {
	b.mu.Lock()
	b.got[p]++
	b.mu.Unlock()
}

func (b *inbox) count(p string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got[p]
}

// subscribe attaches an MQTT, a CoAP observe, an SSE and a NATS subscriber to
// devices/<dev>/telemetry through hub h (NATS through the node at natsURL).
func subscribe(t *testing.T, h *hubtest.Hub, natsURL, dev string) []*inbox {
	t.Helper()
	tag := h.HTTPAddr()
	boxes := []*inbox{{name: "mqtt@" + tag}, {name: "coap@" + tag}, {name: "sse@" + tag}, {name: "nats@" + natsURL}}
	for _, b := range boxes {
		b.got = map[string]int{}
	}
	topic := "devices/" + dev + "/telemetry"
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	app := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("app-" + tag).
		SetUsername("app").SetPassword(hubtest.APIKey).SetAutoReconnect(false))
	if tok := app.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt app connect: %v", tok.Error())
	}
	t.Cleanup(func() { app.Disconnect(50) })
	if tok := app.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { boxes[0].add(string(m.Payload())) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe: %v", tok.Error())
	}

	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	obs, err := cc.Observe(ctx, "/"+topic, func(m *pool.Message) {
		if body, _ := m.ReadBody(); m.Code() == codes.Content && len(body) > 0 {
			boxes[1].add(string(body))
		}
	}, message.Option{ID: message.URIQuery, Value: []byte("key=" + hubtest.APIKey)})
	if err != nil {
		t.Fatalf("coap observe: %v", err)
	}
	t.Cleanup(func() { obs.Cancel(context.Background()) })

	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/api/v1/stream?topic="+topic, nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sse: %v %v", resp, err)
	}
	go func() {
		defer resp.Body.Close()
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
			var m struct{ Payload json.RawMessage }
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && json.Unmarshal([]byte(data), &m) == nil && len(m.Payload) > 0 {
				boxes[2].add(string(m.Payload))
			}
		}
	}()

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe("iot.devices."+dev+".telemetry", func(m *nats.Msg) { boxes[3].add(string(m.Data)) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return boxes
}

// TestDeliveryAcrossInstances: with two hubs on a 3-node cluster, a device's messages reach
// subscribers of every protocol on both hubs exactly once, whichever hub the device sends
// through and over whichever protocol.
func TestDeliveryAcrossInstances(t *testing.T) {
	t.Parallel()
	c := natscluster.ForTest(t, 3)
	a := hubtest.Start(t, onCluster(c))
	b := hubtest.Start(t, onCluster(c))
	token := a.CreateDevice("x1", nil)
	boxes := append(subscribe(t, a, c.ClientURL(0), "x1"), subscribe(t, b, c.ClientURL(2), "x1")...)

	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID("x1").
		SetUsername("x1").SetPassword(token).SetAutoReconnect(false))
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect to a: %v", tok.Error())
	}
	defer dev.Disconnect(50)
	cc, err := udp.Dial(b.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	viaMQTT := func(p string) {
		if tok := dev.Publish("devices/x1/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish via a: %v", tok.Error())
		}
	}
	viaCoAP := func(p string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cc.Post(ctx, "/devices/x1/telemetry", message.AppJSON, strings.NewReader(p), message.Option{ID: message.URIQuery, Value: []byte("token=" + token)})
		if err != nil || resp.Code() != codes.Changed && resp.Code() != codes.Created {
			t.Fatalf("coap post via b: %v %v", resp, err)
		}
	}

	// Live subscriptions start at "now": probe until every subscriber sees messages.
	for i := 0; ; i++ {
		probe := fmt.Sprintf(`{"probe":%d}`, i)
		viaMQTT(probe)
		if waitAll(boxes, probe, time.Second) == nil {
			break
		}
		if i == 10 {
			t.Fatalf("subscribers not live after 10 probes: %v", waitAll(boxes, probe, 0))
		}
	}
	for i, send := range []func(string){viaMQTT, viaCoAP, viaMQTT, viaCoAP} {
		p := fmt.Sprintf(`{"n":%d,"via":"%s"}`, i, []string{"mqtt-a", "coap-b"}[i%2])
		send(p)
		if err := waitAll(boxes, p, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive right behind the original
	for i := range 4 {
		p := fmt.Sprintf(`{"n":%d,"via":"%s"}`, i, []string{"mqtt-a", "coap-b"}[i%2])
		for _, b := range boxes {
			if n := b.count(p); n != 1 {
				t.Errorf("%s got %s %d times, want exactly once", b.name, p, n)
			}
		}
	}
}

// waitAll waits until every box has p at least once.
func waitAll(boxes []*inbox, p string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var missing []string
		for _, b := range boxes {
			if b.count(p) == 0 {
				missing = append(missing, b.name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not received by %v", p, missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
