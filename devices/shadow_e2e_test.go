package devices_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

type shadowJSON struct {
	Device          string         `json:"device"`
	Reported        map[string]any `json:"reported"`
	Desired         map[string]any `json:"desired"`
	Delta           map[string]any `json:"delta"`
	Version         uint64         `json:"version"`
	ReportedVersion uint64         `json:"reported_version"`
	Error           string         `json:"error"`
}

func getShadow(t *testing.T, h *hubtest.Hub, id string) shadowJSON {
	t.Helper()
	var s shadowJSON
	if code := jsonCall(t, h, "GET", "/api/v1/devices/"+id+"/state", nil, &s); code != 200 {
		t.Fatalf("GET state of %s: %d %s", id, code, s.Error)
	}
	return s
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestShadowReachesMQTTAndCoAPDevices: reported state from both protocols lands in the shadow;
// a desired change reaches an MQTT device (retained subscription) and a CoAP device (observe);
// the delta is what desired has that reported does not match.
func TestShadowReachesMQTTAndCoAPDevices(t *testing.T) {
	h := hubtest.Start(t)
	mtoken := h.CreateDevice("sm", nil)
	ctoken := h.CreateDevice("sc", nil)

	// MQTT device: reports, and subscribes to its desired state.
	mq := mqttDevice(t, h, "sm", "sm", mtoken)
	var mqGot collector
	mqttSubscribe(t, mq, "devices/sm/state/desired", 1, mqGot.add)
	mq.Publish("devices/sm/state/reported", 1, false, `{"mode":"eco","fw":"1.0","net":{"rssi":-70,"ch":6}}`).Wait()
	mq.Publish("devices/sm/state/reported", 1, false, `{"fw":"1.1"}`).Wait()
	eventually(t, 5*time.Second, func() bool { return getShadow(t, h, "sm").ReportedVersion == 2 }, "reported state not in the shadow")
	s := getShadow(t, h, "sm")
	if asJSON(s.Reported) != `{"fw":"1.1","mode":"eco","net":{"ch":6,"rssi":-70}}` || s.Version != 0 || len(s.Delta) != 0 {
		t.Fatalf("shadow after reports: %+v; want merged reported, no desired, empty delta", s)
	}

	// Desired with the current version (0): accepted, version 1, delivered over MQTT.
	var put shadowJSON
	code := jsonCall(t, h, "PUT", "/api/v1/devices/sm/state/desired", map[string]any{"mode": "boost", "fw": "1.1", "net": map[string]any{"ch": 11, "rssi": -70}}, &put, "If-Match", `"0"`)
	if code != 200 || put.Version != 1 {
		t.Fatalf("PUT desired: %d %+v", code, put)
	}
	if asJSON(put.Delta) != `{"mode":"boost","net":{"ch":11}}` {
		t.Errorf("delta %s; want mode and net.ch only", asJSON(put.Delta))
	}
	eventually(t, 5*time.Second, func() bool { return len(mqGot.payloads("devices/sm/state/desired")) == 1 }, "MQTT device did not get its desired state")
	if got := mqGot.payloads("devices/sm/state/desired")[0]; got != `{"fw":"1.1","mode":"boost","net":{"ch":11,"rssi":-70}}` {
		t.Errorf("MQTT device got %s", got)
	}
	// The device applies it and reports back: the delta empties.
	mq.Publish("devices/sm/state/reported", 1, false, `{"mode":"boost","net":{"ch":11}}`).Wait()
	eventually(t, 5*time.Second, func() bool { return len(getShadow(t, h, "sm").Delta) == 0 }, "delta not empty after the device reported the desired values")

	// CoAP device: observes its desired state.
	cc := coapDial(t, h)
	var mu sync.Mutex
	var coapGot []string
	ctx := context.Background()
	obs, err := cc.Observe(ctx, "/devices/sc/state/desired", func(m *pool.Message) {
		body, _ := m.ReadBody()
		if m.Code() == codes.Content && len(body) > 0 {
			mu.Lock()
			coapGot = append(coapGot, string(body))
			mu.Unlock()
		}
	}, query("token="+ctoken))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(ctx)
	if code, body, _ := coapDo(t, cc, codes.PUT, "/devices/sc/state/reported", message.AppJSON, `{"led":"off"}`, "token="+ctoken); code != codes.Changed {
		t.Fatalf("coap report: %v %s", code, body)
	}
	eventually(t, 5*time.Second, func() bool { return getShadow(t, h, "sc").Reported["led"] == "off" }, "CoAP report not in the shadow")
	if code := jsonCall(t, h, "PUT", "/api/v1/devices/sc/state/desired?version=0", map[string]any{"led": "on"}, nil); code != 200 {
		t.Fatalf("PUT desired for sc: %d", code)
	}
	eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(coapGot) == 1 && coapGot[0] == `{"led":"on"}`
	}, "CoAP observer did not get the desired state")
	if s := getShadow(t, h, "sc"); asJSON(s.Delta) != `{"led":"on"}` {
		t.Errorf("CoAP device delta %s", asJSON(s.Delta))
	}

	// PATCH merges (null removes).
	var patched shadowJSON
	if code := jsonCall(t, h, "PATCH", "/api/v1/devices/sc/state/desired", map[string]any{"led": nil, "brightness": 80}, &patched); code != 200 || asJSON(patched.Desired) != `{"brightness":80}` || patched.Version != 2 {
		t.Errorf("PATCH: %d %+v", code, patched)
	}
}

// TestDesiredDeliveredOnReconnect: desired state set while an MQTT device is away reaches it
// when it comes back and subscribes (retained); a CoAP device gets it when it registers its
// observation.
func TestDesiredDeliveredOnReconnect(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("away", nil)
	if code := jsonCall(t, h, "PUT", "/api/v1/devices/away/state/desired", map[string]any{"setpoint": 21.5}, nil); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	// The desired message is stored and retained by the fan-out; wait for it in the stream.
	eventually(t, 5*time.Second, func() bool {
		var page struct{ Messages []json.RawMessage }
		jsonCall(t, h, "GET", "/api/v1/devices/away/messages", nil, &page)
		return len(page.Messages) == 1
	}, "desired state not stored")
	got := make(chan string, 4)
	dev := mqttDevice(t, h, "away", "away", token)
	mqttSubscribe(t, dev, "devices/away/state/desired", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	select {
	case p := <-got:
		if p != `{"setpoint":21.5}` {
			t.Errorf("on reconnect got %s", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("desired state not delivered on reconnect")
	}
	cc := coapDial(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first := make(chan string, 1)
	obs, err := cc.Observe(ctx, "/devices/away/state/desired", func(m *pool.Message) {
		body, _ := m.ReadBody()
		select {
		case first <- string(body):
		default:
		}
	}, query("token="+token))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(context.Background())
	if p := <-first; p != `{"setpoint":21.5}` {
		t.Errorf("CoAP observe registration answered %q", p)
	}
}

// TestDesiredConcurrentUpdates: two PUTs with the same version: one wins, one gets 409 with the
// current version; nothing is half-written.
func TestDesiredConcurrentUpdates(t *testing.T) {
	h := hubtest.Start(t)
	h.CreateDevice("cv", nil)
	if code := jsonCall(t, h, "PUT", "/api/v1/devices/cv/state/desired", map[string]any{"a": 0}, nil); code != 200 {
		t.Fatal(code)
	}
	for round := range 5 {
		cur := getShadow(t, h, "cv").Version
		var wg sync.WaitGroup
		codes := make([]int, 2)
		bodies := make([]map[string]any, 2)
		for i := range 2 {
			wg.Go(func() {
				codes[i] = jsonCall(t, h, "PUT", "/api/v1/devices/cv/state/desired", map[string]any{"a": round*10 + i + 1}, &bodies[i], "If-Match", fmt.Sprintf(`"%d"`, cur))
			})
		}
		wg.Wait()
		won, lost := -1, -1
		for i, c := range codes {
			switch c {
			case 200:
				won = i
			case http.StatusConflict:
				lost = i
			}
		}
		if won < 0 || lost < 0 {
			t.Fatalf("round %d: codes %v; want one 200 and one 409", round, codes)
		}
		if v, _ := bodies[lost]["version"].(float64); uint64(v) != cur+1 || !strings.Contains(fmt.Sprint(bodies[lost]["error"]), "version") {
			t.Errorf("409 answer %v; want the current version %d", bodies[lost], cur+1)
		}
		s := getShadow(t, h, "cv")
		if s.Version != cur+1 || s.Desired["a"] != float64(round*10+won+1) {
			t.Errorf("round %d: shadow %+v; want the winner's value at version %d", round, s, cur+1)
		}
	}
}

// TestShadowBadInput: each bad request is refused with a clear error and changes nothing.
func TestShadowBadInput(t *testing.T) {
	h := hubtest.Start(t)
	token := h.CreateDevice("sb", nil)
	jsonCall(t, h, "PUT", "/api/v1/devices/sb/state/desired", map[string]any{"keep": true}, nil)
	big := `{"x":"` + strings.Repeat("a", 64<<10) + `"}`
	tests := []struct {
		name, method, path, body string
		headers                  []string
		code                     int
		says                     string
	}{
		{"array", "PUT", "/api/v1/devices/sb/state/desired", `[1,2]`, nil, 400, "JSON object"},
		{"string", "PUT", "/api/v1/devices/sb/state/desired", `"on"`, nil, 400, "JSON object"},
		{"not JSON", "PUT", "/api/v1/devices/sb/state/desired", `{"a":`, nil, 400, "not valid JSON"},
		{"empty", "PUT", "/api/v1/devices/sb/state/desired", ``, nil, 400, "empty"},
		{"too large", "PUT", "/api/v1/devices/sb/state/desired", big, nil, 413, "65536"},
		{"stale version", "PUT", "/api/v1/devices/sb/state/desired", `{"a":1}`, []string{"If-Match", `"0"`}, 409, "version 1"},
		{"bad If-Match", "PUT", "/api/v1/devices/sb/state/desired", `{"a":1}`, []string{"If-Match", `"x"`}, 400, "If-Match"},
		{"unknown device", "PUT", "/api/v1/devices/nobody/state/desired", `{"a":1}`, nil, 404, "nobody"},
		{"unknown device state", "GET", "/api/v1/devices/nobody/state", ``, nil, 404, "nobody"},
	}
	for _, tt := range tests {
		var body []byte
		if tt.body != "" {
			body = []byte(tt.body)
		}
		code, data, _ := call(t, h, tt.method, tt.path, body, tt.headers...)
		var e apiError
		json.Unmarshal(data, &e)
		if code != tt.code || !strings.Contains(e.Error, tt.says) {
			t.Errorf("%s: %d %s; want %d mentioning %q", tt.name, code, data, tt.code, tt.says)
		}
	}
	if s := getShadow(t, h, "sb"); s.Version != 1 || asJSON(s.Desired) != `{"keep":true}` {
		t.Errorf("after bad input: %+v; want the first desired state untouched", s)
	}
	// A device reporting something that is not an object is refused (and dead-lettered).
	dev, ca, err := h.MQTT5(t, "sb", "sb", token, nil)
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, _ := dev.Publish(ctx, newPublish("devices/sb/state/reported", `[1]`))
	if pr == nil || pr.ReasonCode != 0x99 {
		t.Errorf("reporting an array: %+v; want reason 0x99", pr)
	}
	pr, _ = dev.Publish(ctx, newPublish("devices/sb/state/reported", big))
	if pr == nil || pr.ReasonCode != 0x95 {
		t.Errorf("reporting 64 KiB: %+v; want reason 0x95", pr)
	}
	cc := coapDial(t, h)
	if code, body, _ := coapDo(t, cc, codes.PUT, "/devices/sb/state/reported", message.AppJSON, `"x"`, "token="+token); code != codes.BadRequest || body == "" {
		t.Errorf("CoAP report of a string: %v %q; want 4.00 with a diagnostic", code, body)
	}
	if s := getShadow(t, h, "sb"); s.ReportedVersion != 0 {
		t.Errorf("reported version %d after refused reports", s.ReportedVersion)
	}
}
