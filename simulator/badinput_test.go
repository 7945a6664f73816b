package simulator_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/simulator/scenario"
	"github.com/tributary-iot/tributary/simulator/simtest"
)

// TestBadInput sends malformed replays, scenarios, imports and fleet files: each gets a clear
// error naming the field or line, and none leaves a job, scenario, stored message or device
// behind.
func TestBadInput(t *testing.T) {
	h := hubtest.Start(t)
	h.CreateDevice("d1", nil)
	_, js := simtest.Connect(t, h)
	rec := simtest.Record(t, js, []string{"d1"}, 20, time.Second, 1)
	from := rec.Base.Add(-time.Second).Format(time.RFC3339Nano)
	longAgo := time.Now().Add(-48 * time.Hour)

	goodLine := `{"topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z","payload":{"t":1}}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	fmt.Fprintf(zw, "%s\n%s\n%s\n", goodLine, goodLine, goodLine)
	zw.Close()
	truncated := gz.Bytes()[:gz.Len()-10]

	fleetOK := "name: f\nprofiles:\n  - name: p\n    devices: 2\n    protocol: mqtt\n    rate: 1/s\n    fields:\n      t: {model: constant, value: 1}\n"

	for _, tc := range []struct {
		name        string
		method, url string
		body        any    // JSON-encoded unless string or []byte
		contentType string // default application/json
		status      int
		want        string
	}{
		{"replay: from not a time", "POST", "/api/v1/replays", map[string]any{"from": "yesterday"}, "", 400, `from: "yesterday" is neither an RFC 3339 time nor a negative duration`},
		{"replay: from missing", "POST", "/api/v1/replays", map[string]any{"speed": 1}, "", 400, "from: required"},
		{"replay: from in the future", "POST", "/api/v1/replays", map[string]any{"from": time.Now().Add(time.Hour).Format(time.RFC3339)}, "", 400, "is in the future"},
		{"replay: to before from", "POST", "/api/v1/replays", map[string]any{"from": from, "to": rec.Base.Add(-time.Hour).Format(time.RFC3339)}, "", 400, "to: "},
		{"replay: speed zero", "POST", "/api/v1/replays", map[string]any{"from": from, "speed": 0}, "", 400, "speed: 0 out of range"},
		{"replay: speed too high", "POST", "/api/v1/replays", map[string]any{"from": from, "speed": 1e9}, "", 400, "speed: 1e+09 out of range"},
		{"replay: speed word", "POST", "/api/v1/replays", map[string]any{"from": from, "speed": "fast"}, "", 400, `speed: got "fast"`},
		{"replay: target", "POST", "/api/v1/replays", map[string]any{"from": from, "target": "production"}, "", 400, `target: got "production"`},
		{"replay: unknown device", "POST", "/api/v1/replays", map[string]any{"from": from, "devices": []string{"d1", "ghost"}}, "", 400, `devices[1]: unknown device "ghost"`},
		{"replay: invalid device", "POST", "/api/v1/replays", map[string]any{"from": from, "devices": []string{"no way"}}, "", 400, `devices[0]: "no way" is not a valid device ID`},
		{"replay: bad filter", "POST", "/api/v1/replays", map[string]any{"from": from, "topics": []string{"devices/#/x"}}, "", 400, "topics[0]:"},
		{"replay: bad skew", "POST", "/api/v1/replays", map[string]any{"from": from, "max_skew": "48h"}, "", 400, "max_skew:"},
		{"replay: empty selection", "POST", "/api/v1/replays", map[string]any{"from": longAgo.Format(time.RFC3339), "to": longAgo.Add(time.Hour).Format(time.RFC3339)}, "", 422, "empty selection: no message has an event time from"},
		{"replay: empty topic", "POST", "/api/v1/replays", map[string]any{"from": from, "topics": []string{"devices/nobody/telemetry"}}, "", 422, "empty selection"},
		{"replay: unknown scenario", "POST", "/api/v1/replays", map[string]any{"scenario": "missing"}, "", 404, "scenario missing"},
		{"replay: scenario and range", "POST", "/api/v1/replays", map[string]any{"scenario": "x", "from": from}, "", 400, "scenario: cannot be combined"},
		{"replay: unknown field", "POST", "/api/v1/replays", map[string]any{"from": from, "sped": 2}, "", 400, `unknown field "sped"`},
		{"replay: not JSON", "POST", "/api/v1/replays", "{from:", "", 400, "not valid JSON"},
		{"replay: unknown job", "POST", "/api/v1/replays/rnothere/pause", nil, "", 404, "replay rnothere"},

		{"scenario: bad name", "POST", "/api/v1/scenarios", map[string]any{"name": "my scenario", "from": from}, "", 400, `name: "my scenario" is not a valid scenario name`},
		{"scenario: empty", "POST", "/api/v1/scenarios", map[string]any{"name": "s", "from": longAgo.Format(time.RFC3339), "to": longAgo.Add(time.Minute).Format(time.RFC3339)}, "", 422, "empty selection"},
		{"scenario: unknown replay", "POST", "/api/v1/scenarios", map[string]any{"name": "s", "replay": "rnope"}, "", 404, "replay: replay rnope: not found"},
		{"import: bad line", "POST", "/api/v1/scenarios/s/import", goodLine + "\n" + goodLine + "\n" + `{"topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z","colour":"red"}` + "\n", "application/x-ndjson", 400, `line 3: unknown field "colour"`},
		{"import: missing time", "POST", "/api/v1/scenarios/s/import", goodLine + "\n\n" + `{"topic":"devices/d1/telemetry"}`, "application/x-ndjson", 400, "line 3: event_time: required"},
		{"import: corrupt gzip", "POST", "/api/v1/scenarios/s/import", truncated, "application/gzip", 400, "gzip"},
		{"import: empty", "POST", "/api/v1/scenarios/s/import", "", "application/x-ndjson", 400, "the file holds no messages"},
		{"import: bad name", "POST", "/api/v1/scenarios/-s/import", goodLine, "application/x-ndjson", 400, "name:"},
		{"export: unknown", "GET", "/api/v1/scenarios/nothing/export", nil, "", 404, "scenario nothing"},

		{"fleet: unknown field", "POST", "/api/v1/simulations", fleetOK + "    colour: red\n", "application/yaml", 400, "line 9: profiles[0].colour: unknown field colour"},
		{"fleet: bad rate", "POST", "/api/v1/simulations", strings.Replace(fleetOK, "rate: 1/s", "rate: often", 1), "application/yaml", 400, `line 6: profiles[0].rate: "often" is not a rate`},
		{"fleet: bad json", "POST", "/api/v1/simulations", "{\n  \"name\": \"f\",\n  \"profiles\": [}", "application/json", 400, "line 3, column 16: invalid JSON"},
		{"fleet: json field", "POST", "/api/v1/simulations", "{\n \"name\": \"f\",\n \"profile\": []\n}", "application/json", 400, "line 3: profile: unknown field profile"},
		{"fleet: qos", "POST", "/api/v1/simulations", fleetOK + "    qos: 2\n", "application/yaml", 400, "line 9: profiles[0].qos: got 2, want 0 or 1"},
		{"fleet: taken device ID", "POST", "/api/v1/simulations", strings.Replace(fleetOK, "  - name: p\n", "  - name: p\n    id_prefix: d\n", 1) + "", "application/yaml", 201, ""},
		{"fleet: media type", "POST", "/api/v1/simulations", fleetOK, "text/html", 415, "application/yaml or application/json"},
		{"fleet: unknown simulation", "GET", "/api/v1/simulations/snope/truth", nil, "", 404, "simulation snope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			switch b := tc.body.(type) {
			case nil:
			case string:
				body = []byte(b)
			case []byte:
				body = b
			default:
				body, _ = json.Marshal(b)
			}
			ct := tc.contentType
			if ct == "" && body != nil {
				ct = "application/json"
			}
			resp, out := simtest.Raw(t, h, tc.method, tc.url, body, map[string]string{"Content-Type": ct})
			if tc.status == http.StatusCreated {
				// Not bad input: the fleet's IDs d-0001... are free. Stop it again.
				var sim struct{ ID string }
				json.Unmarshal(out, &sim)
				if resp.StatusCode != tc.status {
					t.Fatalf("got %d %s, want %d", resp.StatusCode, out, tc.status)
				}
				if code := h.Do("DELETE", "/api/v1/simulations/"+sim.ID, nil, nil); code != http.StatusNoContent {
					t.Fatalf("delete: %d", code)
				}
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(out, &e); err != nil || resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("got %d %s, want %d with an error containing %q", resp.StatusCode, out, tc.status, tc.want)
			}
			t.Logf("%d %s", resp.StatusCode, e.Error)
		})
	}

	// A device that is not the fleet's keeps its ID: the fleet is refused before anything is
	// created.
	h.CreateDevice("x-0001", nil)
	resp, out := simtest.Raw(t, h, "POST", "/api/v1/simulations", []byte(strings.Replace(fleetOK, "  - name: p\n", "  - name: p\n    id_prefix: x\n", 1)), map[string]string{"Content-Type": "application/yaml"})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(out), "device x-0001 exists and is not a virtual device of fleet f") {
		t.Fatalf("fleet over a real device: got %d %s, want 409 naming the device", resp.StatusCode, out)
	}

	// Nothing was left behind.
	var replays struct{ Replays []any }
	var scenarios struct{ Scenarios []any }
	var sims struct{ Simulations []any }
	var devs struct{ Devices []struct{ ID string } }
	h.Do("GET", "/api/v1/replays", nil, &replays)
	h.Do("GET", "/api/v1/scenarios", nil, &scenarios)
	h.Do("GET", "/api/v1/simulations", nil, &sims)
	h.Do("GET", "/api/v1/devices?limit=1000", nil, &devs)
	if len(replays.Replays) != 0 || len(scenarios.Scenarios) != 0 || len(sims.Simulations) != 0 {
		t.Fatalf("left behind: %d replays, %d scenarios, %d simulations", len(replays.Replays), len(scenarios.Scenarios), len(sims.Simulations))
	}
	if n := simtest.StreamCount(t, js, scenario.Stream, "scenario.>"); n != 0 {
		t.Fatalf("the scenario stream holds %d messages after failed imports", n)
	}
	if len(devs.Devices) != 2 {
		t.Fatalf("devices %v, want only d1 and x-0001", devs.Devices)
	}
}
