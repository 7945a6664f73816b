package sql

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

func TestCompileIssueExample(t *testing.T) {
	r, err := Compile("hot_rooms", issueExample)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "hot_rooms" || r.Source != (Source{Topic: "devices/+/telemetry"}) {
		t.Fatalf("rule: got %q %+v", r.Name, r.Source)
	}
	p := r.Plan
	if p.Rule != "hot_rooms" || p.Window != (window.WindowSpec{Kind: window.Tumbling, Size: time.Minute}) {
		t.Fatalf("plan: got %q %+v", p.Rule, p.Window)
	}
	var keys, cols, aggs []string
	for _, k := range p.GroupBy {
		keys = append(keys, k.Name)
	}
	for _, c := range p.Columns {
		cols = append(cols, c.Name)
	}
	for _, a := range p.Aggregates {
		aggs = append(aggs, a.Name)
	}
	eq(t, "group keys", keys, []string{"device"})
	eq(t, "columns", cols, []string{"device", "avg_t", "max_t", "n"})
	eq(t, "aggregates", aggs, []string{"avg(temperature)", "max(temperature)", "count(*)"})
	if p.Where == nil || p.Having == nil || len(p.Fingerprint) != 32 {
		t.Fatalf("plan: where %v having %v fingerprint %q", p.Where != nil, p.Having != nil, p.Fingerprint)
	}
	// The fingerprint is of the meaning, not the spelling.
	r2, err := Compile("hot_rooms", "select device, AVG(temperature) as avg_t, max(temperature) max_t, count(*) n from 'devices/+/telemetry' "+
		"where (type = 'thermostat') and temperature > -50 group by device, tumbling(60s) having avg_t > 28.0")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "fingerprint", r2.Plan.Fingerprint, p.Fingerprint)
}

func TestCompileShared(t *testing.T) {
	// The same aggregate twice, and one only in HAVING: computed once each.
	r, err := Compile("r", "SELECT avg(t) AS a, avg(t) * 2 AS b FROM 'devices/#' GROUP BY TUMBLING(1m) HAVING count(*) > 1 AND avg(t) > 0")
	if err != nil {
		t.Fatal(err)
	}
	var aggs []string
	for _, a := range r.Plan.Aggregates {
		aggs = append(aggs, a.Name)
	}
	eq(t, "aggregates", aggs, []string{"avg(t)", "count(*)"})
}

func TestCompileSource(t *testing.T) {
	r, err := Compile("daily", "SELECT max(avg_t) AS m FROM 'rules/hot_rooms' GROUP BY TUMBLING(1d)")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "source", r.Source, Source{Topic: "rules/hot_rooms", Rule: "hot_rooms"})
	r, err = Compile("all", "SELECT count(*) AS n FROM 'rules/+' GROUP BY TUMBLING(1d)")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "source", r.Source, Source{Topic: "rules/+"})
}

func TestCompileErrors(t *testing.T) {
	const from = " FROM 'devices/+/telemetry' "
	cases := []struct{ in, want string }{
		{"SELECT avgg(t) AS a" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: unknown function avgg; did you mean avg?"},
		{"SELECT frobnicate(t) AS a" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: unknown function frobnicate"},
		{"SELECT count(*) AS n" + from + "WHERE avg(t) > 1 GROUP BY TUMBLING(1m)",
			"line 1, col 55: aggregate function avg is not allowed in WHERE: filter results with HAVING"},
		{"SELECT avg(max(t)) AS a" + from + "GROUP BY TUMBLING(1m)",
			"line 1, col 12: aggregate function max cannot be used inside another aggregate (in the argument of avg)"},
		{"SELECT device, avg(t) AS a" + from + "GROUP BY TUMBLING(1m)",
			"line 1, col 8: column device must be in GROUP BY or inside an aggregate function, like avg(device)"},
		{"SELECT device, temperature" + from + "GROUP BY device, TUMBLING(1m)",
			"line 1, col 16: column temperature must be in GROUP BY or inside an aggregate function, like avg(temperature)"},
		{"SELECT count(*) AS n" + from, "line 1, col 49: missing window: GROUP BY needs one of TUMBLING(size), HOPPING(size, hop), SLIDING(size), SESSION(gap) or COUNTWINDOW(n)"},
		{"SELECT count(*) AS n" + from + "GROUP BY device", "line 1, col 49: missing window: GROUP BY needs one of TUMBLING(size), HOPPING(size, hop), SLIDING(size), SESSION(gap) or COUNTWINDOW(n)"},
		{"SELECT device, avg(t) AS avg_t, count(*) AS n" + from + "GROUP BY device, TUMBLING(1m) HAVING avg_tt > 28",
			"line 1, col 111: unknown column avg_tt in HAVING: not a SELECT column or GROUP BY key (have avg_t, device, n)"},
		{"SELECT avg(t), avg(t)" + from + "GROUP BY TUMBLING(1m)", `line 1, col 16: duplicate column name "avg(t)" in SELECT; rename one with AS`},
		{"SELECT sum(*) AS s" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: sum(*) is not allowed: use sum(x)"},
		{"SELECT count() AS s" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: count takes 1 argument(s), got 0: use count(x) or count(*)"},
		{"SELECT percentile(t) AS p" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: percentile takes 2 argument(s), got 1: use percentile(x, p)"},
		{"SELECT percentile(t, x) AS p" + from + "GROUP BY TUMBLING(1m)", "line 1, col 22: percentile: parameter x must be a constant number"},
		{"SELECT percentile(t, 'x') AS p" + from + "GROUP BY TUMBLING(1m)", "line 1, col 22: percentile: parameter 'x' must be a constant number"},
		{"SELECT percentile(t, 101) AS p" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: percentile: p must be between 0 and 100, got 101"},
		{"SELECT TUMBLING(t) AS p" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: window function TUMBLING is only allowed in GROUP BY"},
		{"SELECT count(*) AS n" + from + "WHERE window_end() > 1 GROUP BY TUMBLING(1m)", "line 1, col 55: window_end() is only allowed in SELECT and HAVING"},
		{"SELECT window_start(1) AS w" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: window_start() takes no arguments"},
		{"SELECT abs(1, 2) AS a" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: abs takes 1 argument(s)"},
		{"SELECT round() AS a" + from + "GROUP BY TUMBLING(1m)", "line 1, col 8: round takes 1 or 2 argument(s)"},
		{"SELECT count(*) AS n" + from + "GROUP BY tags, TUMBLING(1m)", "line 1, col 58: tags needs a key, like tags.site"},
		{"SELECT count(*) AS n" + from + "GROUP BY payload, TUMBLING(1m)", "line 1, col 58: payload needs a field, like payload.temperature"},
		{"SELECT count(*) AS n" + from + "GROUP BY device, Device, TUMBLING(1m)", "line 1, col 66: group key device appears twice"},
		{"SELECT count(*) AS n FROM 'foo/bar' GROUP BY TUMBLING(1m)",
			"line 1, col 27: FROM 'foo/bar': a rule reads device messages ('devices/+/telemetry') or another rule's results ('rules/<name>')"},
		{"SELECT count(*) AS n FROM 'devices/a+' GROUP BY TUMBLING(1m)",
			`line 1, col 27: in topic filter "devices/a+", wildcards '+' and '#' must fill a whole level`},
		{"SELECT count(*) AS n FROM 'devices/#/x' GROUP BY TUMBLING(1m)", `line 1, col 27: in topic filter "devices/#/x", '#' must be the last level`},
		{"SELECT count(*) AS n FROM '' GROUP BY TUMBLING(1m)", "line 1, col 27: empty topic filter in FROM"},
		{"SELECT count(*) AS n FROM 'rules/r' GROUP BY TUMBLING(1m)", "line 1, col 27: rule r cannot read its own results"},
	}
	for _, c := range cases {
		_, err := Compile("r", c.in)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Compile(%q): got %v, want a *ParseError", c.in, err)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("Compile(%q):\ngot  %s\nwant %s", c.in, err, c.want)
		}
	}
}

func TestCompileRuleName(t *testing.T) {
	for _, name := range []string{"", "bad name", "-x", "a/b", string(make([]byte, 65))} {
		if _, err := Compile(name, issueExample); !errors.Is(err, ErrInvalidRuleName) {
			t.Errorf("Compile(%q): got %v, want ErrInvalidRuleName", name, err)
		}
	}
	for _, name := range []string{"a", "hot_rooms", "Rule-7"} {
		if _, err := Compile(name, issueExample); err != nil {
			t.Errorf("Compile(%q): %v", name, err)
		}
	}
}

// TestWhere checks the semantics of expressions against one event.
func TestWhere(t *testing.T) {
	ev := &window.Event{
		Time: time.Unix(1, 0), Device: "th-1", Type: "thermostat",
		Tags: map[string]string{"site": "berlin"},
		Fields: map[string]any{
			"temperature": 21.5, "env.rh": 40.0, "nested": map[string]any{"a": 1.0},
			"on": true, "fw": "1.2", "i": 3, "n": json.Number("7"), "device": "payload-device",
		},
	}
	cases := []struct {
		cond string
		want bool
	}{
		{"temperature > 20", true},
		{"temperature > 30", false},
		{"missing > 1", false},
		{"NOT missing > 1", false},
		{"NOT temperature > 30", true},
		{"missing > 1 OR type = 'thermostat'", true},
		{"missing > 1 AND type = 'thermostat'", false},
		{"missing IS NULL", true},
		{"temperature IS NOT NULL", true},
		{"env.rh = 40", true},
		{"nested.a = 1", true},
		{"nested.b IS NULL", true},
		{"temperature.x IS NULL", true},
		{"payload.temperature = 21.5", true},
		{"payload.device = 'payload-device'", true},
		{"device = 'th-1'", true},
		{"Device = 'th-1' AND TYPE = 'thermostat'", true},
		{"tags.site = 'berlin'", true},
		{"tags.missing IS NULL", true},
		{"device IN ('th-1', 'th-2')", true},
		{"device IN ('th-2', NULL)", false},
		{"device NOT IN ('th-2', NULL)", false},
		{"device NOT IN ('th-2')", true},
		{"fw = 1.2", false},
		{"NOT fw = 1.2", false},
		{"fw = '1.2'", true},
		{"on", true},
		{"on = TRUE AND NOT on = FALSE", true},
		{"temperature", false},
		{"i + n = 10", true},
		{"temperature / 0 IS NULL", true},
		{"7 % 4 = 3 AND 7 % 0 IS NULL", true},
		{"-temperature < 0 AND +temperature > 0", true},
		{"abs(-temperature) = 21.5", true},
		{"round(temperature) = 22 AND round(-2.5) = -3 AND round(21.456, 2) = 21.46", true},
		{"floor(temperature) = 21 AND ceil(temperature) = 22 AND sqrt(16) = 4", true},
		{"abs(fw) IS NULL", true},
		{"'b' > 'a' AND 'B' < 'a'", true},
		{"TRUE AND NULL", false},
		{"NOT (TRUE AND NULL)", false},
		{"FALSE OR NULL", false},
		{"TRUE OR NULL", true},
		{"FALSE AND NULL IS NULL", false},
		{"NULL IS NULL", true},
		{"NULL = NULL", false},
		{"temperature = temperature", true},
		{"2 * 3 + 1 = 7 AND 2 * (3 + 1) = 8 AND 1 - 2 - 3 = -4", true},
		{"FALSE < TRUE", true},
	}
	for _, c := range cases {
		r, err := Compile("r", "SELECT count(*) AS n FROM 'devices/#' WHERE "+c.cond+" GROUP BY TUMBLING(1m)")
		if err != nil {
			t.Errorf("%s: %v", c.cond, err)
			continue
		}
		if got := r.Plan.Where(ev); got != c.want {
			t.Errorf("WHERE %s: got %v, want %v", c.cond, got, c.want)
		}
	}
}

// TestSelectHaving runs compiled rules on the engine.
func TestSelectHaving(t *testing.T) {
	r, err := Compile("r", `SELECT device, round(avg(v), 1) AS a, max(v) - min(v) AS spread, count(*) AS n,
		percentile(v, 50) AS median, stddev(v) AS sd, first(v) AS f, last(v) AS l, window_end() AS we
		FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m) HAVING count(*) >= 2 AND spread > 0`)
	if err != nil {
		t.Fatal(err)
	}
	e, err := window.New(r.Plan, window.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, x := range []struct {
		dev string
		sec int
		v   float64
	}{{"a", 1, 10}, {"a", 3, 13}, {"a", 2, 11}, {"b", 1, 5}, {"c", 1, 5}, {"c", 2, 5}} {
		e.Process(window.Event{Time: t0.Add(time.Duration(x.sec) * time.Second), Device: x.dev, Fields: map[string]any{"v": x.v}, Seq: uint64(i)})
	}
	res := e.Flush()
	if len(res) != 1 {
		t.Fatalf("results: got %d, want 1 (b has one event, c no spread)", len(res))
	}
	want := map[string]any{
		"device": "a", "a": 11.3, "spread": 3.0, "n": 3.0, "median": 11.0,
		"sd": 1.5275252316519468, "f": 10.0, "l": 13.0, "we": t0.Add(time.Minute),
	}
	eq(t, "values", res[0].Values, want)
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}
