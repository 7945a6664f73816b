package rules_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/rules"
)

const btQuery = `SELECT device, avg(temperature) AS avg_t, max(temperature) AS max_t, count(*) AS n
	FROM 'devices/+/telemetry' WHERE type = 'thermo' GROUP BY device, TUMBLING(10s)`

// btReport is the answer of POST /api/v1/backtests as a client reads it.
type btReport struct {
	Messages uint64
	Run      rules.BacktestRun
	Compare  *rules.BacktestRun
	Diff     *rules.BacktestDiff
	Error    string
}

// canon is results as comparable JSON, sorted by ID.
func canon(t *testing.T, rs []rules.Result) []string {
	t.Helper()
	out := make([]string, len(rs))
	for i, r := range rs {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	slices.Sort(out)
	return out
}

// TestBacktestMatchesLive runs a live rule over telemetry a real MQTT device sends, waits until
// every window is closed (the last by idle closing) and stored, then backtests the same rule over
// the same time range and requires the same results: IDs, groups, windows and values. It then
// compares two versions of the rule on the same data.
func TestBacktestMatchesLive(t *testing.T) {
	h := hubtest.Start(t)
	tok1 := h.CreateDevice("bt-1", map[string]any{"type": "thermo"})
	tok2 := h.CreateDevice("bt-2", map[string]any{"type": "thermo"})
	h.CreateDevice("bt-other", map[string]any{"type": "meter"})

	spec := map[string]any{"name": "avg", "sql": btQuery, "lateness": "0s", "idle_timeout": "1s"}
	if code := h.Do("POST", "/api/v1/rules", spec, nil); code != http.StatusCreated {
		t.Fatalf("create rule: %d", code)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		var s rules.Stats
		return h.Do("GET", "/api/v1/rules/avg/stats", nil, &s) == 200 && s.Running && !s.CatchingUp
	}, "rule not running")

	start := time.Now().Add(-time.Hour).Truncate(time.Minute)
	temps := map[string][]float64{
		"bt-1": {10, 20, 20, 30, 30, 40}, // window averages 15, 25, 35
		"bt-2": {12, 14, 26, 28, 36, 38}, // 13, 27, 37
	}
	c1 := mqttClient(t, h.MQTTAddr(), "bt-1", "bt-1", tok1)
	c2 := mqttClient(t, h.MQTTAddr(), "bt-2", "bt-2", tok2)
	for i := range 6 {
		at := start.Add(time.Duration(i/2*10+i%2*3) * time.Second)
		for dev, c := range map[string]paho.Client{"bt-1": c1, "bt-2": c2} {
			p := fmt.Sprintf(`{"temperature":%g,"ts":"%s"}`, temps[dev][i], at.Format(time.RFC3339Nano))
			if tok := c.Publish("devices/"+dev+"/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
	}
	// Messages the rule does not count: another topic, and a device of another type.
	if tok := c1.Publish("devices/bt-1/events/door", 1, false, fmt.Sprintf(`{"open":true,"ts":"%s"}`, start.Format(time.RFC3339Nano))); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	var live rules.ResultsPage
	hubtest.Eventually(t, 20*time.Second, func() bool {
		return h.Do("GET", "/api/v1/rules/avg/results", nil, &live) == 200 && len(live.Results) == 6
	}, "live results: %d, want 6", len(live.Results))
	liveRes := make([]rules.Result, len(live.Results))
	for i, r := range live.Results {
		liveRes[i] = r.Result
	}

	// The readings are stamped an hour before they were received: "to" is left to default to
	// now, as a range [start, start+1m) would need a max_skew of more than an hour.
	sel := map[string]any{"from": start.Add(-time.Minute).Format(time.RFC3339)}
	body := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range sel {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}

	var rep btReport
	if code := h.Do("POST", "/api/v1/backtests", body("rule", "avg"), &rep); code != 200 {
		t.Fatalf("backtest: %d %s", code, rep.Error)
	}
	if got, want := canon(t, rep.Run.Results), canon(t, liveRes); !slices.Equal(got, want) {
		t.Errorf("backtest results differ from live:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	if c := rep.Run.Counts; c.EventsIn != 12 || c.Accepted != 12 || c.Results != 6 || c.Late != 0 || rep.Run.Messages != 12 || rep.Messages != 12 {
		t.Errorf("counts %+v, messages %d/%d; want 12 events, 6 results, 12 messages", c, rep.Run.Messages, rep.Messages)
	}
	var stats rules.Stats
	if h.Do("GET", "/api/v1/rules/avg/stats", nil, &stats); stats.Results != 6 || stats.EventsIn != 12 {
		t.Errorf("live stats after backtests: %d results, %d events; want 6, 12 (untouched)", stats.Results, stats.EventsIn)
	}

	// The same query given inline, over the device's messages only.
	rep = btReport{}
	if code := h.Do("POST", "/api/v1/backtests", body("sql", btQuery, "name", "avg", "lateness", "0s", "idle_timeout", "1s", "devices", []string{"bt-1", "bt-2"}), &rep); code != 200 {
		t.Fatalf("inline backtest: %d %s", code, rep.Error)
	}
	if got, want := canon(t, rep.Run.Results), canon(t, liveRes); !slices.Equal(got, want) {
		t.Errorf("inline backtest results differ from live:\n got %s\nwant %s", got, want)
	}
	if rep.Messages < 13 || rep.Run.Messages != 12 { // the devices' topics also hold their status messages
		t.Errorf("inline backtest read %d messages, %d on the rule's source; want at least 13, and 12", rep.Messages, rep.Run.Messages)
	}

	// A scenario recorded from the same range gives the same results too.
	scn := body("name", "bt-scn")
	if code := h.Do("POST", "/api/v1/scenarios", scn, nil); code != http.StatusCreated {
		t.Fatalf("create scenario: %d", code)
	}
	rep = btReport{}
	if code := h.Do("POST", "/api/v1/backtests", map[string]any{"rule": "avg", "scenario": "bt-scn"}, &rep); code != 200 {
		t.Fatalf("scenario backtest: %d %s", code, rep.Error)
	}
	if got, want := canon(t, rep.Run.Results), canon(t, liveRes); !slices.Equal(got, want) {
		t.Errorf("scenario backtest results differ from live:\n got %s\nwant %s", got, want)
	}

	// Two versions: HAVING avg_t > 15 against HAVING avg_t > 25.
	having := func(th int) string { return btQuery + fmt.Sprintf(" HAVING avg_t > %d", th) }
	rep = btReport{}
	if code := h.Do("POST", "/api/v1/backtests", body("rule", "avg", "sql", having(15), "compare", map[string]any{"rule": "avg", "sql": having(25)}), &rep); code != 200 {
		t.Fatalf("compare: %d %s", code, rep.Error)
	}
	if rep.Compare == nil || rep.Diff == nil {
		t.Fatalf("compare: no comparison in %+v", rep)
	}
	key := func(rs []rules.Result) []string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%s@%s", r.Group["device"], r.WindowStart.Sub(start)))
		}
		slices.Sort(out)
		return out
	}
	if got := key(rep.Run.Results); !slices.Equal(got, []string{"bt-1@10s", "bt-1@20s", "bt-2@10s", "bt-2@20s"}) {
		t.Errorf("A (> 15): %v", got)
	}
	if got := key(rep.Compare.Results); !slices.Equal(got, []string{"bt-1@20s", "bt-2@10s", "bt-2@20s"}) {
		t.Errorf("B (> 25): %v", got)
	}
	if d := rep.Diff; !slices.Equal(key(d.OnlyA), []string{"bt-1@10s"}) || len(d.OnlyB) != 0 || len(d.Changed) != 0 || d.Same != 3 {
		t.Errorf("diff: only A %v, only B %v, changed %d, same %d; want [bt-1@10s], [], 0, 3", key(d.OnlyA), key(d.OnlyB), len(d.Changed), d.Same)
	}
	if rep.Compare.Counts.HavingFailed != 3 || rep.Run.Counts.HavingFailed != 2 {
		t.Errorf("having_failed: A %d, B %d; want 2, 3", rep.Run.Counts.HavingFailed, rep.Compare.Counts.HavingFailed)
	}

	// Changed values: max becomes min.
	rep = btReport{}
	if code := h.Do("POST", "/api/v1/backtests", body("rule", "avg", "compare", map[string]any{"rule": "avg", "sql": strings.Replace(btQuery, "max(", "min(", 1)}), &rep); code != 200 {
		t.Fatalf("compare values: %d %s", code, rep.Error)
	}
	if d := rep.Diff; len(d.Changed) != 6 || d.Same != 0 || len(d.OnlyA)+len(d.OnlyB) != 0 {
		t.Fatalf("diff: %+v; want 6 changed", d)
	}
	for _, c := range rep.Diff.Changed {
		if c.A["max_t"].(float64) <= c.B["max_t"].(float64) || c.A["avg_t"] != c.B["avg_t"] {
			t.Errorf("changed %s@%s: a %v b %v", c.GroupKey, c.WindowStart, c.A, c.B)
		}
	}

	// Too large a selection is refused before anything is read.
	restore := rules.SetBacktestLimit(5)
	var e struct{ Error string }
	if code := h.Do("POST", "/api/v1/backtests", body("rule", "avg"), &e); code != 400 || !strings.HasPrefix(e.Error, "selection: up to ") {
		t.Errorf("too large: %d %q", code, e.Error)
	}
	restore()

	// Bad input names the field.
	valid := "SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m)"
	for _, tc := range []struct {
		name string
		body any
		code int
		want string
	}{
		{"no query", body(), 400, "sql: missing"},
		{"bad sql", body("sql", "SELECT avg(t) FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m"), 400, "sql: line 1, col 62: "},
		{"bad compare sql", body("sql", valid, "compare", map[string]any{"sql": "SELECT"}), 400, "compare.sql: line 1"},
		{"bad lateness", body("sql", valid, "lateness", "-1s"), 400, "lateness: "},
		{"bad duration", body("sql", valid, "idle_timeout", "soon"), 400, "want a duration"},
		{"unknown rule", body("rule", "nope"), 404, `rule: no rule named "nope"`},
		{"unknown compare rule", body("rule", "avg", "compare", map[string]any{"rule": "nope"}), 404, "compare.rule: "},
		{"unknown scenario", map[string]any{"sql": valid, "scenario": "nope"}, 404, "nope"},
		{"no from", map[string]any{"sql": valid}, 400, "from: required"},
		{"bad from", map[string]any{"sql": valid, "from": "yesterday"}, 400, "from: "},
		{"unknown device", body("sql", valid, "devices", []string{"ghost"}), 400, "devices[0]: "},
		{"empty selection", body("sql", valid, "topics", []string{"devices/nobody/telemetry"}), 400, "no message"},
		{"unknown field", body("sql", valid, "latenes", "1s"), 400, "latenes"},
	} {
		var e struct{ Error string }
		if code := h.Do("POST", "/api/v1/backtests", tc.body, &e); code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s: %d %q; want %d containing %q", tc.name, code, e.Error, tc.code, tc.want)
		}
	}
}
