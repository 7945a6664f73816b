package devices_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

type keyJSON struct {
	ID        string            `json:"id"`
	Key       string            `json:"key"`
	Type      string            `json:"type"`
	Tags      map[string]string `json:"tags"`
	IDPrefix  string            `json:"id_prefix"`
	MaxUses   int               `json:"max_uses"`
	Uses      int               `json:"uses"`
	ExpiresAt *time.Time        `json:"expires_at"`
	Error     string            `json:"error"`
}

func createKey(t *testing.T, h *hubtest.Hub, body map[string]any) keyJSON {
	t.Helper()
	var k keyJSON
	if code := jsonCall(t, h, "POST", "/api/v1/provisioning-keys", body, &k); code != 201 || k.Key == "" {
		t.Fatalf("create key: %d %+v", code, k)
	}
	return k
}

// provisionMQTT claims id over MQTT 3.1.1: connect as "provision" with the key, subscribe to
// provision/{id}/token, read the answer.
func provisionMQTT(t *testing.T, h *hubtest.Hub, key, id string) (map[string]string, error) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(id).
		SetUsername("provision").SetPassword(key).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	got := make(chan []byte, 1)
	tok := c.Subscribe("provision/"+id+"/token", 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscribe: %v", tok.Error())
	}
	select {
	case b := <-got:
		var out map[string]string
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, err
		}
		return out, nil
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("no answer on provision/%s/token", id)
	}
}

// TestProvisioningOverMQTT: a new device claims its identity with a provisioning key, gets its
// token and then connects as itself; the key's type and tags are applied; once the use limit
// is reached the key is refused with a reason.
func TestProvisioningOverMQTT(t *testing.T) {
	h := hubtest.Start(t)
	k := createKey(t, h, map[string]any{"name": "line 3", "type": "sensor", "tags": map[string]string{"site": "plant-3"}, "id_prefix": "p3-", "max_uses": 2, "ttl": "1h"})
	if k.ExpiresAt == nil || k.MaxUses != 2 || !strings.HasPrefix(k.Key, k.ID+".") {
		t.Fatalf("key %+v", k)
	}
	reply, err := provisionMQTT(t, h, k.Key, "p3-001")
	if err != nil || reply["token"] == "" || reply["id"] != "p3-001" {
		t.Fatalf("provisioning: %v %v", reply, err)
	}
	d := getDevice(t, h, "p3-001")
	if d.Type != "sensor" || d.Tags["site"] != "plant-3" || d.Metadata["provisioned_by"] != k.ID {
		t.Errorf("provisioned device %+v; want the key's type and tags", d)
	}
	dev := mqttDevice(t, h, "p3-001", "p3-001", reply["token"])
	dev.Publish("devices/p3-001/telemetry", 1, false, `{"t":1}`).Wait()

	// Refusals at CONNECT carry the reason (MQTT 5 Reason String).
	refused := func(key, id, want string) {
		t.Helper()
		_, ca, err := h.MQTT5(t, id, "provision", key, nil)
		if err == nil || ca == nil || ca.ReasonCode != 0x87 || !strings.Contains(ca.Properties.ReasonString, want) {
			var rs string
			if ca != nil {
				rs = fmt.Sprintf("%#x %q", ca.ReasonCode, ca.Properties.ReasonString)
			}
			t.Errorf("provision %s with %q: CONNACK %s, %v; want 0x87 mentioning %q", id, key, rs, err, want)
		}
	}
	refused(k.Key, "p3-001", "already exists")
	refused(k.Key, "other-1", "p3-")
	refused(k.ID+".wrong", "p3-009", "wrong provisioning key")
	refused("nonsense", "p3-009", "malformed")
	if _, err := provisionMQTT(t, h, k.Key, "p3-002"); err != nil {
		t.Fatalf("second use: %v", err)
	}
	refused(k.Key, "p3-003", "use limit")
	var got keyJSON
	if jsonCall(t, h, "GET", "/api/v1/provisioning-keys/"+k.ID, nil, &got); got.Uses != 2 || got.Key != "" {
		t.Errorf("key after two claims: %+v; want uses 2 and no secret", got)
	}
	// Unknown devices never get in otherwise.
	if _, ca, err := h.MQTT5(t, "p3-003", "p3-003", "guess", nil); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("unprovisioned device connected: %+v %v", ca, err)
	}
}

// TestProvisioningClientIsConfined: a provisioning connection can subscribe only to its own
// token topic and publish nothing.
func TestProvisioningClientIsConfined(t *testing.T) {
	h := hubtest.Start(t)
	k := createKey(t, h, map[string]any{"max_uses": 5})
	token := h.CreateDevice("victim", nil)
	_ = token
	c, ca, err := h.MQTT5(t, "newbie", "provision", k.Key, nil)
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "devices/victim/commands/#", QoS: 1}, {Topic: "provision/victim/token", QoS: 1}}})
	if err == nil || sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] < 0x80 || sa.Reasons[1] < 0x80 {
		t.Errorf("foreign subscriptions: %+v %v; want both refused", sa, err)
	}
	pr, _ := c.Publish(ctx, &paho5.Publish{Topic: "devices/newbie/telemetry", QoS: 1, Payload: []byte(`{"t":1}`)})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Errorf("publish from a provisioning connection: %+v; want 0x87", pr)
	}
	var k2 keyJSON
	if jsonCall(t, h, "GET", "/api/v1/provisioning-keys/"+k.ID, nil, &k2); k2.Uses != 0 {
		t.Errorf("uses %d after refused operations", k2.Uses)
	}
}

// TestProvisioningOverCoAP: POST /provision?key=&id= answers 2.01 with the token; expired,
// exhausted and wrong keys get 4.03/4.01 with a diagnostic; an existing ID 4.09.
func TestProvisioningOverCoAP(t *testing.T) {
	h := hubtest.Start(t)
	k := createKey(t, h, map[string]any{"type": "valve", "max_uses": 1})
	cc := coapDial(t, h)
	code, body, _ := coapDo(t, cc, codes.POST, "/provision", 0, "", "key="+k.Key, "id=v-1")
	var reply map[string]string
	if code != codes.Created || json.Unmarshal([]byte(body), &reply) != nil || reply["token"] == "" {
		t.Fatalf("provision: %v %s", code, body)
	}
	if code, body, _ := coapDo(t, cc, codes.POST, "/devices/v-1/telemetry", message.AppJSON, `{"t":1}`, "token="+reply["token"]); code != codes.Changed {
		t.Errorf("device with its new token: %v %s", code, body)
	}
	if d := getDevice(t, h, "v-1"); d.Type != "valve" {
		t.Errorf("type %q", d.Type)
	}
	expired := createKey(t, h, map[string]any{"ttl": "1s"})
	k2 := createKey(t, h, nil)
	time.Sleep(1100 * time.Millisecond) // let the key's own expiry pass
	tests := []struct {
		name, key, id string
		code          codes.Code
		says          string
	}{
		{"exhausted", k.Key, "v-2", codes.Forbidden, "use limit"},
		{"expired", expired.Key, "v-3", codes.Forbidden, "expired"},
		{"wrong key", k.ID + ".nope", "v-4", codes.Unauthorized, "wrong provisioning key"},
		{"unknown key", "zzzzzzzz.nope", "v-4", codes.Unauthorized, "unknown provisioning key"},
		{"bad id", k2.Key, "bad id!", codes.BadRequest, "must match"},
	}
	for _, tt := range tests {
		code, body, _ := coapDo(t, cc, codes.POST, "/provision", 0, "", "key="+tt.key, "id="+tt.id)
		if code != tt.code || !strings.Contains(body, tt.says) {
			t.Errorf("%s: %v %q; want %v mentioning %q", tt.name, code, body, tt.code, tt.says)
		}
	}
	if code, body, _ := coapDo(t, cc, codes.POST, "/provision", 0, "", "key="+k2.Key, "id=v-1"); code != 137 || !strings.Contains(body, "exists") {
		t.Errorf("existing ID: %v %q; want 4.09", code, body)
	}
	if code, _, _ := coapDo(t, cc, codes.GET, "/provision", 0, "", "key="+k2.Key, "id=v-9"); code != codes.MethodNotAllowed {
		t.Errorf("GET /provision: %v", code)
	}
	var list struct{ Devices []deviceJSON }
	jsonCall(t, h, "GET", "/api/v1/devices", nil, &list)
	if len(list.Devices) != 1 {
		t.Errorf("devices after refused claims: %+v; want only v-1", list.Devices)
	}
}

// TestProvisioningUseLimitUnderConcurrency: a key with max_uses 3 creates exactly 3 devices
// however many claim at once.
func TestProvisioningUseLimitUnderConcurrency(t *testing.T) {
	h := hubtest.Start(t)
	k := createKey(t, h, map[string]any{"max_uses": 3})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	var answers []string
	for i := range 12 {
		wg.Go(func() {
			cc, err := udp.Dial(h.CoAPAddr())
			if err != nil {
				t.Error(err)
				return
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := cc.Post(ctx, "/provision", message.TextPlain, nil, query("key="+k.Key), query(fmt.Sprintf("id=race-%d", i)))
			if err != nil {
				t.Errorf("claim %d: %v", i, err)
				return
			}
			body, _ := resp.ReadBody()
			mu.Lock()
			defer mu.Unlock()
			answers = append(answers, fmt.Sprintf("%v %s", resp.Code(), body))
			if resp.Code() == codes.Created {
				ok++
			}
		})
	}
	wg.Wait()
	var list struct{ Devices []deviceJSON }
	jsonCall(t, h, "GET", "/api/v1/devices?q=race", nil, &list)
	var got keyJSON
	jsonCall(t, h, "GET", "/api/v1/provisioning-keys/"+k.ID, nil, &got)
	if ok != 3 || len(list.Devices) != 3 || got.Uses != 3 {
		t.Errorf("%d claims succeeded, %d devices, key uses %d; want 3 each; answers %q", ok, len(list.Devices), got.Uses, answers)
	}
}

// TestProvisioningKeyAPI: bad input and revocation.
func TestProvisioningKeyAPI(t *testing.T) {
	h := hubtest.Start(t)
	for _, body := range []string{`{"max_uses":-1}`, `{"expires_at":"2001-01-01T00:00:00Z"}`, `{"id_prefix":"-x"}`, `{"ttl":"1h","expires_at":"2099-01-01T00:00:00Z"}`, `{"tags":{"":"x"}}`, `{"secret":"x"}`} {
		code, data, _ := call(t, h, "POST", "/api/v1/provisioning-keys", []byte(body))
		if code != 400 {
			t.Errorf("%s: %d %s; want 400", body, code, data)
		}
	}
	k := createKey(t, h, nil)
	var list struct{ Keys []keyJSON }
	if jsonCall(t, h, "GET", "/api/v1/provisioning-keys", nil, &list); len(list.Keys) != 1 || list.Keys[0].Key != "" {
		t.Errorf("list %+v", list.Keys)
	}
	if code := jsonCall(t, h, "DELETE", "/api/v1/provisioning-keys/"+k.ID, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
	cc := coapDial(t, h)
	if code, body, _ := coapDo(t, cc, codes.POST, "/provision", 0, "", "key="+k.Key, "id=after-revoke"); code != codes.Unauthorized {
		t.Errorf("revoked key: %v %s", code, body)
	}
}

// TestProvisionedDeviceTakesOverItsProvisioningSession: a device that provisions and connects
// as itself at once (client ID = its ID both times) gets in even while the hub still holds its
// provisioning session; another device cannot take that client ID over.
func TestProvisionedDeviceTakesOverItsProvisioningSession(t *testing.T) {
	h := hubtest.Start(t)
	k := createKey(t, h, map[string]any{"name": "line 4", "id_prefix": "p4-", "ttl": "1h"})
	other := h.CreateDevice("other", nil)
	prov := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("p4-001").
		SetUsername("provision").SetPassword(k.Key).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := prov.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("provisioning connect: %v", tok.Error())
	}
	defer prov.Disconnect(0)
	got := make(chan []byte, 1)
	if tok := prov.Subscribe("provision/p4-001/token", 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	var reply map[string]string
	select {
	case b := <-got:
		if err := json.Unmarshal(b, &reply); err != nil || reply["token"] == "" {
			t.Fatalf("provisioning answer %s: %v", b, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no provisioning answer")
	}
	// Another identity may not take the provisioning session's client ID.
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("p4-001").
		SetUsername("other").SetPassword(other).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		c.Disconnect(0)
		t.Fatal("device other took over the provisioning session of p4-001")
	}
	// The provisioning connection is still open: the device connects as itself all the same.
	dev := mqttDevice(t, h, "p4-001", "p4-001", reply["token"])
	if tok := dev.Publish("devices/p4-001/telemetry", 1, false, `{"t":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish as the provisioned device: %v", tok.Error())
	}
}
