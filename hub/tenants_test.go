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

	"github.com/coder/websocket"
	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// seen collects what a subscriber got, by device.
type seen struct {
	mu  sync.Mutex
	got map[string]int
}

func (s *seen) add(dev string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string]int{}
	}
	s.got[dev]++
}

func (s *seen) count(dev string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[dev]
}

// TestTenantIsolation: with tenants acme and globex, a credential of acme can neither read nor
// write globex's devices, messages, rules, replays, keys or audit events, over the HTTP API,
// SSE, WebSocket, MQTT (as application and as device) and CoAP (as application and as device);
// every attempt in the table is refused with the code given, and what acme may see it does.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	for _, name := range []string{"acme", "globex"} {
		if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/tenants", map[string]any{"name": name, "quotas": map[string]any{"max_devices": 3}}); code != 201 {
			t.Fatalf("create tenant %s: %d %s", name, code, body)
		}
	}
	all := []string{"admin"}
	_, keyA := newKey(t, h, "acme-admin", "acme", all...)
	idB, keyB := newKey(t, h, "globex-admin", "globex", all...)
	tokA1 := h.CreateDevice("a1", map[string]any{"tenant": "acme"})
	tokB1 := h.CreateDevice("b1", map[string]any{"tenant": "globex"})
	// A device created with a tenant's key belongs to that tenant.
	var a2 struct{ Tenant, Token string }
	if code, body := call(t, h, keyA, "POST", "/api/v1/devices", map[string]any{"id": "a2"}); code != 201 || jsonUnmarshal(body, &a2) != nil || a2.Tenant != "acme" {
		t.Fatalf("create a2 with acme's key: %d %s", code, body)
	}

	// Live subscribers of acme, started before any traffic: SSE, WebSocket, MQTT app.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var sse, ws, mq seen
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/api/v1/stream?topic=%23", nil)
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("SSE with acme's key: %v %v", resp, err)
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var m struct{ Device string }
				if json.Unmarshal([]byte(data), &m) == nil && m.Device != "" {
					sse.add(m.Device)
				}
			}
		}
	}()
	var tok struct{ Token string }
	_, body := call(t, h, keyA, "POST", "/api/v1/tokens", nil)
	_ = jsonUnmarshal(body, &tok)
	wc, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.URL, "http")+"/api/v1/ws?topic=devices/%23&access_token="+tok.Token, nil)
	if err != nil {
		t.Fatalf("WebSocket with acme's token: %v", err)
	}
	t.Cleanup(func() { wc.CloseNow() })
	go func() {
		for {
			_, data, err := wc.Read(ctx)
			if err != nil {
				return
			}
			var m struct{ Type, Device string }
			if json.Unmarshal(data, &m) == nil && m.Type == "message" {
				ws.add(m.Device)
			}
		}
	}()
	app, _, err := h.MQTT5(t, "acme-app", "app", keyA, func(p *paho5.Publish) { mq.add(strings.Split(p.Topic, "/")[1]) })
	if err != nil {
		t.Fatalf("MQTT app login with acme's key: %v", err)
	}
	if rc := subscribe5(t, app, "devices/+/telemetry"); rc != 1 {
		t.Fatalf("acme app subscribes devices/+/telemetry: %#x", rc)
	}
	// A rule of acme over every device's telemetry.
	if code, body := call(t, h, keyA, "POST", "/api/v1/rules", map[string]any{"name": "ra", "lateness": "0s",
		"sql": "SELECT device, count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)"}); code != 201 || !strings.Contains(body, `"tenant":"acme"`) {
		t.Fatalf("create acme's rule: %d %s", code, body)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		code, body := call(t, h, keyA, "GET", "/api/v1/rules/ra/stats", nil)
		return code == 200 && strings.Contains(body, `"running":true`) && strings.Contains(body, `"catching_up":false`)
	}, "acme's rule not running")
	// globex's own objects: a rule, a replay.
	if code, body := call(t, h, keyB, "POST", "/api/v1/rules", map[string]any{"name": "rb", "sql": "SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m)"}); code != 201 {
		t.Fatalf("create globex's rule: %d %s", code, body)
	}

	// Traffic: both devices publish over MQTT; b1 also sends one bad message (a dead letter).
	devA, _, err := h.MQTT5(t, "a1", "a1", tokA1, nil)
	if err != nil {
		t.Fatal(err)
	}
	devB, _, err := h.MQTT5(t, "b1", "b1", tokB1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if rc, r := publish5(t, devA, "devices/a1/telemetry", fmt.Sprintf(`{"t":%d}`, i)); rc != 0 {
			t.Fatalf("a1 telemetry: %#x %s", rc, r)
		}
		if rc, r := publish5(t, devB, "devices/b1/telemetry", fmt.Sprintf(`{"t":%d}`, i)); rc != 0 {
			t.Fatalf("b1 telemetry: %#x %s", rc, r)
		}
	}
	publish5(t, devB, "devices/b1/telemetry", `not json`)
	var replayB struct{ ID string }
	if code, body := call(t, h, keyB, "POST", "/api/v1/replays", map[string]any{"devices": []string{"b1"}, "from": "-1h", "speed": "max"}); code != 201 || jsonUnmarshal(body, &replayB) != nil {
		t.Fatalf("globex's replay: %d %s", code, body)
	}

	// What acme sees arrives; nothing of globex does.
	hubtest.Eventually(t, 10*time.Second, func() bool { return sse.count("a1") >= 3 && ws.count("a1") >= 3 && mq.count("a1") >= 3 },
		"acme's live subscribers did not get a1's messages (sse %d, ws %d, mqtt %d)", sse.count("a1"), ws.count("a1"), mq.count("a1"))
	// globex's messages were stored before a1's last, and every subscriber delivers in order.
	if n := sse.count("b1") + ws.count("b1") + mq.count("b1"); n > 0 {
		t.Errorf("acme's live subscribers got %d of globex's messages (sse %d, ws %d, mqtt %d)", n, sse.count("b1"), ws.count("b1"), mq.count("b1"))
	}

	type attempt struct {
		method, path string
		body         any
		want         int
		wantBody     string // in the answer
		notBody      string // must not be in the answer
	}
	for _, a := range []attempt{
		{"GET", "/api/v1/devices/b1", nil, 404, "device not found: b1", ""},
		{"PATCH", "/api/v1/devices/b1", map[string]any{"name": "x"}, 404, "device not found", ""},
		{"DELETE", "/api/v1/devices/b1", nil, 404, "device not found", ""},
		{"POST", "/api/v1/devices/b1/token", nil, 404, "device not found", ""},
		{"GET", "/api/v1/devices/b1/messages", nil, 404, "device not found", ""},
		{"GET", "/api/v1/devices/b1/telemetry?field=t&from=-1h", nil, 404, "device not found", ""},
		{"GET", "/api/v1/devices/b1/telemetry/latest", nil, 404, "device not found", ""},
		{"GET", "/api/v1/devices/b1/state", nil, 404, "device not found", ""},
		{"PUT", "/api/v1/devices/b1/state/desired", map[string]any{"on": true}, 404, "device not found", ""},
		{"PATCH", "/api/v1/devices/b1/state/desired", map[string]any{"on": true}, 404, "device not found", ""},
		{"POST", "/api/v1/devices/b1/commands/reboot", map[string]any{}, 404, "device not found", ""},
		{"GET", "/api/v1/devices/b1/commands", nil, 404, "device not found", ""},
		{"POST", "/api/v1/devices/b1/ping", nil, 404, "device not found", ""},
		{"GET", "/api/v1/devices/nope", nil, 404, "device not found: nope", ""}, // the same answer as for globex's
		{"GET", "/api/v1/devices", nil, 200, `"a1"`, `"b1"`},
		{"GET", "/api/v1/devices?tenant=globex", nil, 200, `"a1"`, `"b1"`},
		{"POST", "/api/v1/devices", map[string]any{"id": "x1", "tenant": "globex"}, 403, "confined to tenant acme", ""},
		{"POST", "/api/v1/devices:bulk", []map[string]any{{"id": "x2", "tenant": "globex"}}, 403, "confined to tenant acme", ""},
		{"POST", "/api/v1/devices", map[string]any{"id": "a3"}, 201, `"tenant":"acme"`, ""},
		{"POST", "/api/v1/devices", map[string]any{"id": "a4"}, 403, "quota is 3", ""},
		{"GET", "/api/v1/deadletters", nil, 200, `"messages"`, `"b1"`},
		{"GET", "/api/v1/deadletters?device=b1", nil, 200, `"messages"`, `"b1"`},
		{"GET", "/api/v1/rules", nil, 200, `"ra"`, `"rb"`},
		{"GET", "/api/v1/rules/rb", nil, 404, "rule not found: rb", ""},
		{"PUT", "/api/v1/rules/rb", map[string]any{"name": "rb", "sql": "SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m)"}, 404, "rule not found", ""},
		{"DELETE", "/api/v1/rules/rb", nil, 404, "rule not found", ""},
		{"GET", "/api/v1/rules/rb/stats", nil, 404, "rule not found", ""},
		{"GET", "/api/v1/rules/rb/results", nil, 404, "rule not found", ""},
		{"POST", "/api/v1/rules", map[string]any{"name": "rx", "tenant": "globex", "sql": "SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m)"}, 403, "confined to tenant acme", ""},
		{"GET", "/api/v1/replays", nil, 200, `"replays"`, replayB.ID},
		{"GET", "/api/v1/replays/" + replayB.ID, nil, 404, "not found", ""},
		{"POST", "/api/v1/replays/" + replayB.ID + "/pause", nil, 404, "not found", ""},
		{"POST", "/api/v1/replays/" + replayB.ID + "/cancel", nil, 404, "not found", ""},
		{"DELETE", "/api/v1/replays/" + replayB.ID, nil, 404, "not found", ""},
		{"POST", "/api/v1/replays", map[string]any{"devices": []string{"b1"}, "from": "-1h"}, 404, "device not found: b1", ""},
		{"POST", "/api/v1/replays", map[string]any{"from": "-1h"}, 400, "must name its devices", ""},
		{"GET", "/api/v1/simulations", nil, 403, "acts on every tenant", ""},
		{"GET", "/api/v1/scenarios", nil, 403, "acts on every tenant", ""},
		{"POST", "/api/v1/backtests", map[string]any{"rule": "ra", "devices": []string{"a1"}, "from": "-1h"}, 200, `"tenant":"acme"`, `"b1"`},
		{"POST", "/api/v1/backtests", map[string]any{"rule": "rb", "devices": []string{"a1"}, "from": "-1h"}, 404, `no rule named \"rb\"`, ""},
		{"POST", "/api/v1/backtests", map[string]any{"rule": "ra", "devices": []string{"b1"}, "from": "-1h"}, 404, "device not found: b1", ""},
		{"POST", "/api/v1/backtests", map[string]any{"rule": "ra", "from": "-1h"}, 400, "must name its devices", ""},
		{"POST", "/api/v1/backtests", map[string]any{"rule": "ra", "devices": []string{"a1"}, "from": "-1h", "tenant": "globex"}, 403, "cannot read tenant globex", ""},
		{"GET", "/api/v1/provisioning-keys", nil, 403, "acts on every tenant", ""},
		{"GET", "/api/v1/canaries", nil, 200, `"canaries"`, ""},
		{"GET", "/api/v1/keys", nil, 200, `"acme-admin"`, `"globex-admin"`},
		{"GET", "/api/v1/keys/" + idB, nil, 404, "not found", ""},
		{"DELETE", "/api/v1/keys/" + idB, nil, 404, "not found", ""},
		{"POST", "/api/v1/keys", map[string]any{"name": "x", "scopes": []string{"admin"}, "tenant": "globex"}, 403, "cannot make keys for tenant globex", ""},
		{"GET", "/api/v1/tenants", nil, 200, `"acme"`, `"globex"`},
		{"GET", "/api/v1/tenants/globex", nil, 404, "not found", ""},
		{"PUT", "/api/v1/tenants/globex", map[string]any{"quotas": map[string]any{}}, 403, "acts on every tenant", ""},
		{"POST", "/api/v1/tenants", map[string]any{"name": "x"}, 403, "acts on every tenant", ""},
		{"GET", "/api/v1/audit", nil, 200, `"events"`, `"globex"`},
		{"GET", "/api/v1/audit?tenant=globex", nil, 200, `"events"`, `"globex"`},
	} {
		code, body := call(t, h, keyA, a.method, a.path, a.body)
		if code != a.want || !strings.Contains(body, a.wantBody) || (a.notBody != "" && strings.Contains(body, a.notBody)) {
			t.Errorf("acme: %s %s: %d %.300s, want %d with %q and without %q", a.method, a.path, code, body, a.want, a.wantBody, a.notBody)
		}
	}
	// A backtest reads what the live rule reads: the hub's own key backtesting acme's rule over
	// every device's telemetry gets only acme's device, globex's rule only globex's.
	for rule, want := range map[string][2]string{"ra": {`"a1"`, `"b1"`}, "rb": {`"tenant":"globex"`, `"a1"`}} {
		var rep struct {
			Messages int
			Tenant   string
		}
		code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/backtests", map[string]any{"rule": rule, "from": "-1h"})
		if code != 200 || !strings.Contains(body, want[0]) || strings.Contains(body, want[1]) || jsonUnmarshal(body, &rep) != nil || rep.Messages != 3 {
			t.Errorf("hub key backtests %s: %d %.400s; want its tenant's 3 messages only (%s, not %s)", rule, code, body, want[0], want[1])
		}
	}

	// globex's objects are all still there, untouched.
	for _, p := range []string{"/api/v1/devices/b1", "/api/v1/rules/rb", "/api/v1/replays/" + replayB.ID, "/api/v1/keys/" + idB} {
		if code, body := call(t, h, keyB, "GET", p, nil); code != 200 {
			t.Errorf("globex: GET %s after acme's attempts: %d %s", p, code, body)
		}
	}
	if _, body := call(t, h, keyB, "GET", "/api/v1/devices/b1", nil); strings.Contains(body, `"name":"x"`) {
		t.Errorf("acme renamed b1: %s", body)
	}

	// MQTT: acme's application and device against globex's topics.
	for _, tt := range []struct {
		name string
		c    *paho5.Client
		sub  bool
		arg  string
		want byte
	}{
		{"app subscribes to b1's telemetry", app, true, "devices/b1/telemetry", 0x87},
		{"app subscribes to b1's everything", app, true, "devices/b1/#", 0x87},
		{"app subscribes to an app topic", app, true, "alerts/#", 0x87},
		{"app subscribes to an unknown device", app, true, "devices/nope/telemetry", 0x87},
		{"app subscribes to a1's state", app, true, "devices/a1/state/reported", 1},
		{"app sends b1 a command", app, false, "devices/b1/commands/reboot", 0x87},
		{"app sets b1's desired state", app, false, "devices/b1/state/desired", 0x87},
		{"app publishes for b1", app, false, "devices/b1/telemetry", 0x87},
		{"app publishes to an app topic", app, false, "alerts/x", 0x87},
		{"app sends a1 a command", app, false, "devices/a1/commands/reboot", 0},
		{"device a1 publishes as b1", devA, false, "devices/b1/telemetry", 0x87},
		{"device a1 subscribes to b1's commands", devA, true, "devices/b1/commands/#", 0x87},
	} {
		var got byte
		if tt.sub {
			got = subscribe5(t, tt.c, tt.arg)
		} else {
			got, _ = publish5(t, tt.c, tt.arg, `{"on":true}`)
		}
		if got != tt.want {
			t.Errorf("MQTT: acme's %s (%s): reason %#x, want %#x", tt.name, tt.arg, got, tt.want)
		}
	}

	// CoAP: acme's application key and device token against globex's paths.
	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	coapDo := func(method, path, query, payload string, observe bool) codes.Code {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		var opts []message.Option
		for q := range strings.SplitSeq(query, "&") {
			opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
		}
		if method == "GET" {
			if observe {
				opts = append(opts, message.Option{ID: message.Observe, Value: []byte{}})
			}
			resp, err := cc.Get(cctx, path, opts...)
			if err != nil {
				t.Fatalf("CoAP GET %s: %v", path, err)
			}
			return resp.Code()
		}
		resp, err := cc.Post(cctx, path, message.AppJSON, strings.NewReader(payload), opts...)
		if err != nil {
			t.Fatalf("CoAP POST %s: %v", path, err)
		}
		return resp.Code()
	}
	for _, tt := range []struct {
		name, method, path, query string
		observe                   bool
		want                      codes.Code
	}{
		{"app reads b1's telemetry", "GET", "/devices/b1/telemetry", "key=" + keyA, false, codes.NotFound},
		{"app observes b1's telemetry", "GET", "/devices/b1/telemetry", "key=" + keyA, true, codes.NotFound},
		{"app sends b1 a command", "POST", "/devices/b1/commands/reboot", "key=" + keyA, false, codes.Forbidden},
		{"app reads a1's telemetry", "GET", "/devices/a1/telemetry", "key=" + keyA, false, codes.Content},
		{"device a1 publishes as b1", "POST", "/devices/b1/telemetry", "token=" + tokA1 + "&id=a1", false, codes.Forbidden},
		{"device a1 observes b1's commands", "GET", "/devices/b1/commands/x", "token=" + tokA1 + "&id=a1", true, codes.Forbidden},
	} {
		if got := coapDo(tt.method, tt.path, tt.query, `{"t":1}`, tt.observe); got != tt.want {
			t.Errorf("CoAP: acme's %s: %v, want %v", tt.name, got, tt.want)
		}
	}

	// acme's rule saw a1's three messages and none of b1's.
	var last struct{ Seq uint64 }
	var msgs struct{ Messages []struct{ Seq uint64 } }
	h.Do("GET", "/api/v1/devices/b1/messages?limit=1", nil, &msgs)
	if len(msgs.Messages) > 0 {
		last.Seq = msgs.Messages[0].Seq
	}
	var st struct {
		EventsIn uint64 `json:"events_in"`
		Groups   int    `json:"groups"`
		LastSeq  uint64 `json:"last_seq"`
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return h.Do("GET", "/api/v1/rules/ra/stats", nil, &st) == 200 && st.LastSeq >= last.Seq && st.EventsIn >= 3
	}, "acme's rule did not read past b1's messages: %+v", st)
	if st.EventsIn != 3 || st.Groups != 1 {
		t.Errorf("acme's rule: %d events in %d groups, want a1's 3 in 1 group", st.EventsIn, st.Groups)
	}
	if n := sse.count("b1") + ws.count("b1") + mq.count("b1"); n > 0 {
		t.Errorf("at the end, acme's live subscribers had got %d of globex's messages", n)
	}
	// Stored messages carry their tenant (Tb-Tenant); the default tenant's carry none.
	nc, err := nats.Connect(h.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, "IOT")
	if err != nil {
		t.Fatal(err)
	}
	for subj, want := range map[string]string{"iot.devices.b1.telemetry": "globex", "iot.devices.a1.telemetry": "acme"} {
		m, err := stream.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if got := m.Header.Get("Tb-Tenant"); got != want {
			t.Errorf("%s: Tb-Tenant %q, want %q", subj, got, want)
		}
	}
}

// TestDeleteTenant: a tenant that still owns devices, API keys, rules or replays is not deleted
// (409 naming what remains); the default tenant never is; once empty it is deleted (204,
// audited), its quotas stop applying, and the name can be created again.
func TestDeleteTenant(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/tenants", map[string]any{"name": "acme", "quotas": map[string]any{"max_devices": 1}}); code != 201 {
		t.Fatalf("create tenant: %d %s", code, body)
	}
	h.CreateDevice("ad1", map[string]any{"tenant": "acme"})
	keyID, _ := newKey(t, h, "acme-reader", "acme", "devices:read")
	if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/rules", map[string]any{"name": "acme-rule", "tenant": "acme",
		"sql": "SELECT device, count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)"}); code != 201 {
		t.Fatalf("create acme's rule: %d %s", code, body)
	}

	code, body := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/tenants/acme", nil)
	if want := `tenant \"acme\" still owns 1 device, 1 API key, 1 rule or canary: delete them first`; code != 409 || !strings.Contains(body, want) {
		t.Fatalf("delete a tenant that owns things: %d %s; want 409 %s", code, body, want)
	}
	if code, body := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/tenants/default", nil); code != 400 || !strings.Contains(body, "the default tenant cannot be deleted") {
		t.Errorf("delete the default tenant: %d %s; want 400 saying it cannot be", code, body)
	}
	if code, body := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/tenants/nosuch", nil); code != 404 || !strings.Contains(body, `tenant \"nosuch\" not found`) {
		t.Errorf("delete an unknown tenant: %d %s; want 404", code, body)
	}
	_, acmeAdmin := newKey(t, h, "acme-admin", "acme", "admin")
	if code, _ := call(t, h, acmeAdmin, "DELETE", "/api/v1/tenants/acme", nil); code != 403 {
		t.Errorf("a tenant's own admin key deletes the tenant: %d; want 403 (hub-wide admins only)", code)
	}

	for _, del := range []string{"/api/v1/devices/ad1", "/api/v1/keys/" + keyID, "/api/v1/rules/acme-rule"} {
		if code, body := call(t, h, hubtest.APIKey, "DELETE", del, nil); code != 204 {
			t.Fatalf("DELETE %s: %d %s", del, code, body)
		}
	}
	code, body = call(t, h, hubtest.APIKey, "DELETE", "/api/v1/tenants/acme", nil)
	if want := `still owns 1 API key`; code != 409 || !strings.Contains(body, want) {
		t.Fatalf("delete with acme's admin key left: %d %s; want 409 %s", code, body, want)
	}
	var keys struct{ Keys []struct{ ID, Tenant string } }
	_, body = call(t, h, hubtest.APIKey, "GET", "/api/v1/keys", nil)
	_ = jsonUnmarshal(body, &keys)
	for _, k := range keys.Keys {
		if k.Tenant == "acme" {
			call(t, h, hubtest.APIKey, "DELETE", "/api/v1/keys/"+k.ID, nil)
		}
	}
	if code, body := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/tenants/acme", nil); code != 204 {
		t.Fatalf("delete the emptied tenant: %d %s", code, body)
	}
	if code, _ := call(t, h, hubtest.APIKey, "GET", "/api/v1/tenants/acme", nil); code != 404 {
		t.Errorf("GET a deleted tenant: %d, want 404", code)
	}
	if _, ok := find(readAudit(t, h, hubtest.APIKey, "type=tenant"), func(e auditEvent) bool { return e.Tenant == "acme" && e.Reason == "deleted" }); !ok {
		t.Error("no audit event for the deletion")
	}
	// Created again, without the old quota: two devices are fine now.
	if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/tenants", map[string]any{"name": "acme"}); code != 201 {
		t.Fatalf("create acme again: %d %s", code, body)
	}
	for _, id := range []string{"ad2", "ad3"} {
		if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/devices", map[string]any{"id": id, "tenant": "acme"}); code != 201 {
			t.Errorf("device %s in the new acme: %d %s", id, code, body)
		}
	}
}
