package devices_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

type listJSON struct {
	Devices []deviceJSON `json:"devices"`
	Next    string       `json:"next"`
	Error   string       `json:"error"`
}

func ids(ds []deviceJSON) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func list(t *testing.T, h *hubtest.Hub, q string) listJSON {
	t.Helper()
	var l listJSON
	if code := jsonCall(t, h, "GET", "/api/v1/devices?"+q, nil, &l); code != 200 {
		t.Fatalf("list ?%s: %d %s", q, code, l.Error)
	}
	return l
}

// TestRegistrySearch: filters by type, tags, metadata, status, free text, location; stable
// pagination; invalid filters are 400 naming the parameter.
func TestRegistrySearch(t *testing.T) {
	h := hubtest.Start(t)
	h.CreateDevice("pump-1", map[string]any{"name": "Main Pump", "type": "pump", "tags": map[string]string{"site": "oslo", "zone": "a"}, "location": map[string]float64{"lat": 59.91, "lon": 10.75}, "metadata": map[string]any{"fw": "1.2", "hw": map[string]any{"rev": 3}}})
	h.CreateDevice("pump-2", map[string]any{"name": "Spare", "type": "pump", "tags": map[string]string{"site": "bergen"}, "location": map[string]float64{"lat": 60.39, "lon": 5.32}, "metadata": map[string]any{"fw": "1.3"}})
	tok := h.CreateDevice("valve-1", map[string]any{"name": "Pump inlet valve", "type": "valve", "tags": map[string]string{"site": "oslo"}})
	h.CreateDevice("meter-1", map[string]any{"type": "meter"})

	cases := []struct {
		q    string
		want []string
	}{
		{"", []string{"meter-1", "pump-1", "pump-2", "valve-1"}},
		{"type=pump", []string{"pump-1", "pump-2"}},
		{"tag=site:oslo", []string{"pump-1", "valve-1"}},
		{"tag=site:oslo&tag=zone:a", []string{"pump-1"}},
		{"q=PUMP", []string{"pump-1", "pump-2", "valve-1"}}, // id or name, any case
		{"q=spare", []string{"pump-2"}},
		{"meta=fw:1.2", []string{"pump-1"}},
		{"meta=hw.rev:3", []string{"pump-1"}},
		{"near=59.9,10.7,10", []string{"pump-1"}},
		{"near=59.9,10.7,400", []string{"pump-1", "pump-2"}},
		{"bbox=5,60,6,61", []string{"pump-2"}},
		{"type=pump&tag=site:bergen", []string{"pump-2"}},
		{"status=offline", []string{"meter-1", "pump-1", "pump-2", "valve-1"}},
		{"status=online", []string{}},
	}
	for _, c := range cases {
		if got := ids(list(t, h, c.q).Devices); !slices.Equal(got, c.want) {
			t.Errorf("?%s = %v; want %v", c.q, got, c.want)
		}
	}
	// Status follows liveness.
	cc := coapDial(t, h)
	if code, _, _ := coapDo(t, cc, codes.POST, "/devices/valve-1/telemetry", message.AppJSON, `{"p":1}`, "token="+tok); code != codes.Changed {
		t.Fatal(code)
	}
	eventually(t, 5*time.Second, func() bool { return slices.Equal(ids(list(t, h, "status=online").Devices), []string{"valve-1"}) }, "valve-1 not listed online")
	if got := ids(list(t, h, "status=offline&tag=site:oslo").Devices); !slices.Equal(got, []string{"pump-1"}) {
		t.Errorf("offline in oslo: %v", got)
	}
	l := list(t, h, "q=valve")
	if len(l.Devices) != 1 || l.Devices[0].Status != "online" || l.Devices[0].Protocol != "coap" || l.Devices[0].LastSeen == nil {
		t.Errorf("listed device carries no liveness: %+v", l.Devices)
	}

	// Invalid filters.
	for q, says := range map[string]string{
		"tag=site":          "tag",
		"meta=nocolon":      "meta",
		"status=asleep":     "status",
		"limit=0":           "limit",
		"limit=5000":        "limit",
		"near=1,2":          "near",
		"near=100,0,1":      "near",
		"bbox=0,10,1,5":     "bbox",
		"cursor=" + "%20x":  "cursor",
		"colour=red":        "unknown parameter",
		"type=a&type=b":     "type",
		"near=1,2,nan":      "near",
		"q=a&limit=1&foo=1": "foo",
	} {
		var e apiError
		if code := jsonCall(t, h, "GET", "/api/v1/devices?"+q, nil, &e); code != 400 || !strings.Contains(e.Error, says) {
			t.Errorf("?%s: %d %q; want 400 mentioning %q", q, code, e.Error, says)
		}
	}
}

// TestRegistryPagination: pages follow the ID order, do not repeat or skip, and stay stable
// while devices are added before the cursor.
func TestRegistryPagination(t *testing.T) {
	h := hubtest.Start(t)
	var all []string
	var batch []map[string]any
	for i := range 57 {
		id := fmt.Sprintf("dev-%03d", i)
		all = append(all, id)
		batch = append(batch, map[string]any{"id": id, "type": []string{"a", "b"}[i%2]})
	}
	if code := jsonCall(t, h, "POST", "/api/v1/devices:bulk", batch, nil); code != 201 {
		t.Fatalf("bulk: %d", code)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		l := list(t, h, "limit=10&cursor="+url.QueryEscape(cursor))
		got = append(got, ids(l.Devices)...)
		if pages == 2 {
			h.CreateDevice("aaa-early", nil) // sorts before the cursor: must not shift the pages
		}
		if l.Next == "" {
			break
		}
		cursor = l.Next
	}
	if !slices.Equal(got, all) {
		t.Errorf("pages gave %d IDs %v; want %v", len(got), got, all)
	}
	var typeB []string
	cursor = ""
	for {
		l := list(t, h, "type=b&limit=7&cursor="+url.QueryEscape(cursor))
		typeB = append(typeB, ids(l.Devices)...)
		if l.Next == "" {
			break
		}
		cursor = l.Next
	}
	if len(typeB) != 28 || !slices.IsSorted(typeB) {
		t.Errorf("filtered pages: %d %v", len(typeB), typeB)
	}
}

// TestBulkCreate: JSON arrays and CSV, tokens returned once and working; all or nothing.
func TestBulkCreate(t *testing.T) {
	h := hubtest.Start(t)
	var res struct {
		Created int          `json:"created"`
		Devices []deviceJSON `json:"devices"`
	}
	body := `[{"id":"j-1","type":"t","tags":{"a":"b"}},{"id":"j-2","location":{"lat":1,"lon":2},"metadata":{"x":1}}]`
	code, data, _ := call(t, h, "POST", "/api/v1/devices:bulk", []byte(body))
	if code != 201 || json.Unmarshal(data, &res) != nil || res.Created != 2 || res.Devices[0].Token == "" || res.Devices[1].ID != "j-2" {
		t.Fatalf("JSON bulk: %d %s", code, data)
	}
	dev := mqttDevice(t, h, "j-1", "j-1", res.Devices[0].Token)
	dev.Disconnect(10)

	csv := "id,name,type,tags,lat,lon,metadata,inactivity_timeout\n" +
		"c-1,First,meter,site=oslo;floor=2,59.9,10.7,\"{\"\"fw\"\":\"\"2\"\"}\",90s\n" +
		"c-2,,meter,,,,,\n"
	code, data, _ = call(t, h, "POST", "/api/v1/devices:bulk", []byte(csv), "Content-Type", "text/csv")
	if code != 201 || json.Unmarshal(data, &res) != nil || res.Created != 2 {
		t.Fatalf("CSV bulk: %d %s", code, data)
	}
	d := getDevice(t, h, "c-1")
	if d.Name != "First" || d.Tags["floor"] != "2" || d.Metadata["fw"] != "2" {
		t.Errorf("CSV device %+v", d)
	}
	var full map[string]any
	jsonCall(t, h, "GET", "/api/v1/devices/c-1", nil, &full)
	if full["inactivity_timeout"] != "1m30s" || full["location"] == nil {
		t.Errorf("CSV device JSON %v", full)
	}

	// All or nothing: one bad item, or one existing ID, and nothing is created.
	bad := []struct {
		name, ctype, body string
		code              int
		says              string
	}{
		{"bad id in JSON", "application/json", `[{"id":"ok-1"},{"id":"bad id"}]`, 400, "device 1"},
		{"unknown field", "application/json", `[{"id":"ok-1","colour":"red"}]`, 400, "colour"},
		{"existing id", "application/json", `[{"id":"ok-1"},{"id":"j-1"}]`, 409, "j-1"},
		{"duplicate in batch", "application/json", `[{"id":"ok-1"},{"id":"ok-1"}]`, 409, "also device 0"},
		{"not an array", "application/json", `{"id":"ok-1"}`, 400, "JSON array"},
		{"CSV bad tags", "text/csv", "id,tags\nok-1,site\n", 400, "line 2"},
		{"CSV bad lat", "text/csv", "id,lat,lon\nok-1,north,1\n", 400, "line 2"},
		{"CSV unknown column", "text/csv", "id,colour\nok-1,red\n", 400, "colour"},
		{"CSV no id column", "text/csv", "name\nx\n", 400, "id column"},
		{"CSV bad id on line 3", "text/csv", "id\nok-1\nbad id\n", 400, "bad id"},
		{"empty", "application/json", `[]`, 400, "no devices"},
		{"XML", "application/xml", `<d/>`, 415, "JSON array"},
	}
	for _, tt := range bad {
		code, data, _ := call(t, h, "POST", "/api/v1/devices:bulk", []byte(tt.body), "Content-Type", tt.ctype)
		if code != tt.code || !strings.Contains(string(data), tt.says) {
			t.Errorf("%s: %d %s; want %d mentioning %q", tt.name, code, data, tt.code, tt.says)
		}
	}
	var e struct {
		Errors []struct {
			Index, Line int
			ID, Error   string
		}
	}
	code, data, _ = call(t, h, "POST", "/api/v1/devices:bulk", []byte("id,type\nok-1,x\nbad id,y\nok-3,z\nj-2,w\n"), "Content-Type", "text/csv")
	if json.Unmarshal(data, &e); code != 400 || len(e.Errors) != 2 || e.Errors[0].Line != 3 || e.Errors[0].Index != 1 || e.Errors[1].Line != 5 || !strings.Contains(e.Errors[1].Error, "exists") {
		t.Errorf("CSV errors: %d %s; want the bad ID on line 3 (index 1) and the existing one on line 5", code, data)
	}
	if l := list(t, h, "q=ok-"); len(l.Devices) != 0 {
		t.Errorf("devices created by failed batches: %v", ids(l.Devices))
	}
}

// TestPing: an MQTT device is reachable by its connection; a CoAP device by a CoAP ping to its
// last address, with the round-trip time; a CoAP device whose address no longer answers is
// not reachable.
func TestPing(t *testing.T) {
	h := hubtest.Start(t)
	mtok := h.CreateDevice("pm", nil)
	ctok := h.CreateDevice("pc", nil)
	h.CreateDevice("never", nil)
	type pingJSON struct {
		Reachable bool     `json:"reachable"`
		Method    string   `json:"method"`
		RTT       *float64 `json:"rtt_ms"`
		Status    string   `json:"status"`
		Detail    string   `json:"detail"`
		MQTT      []struct {
			KeepAlive int `json:"keep_alive_s"`
		} `json:"mqtt"`
	}
	ping := func(id string) pingJSON {
		t.Helper()
		var p pingJSON
		if code := jsonCall(t, h, "POST", "/api/v1/devices/"+id+"/ping?timeout=3s", nil, &p); code != 200 {
			t.Fatalf("ping %s: %d %+v", id, code, p)
		}
		return p
	}
	mqttDevice(t, h, "pm", "pm", mtok)
	if p := ping("pm"); !p.Reachable || p.Method != "mqtt-connection" || len(p.MQTT) != 1 || p.MQTT[0].KeepAlive != 30 {
		t.Errorf("ping MQTT device: %+v", p)
	}
	cc := coapDial(t, h)
	if code, _, _ := coapDo(t, cc, codes.POST, "/devices/pc/telemetry", message.AppJSON, `{"x":1}`, "token="+ctok); code != codes.Changed {
		t.Fatal(code)
	}
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "pc").Status == "online" }, "pc not online")
	if p := ping("pc"); !p.Reachable || p.Method != "coap-ping" || p.RTT == nil || *p.RTT <= 0 {
		t.Errorf("ping CoAP device: %+v", p)
	}
	cc.Close()
	start := time.Now()
	if p := ping("pc"); p.Reachable || p.Method != "coap-ping" || !strings.Contains(p.Detail, "no answer") {
		t.Errorf("ping CoAP device that went away: %+v", p)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("gave up after %v, before its 3s timeout", el)
	}
	if p := ping("never"); p.Reachable || p.Method != "none" {
		t.Errorf("ping never-seen device: %+v", p)
	}
	var e apiError
	if code := jsonCall(t, h, "POST", "/api/v1/devices/ghost/ping", nil, &e); code != 404 {
		t.Errorf("ping unknown device: %d", code)
	}
	if code := jsonCall(t, h, "POST", "/api/v1/devices/pm/ping?timeout=forever", nil, &e); code != 400 {
		t.Errorf("bad timeout: %d", code)
	}
}

// TestDeleteDeviceForgetsEverything: deleting a device removes its status (announcing it
// offline), shadow and commands.
func TestDeleteDeviceForgetsEverything(t *testing.T) {
	h := hubtest.Start(t)
	tok := h.CreateDevice("gone", nil)
	nc := natsSubscribe(t, h, "iot.devices.*.status")
	mqttDevice(t, h, "gone", "gone", tok)
	eventually(t, 5*time.Second, func() bool { return getDevice(t, h, "gone").Status == "online" }, "not online")
	jsonCall(t, h, "PUT", "/api/v1/devices/gone/state/desired", map[string]any{"a": 1}, nil)
	cmd := sendCommand(t, h, "gone", "x", nil)
	if code := jsonCall(t, h, "DELETE", "/api/v1/devices/gone", nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	eventually(t, 5*time.Second, func() bool {
		evs := nc.statuses("gone")
		return len(evs) == 2 && evs[1]["reason"] == "deleted"
	}, "events %v; want online then offline (deleted)", nc.statuses("gone"))
	h.CreateDevice("gone", nil)
	if d := getDevice(t, h, "gone"); d.Status != "offline" || d.LastSeen != nil {
		t.Errorf("re-created device inherits liveness: %+v", d)
	}
	if s := getShadow(t, h, "gone"); s.Version != 0 || len(s.Desired) != 0 {
		t.Errorf("re-created device inherits a shadow: %+v", s)
	}
	var c commandJSON
	if code := jsonCall(t, h, "GET", "/api/v1/devices/gone/commands/"+cmd.ID, nil, &c); code != 404 {
		t.Errorf("re-created device inherits commands: %d %+v", code, c)
	}
}
