package rules_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestAnomalyRulesEndToEnd runs a hub with InfluxDB and eight MQTT devices sending a minute of
// noisy temperatures. One device spikes once, another runs 3 degrees hot for ten seconds. The
// spike rule alerts once, for the spike; the fleet-outlier rule alerts for the hot device's
// window and the spiking device's window (its average rose too), nothing else. The alerts reach
// the alerts topic and InfluxDB. Invalid anomaly queries answer 400.
func TestAnomalyRulesEndToEnd(t *testing.T) {
	t.Parallel()
	db := influxtest.Shared(t).NewDB(t)
	h := hubtest.Start(t, func(c *hub.Config) { c.InfluxURL, c.InfluxBucket = db.URL, db.Bucket })

	var e struct{ Error string }
	for _, c := range []struct{ sql, want string }{
		{"SELECT device, spike(temperature, 1.5, 20).score AS s FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s)",
			"line 1, col 16: spike: confidence must be between 0 and 1 (exclusive), like 0.99, got 1.5"},
		{"SELECT device, spike(temperature, 0.99).score AS s FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s)",
			"line 1, col 16: spike takes 3 arguments, got 2"},
		{"SELECT device, avg(temperature) AS t FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) OUTLIERS(device)",
			"OUTLIERS(device): column device is a string (device); OUTLIERS compares numbers"},
	} {
		if code := h.Do("POST", "/api/v1/rules", map[string]any{"name": "bad", "sql": c.sql}, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, c.want) {
			t.Errorf("%s: %d %q, want 400 %q", c.sql, code, e.Error, c.want)
		}
	}

	app := mqttClient(t, h.MQTTAddr(), "watcher", "app", hubtest.APIKey)
	var col collector
	if tok := app.Subscribe("rules/+/alerts", 1, col.handler); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	for _, spec := range []map[string]any{
		{"name": "temp-spike", "lateness": "5s", "idle_timeout": "0s",
			"sql": `SELECT device, spike(temperature, 0.9999, 20).score AS score FROM 'devices/+/telemetry'
			        GROUP BY device, TUMBLING(10s) HAVING spike(temperature, 0.9999, 20).anomaly`},
		{"name": "odd-one", "lateness": "5s", "idle_timeout": "0s",
			"sql": `SELECT device, avg(temperature) AS t FROM 'devices/+/telemetry'
			        GROUP BY device, TUMBLING(10s) OUTLIERS(t) HAVING outlier`},
	} {
		var created rules.Rule
		if code := h.Do("POST", "/api/v1/rules", spec, &created); code != http.StatusCreated || !created.Alert {
			t.Fatalf("create %s: %d %+v", spec["name"], code, created)
		}
		hubtest.Eventually(t, 10*time.Second, func() bool {
			var s rules.Stats
			return h.Do("GET", "/api/v1/rules/"+spec["name"].(string)+"/stats", nil, &s) == 200 && s.Running && !s.CatchingUp
		}, "rule %s not running", spec["name"])
	}
	var odd rules.Rule
	h.Do("GET", "/api/v1/rules/odd-one", nil, &odd)
	if !slices.Equal(odd.Columns, []string{"device", "t", "outlier", "outlier_score", "outlier_peers", "outlier_warning"}) {
		t.Errorf("odd-one columns %v", odd.Columns)
	}

	const n = 8
	ids := make([]string, n)
	clients := make([]func(at time.Time, temp float64), n)
	for i := range n {
		id := fmt.Sprintf("th-%d", i)
		ids[i] = id
		tok := h.CreateDevice(id, map[string]any{"type": "thermo"})
		c := mqttClient(t, h.MQTTAddr(), id, id, tok)
		clients[i] = func(at time.Time, temp float64) {
			p := fmt.Sprintf(`{"temperature":%g,"ts":"%s"}`, temp, at.Format(time.RFC3339Nano))
			if tok := c.Publish("devices/"+id+"/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %s: %v", id, tok.Error())
			}
		}
	}
	start := time.Now().Add(-time.Hour).Truncate(time.Minute)
	r := rand.New(rand.NewPCG(42, 42))
	for s := range 80 { // one reading per device and second; seconds 70–79 close [60s, 70s)
		for i := range n {
			temp := 20 + r.NormFloat64()*0.3
			switch {
			case i == 3 && s == 45:
				temp += 10 // a spike
			case i == 5 && s >= 20 && s < 30:
				temp += 3 // runs hot for one window
			}
			clients[i](start.Add(time.Duration(s)*time.Second), temp)
		}
	}

	hubtest.Eventually(t, 15*time.Second, func() bool {
		return len(col.results("rules/temp-spike/alerts")) >= 1 && len(col.results("rules/odd-one/alerts")) >= 2
	}, "alerts: %d of temp-spike, %d of odd-one", len(col.results("rules/temp-spike/alerts")), len(col.results("rules/odd-one/alerts")))
	hubtest.Eventually(t, 10*time.Second, func() bool {
		var a, b rules.Stats
		h.Do("GET", "/api/v1/rules/temp-spike/stats", nil, &a)
		h.Do("GET", "/api/v1/rules/odd-one/stats", nil, &b)
		return a.EventsIn == 80*n && b.EventsIn == 80*n && a.Results+a.HavingFailed == 7*n && b.Results+b.HavingFailed == 7*n
	}, "rules did not close 7 windows of %d devices", n)
	// The spike histories outlive the closed windows: one group per device, on /metrics too.
	want := fmt.Sprintf("tributary_rule_groups{rule=\"temp-spike\"} %d\n", n)
	hubtest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(h.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), want)
	}, "/metrics lacks %q", want)
	spikes, outs := col.results("rules/temp-spike/alerts"), col.results("rules/odd-one/alerts")
	if len(spikes) != 1 || spikes[0].Group["device"] != "th-3" || !spikes[0].WindowStart.Equal(start.Add(40*time.Second)) || spikes[0].Values["score"].(float64) < 10 {
		t.Errorf("spike alerts: %+v, want one of th-3 at +40s", spikes)
	}
	// th-5 runs hot in [20s, 30s); th-3's spike lifts its average in [40s, 50s) too.
	var found []string
	for _, o := range outs {
		if o.Values["outlier"] != true || o.Values["outlier_score"].(float64) < 10 || o.Values["outlier_peers"] != float64(n) {
			t.Errorf("outlier alert %+v", o)
		}
		found = append(found, fmt.Sprintf("%s@%s", o.Group["device"], o.WindowStart.Sub(start)))
	}
	if !slices.Equal(found, []string{"th-5@20s", "th-3@40s"}) {
		t.Errorf("outlier alerts %v, want th-5@20s, th-3@40s", found)
	}

	// A backtest of each rule over the stored readings finds the same alerts (plus, for the
	// window [70s, 80s) that the live rules have not closed yet, whatever its final flush gives).
	for name, live := range map[string][]rules.Result{"temp-spike": spikes, "odd-one": outs} {
		var rep btReport
		body := map[string]any{"rule": name, "from": start.Format(time.RFC3339)} // to: now, so the late-stamped readings are found
		if code := h.Do("POST", "/api/v1/backtests", body, &rep); code != 200 {
			t.Fatalf("backtest %s: %d %s", name, code, rep.Error)
		}
		var closed []rules.Result
		for _, r := range rep.Run.Results {
			if r.WindowEnd.Before(start.Add(71 * time.Second)) {
				closed = append(closed, r)
			}
		}
		if got, want := canon(t, closed), canon(t, live); !slices.Equal(got, want) {
			t.Errorf("backtest of %s differs from live:\n got %s\nwant %s", name, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	}

	// InfluxDB: each alert is a point of rule_results with its values.
	var rows [][]any
	var cols []string
	hubtest.Eventually(t, 30*time.Second, func() bool {
		cols, rows = influxSelect(t, db, `SELECT * FROM rule_results`)
		return len(rows) == 3
	}, "influxdb: want 3 rows of rule_results")
	ci := func(name string) int { return slices.Index(cols, name) }
	got := map[string]bool{}
	for _, row := range rows {
		switch row[ci("rule")] {
		case "temp-spike":
			got["spike"] = row[ci("device")] == "th-3" && row[ci("score")].(float64) >= 10
		case "odd-one":
			got[row[ci("device")].(string)] = row[ci("outlier")] == true && row[ci("outlier_score")].(float64) >= 10 && row[ci("outlier_peers")] == float64(n)
		}
	}
	if !got["spike"] || !got["th-5"] || !got["th-3"] {
		t.Errorf("influx rows %v (columns %v)", rows, cols)
	}
}
