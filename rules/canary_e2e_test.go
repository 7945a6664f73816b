package rules_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestCanaryEndToEnd runs canaries in a real hub with InfluxDB: 16 MQTT devices (10 on
// firmware 2.0, 6 on 2.1 whose latency is 30% higher) send telemetry with their own
// timestamps; a canary of 2.1 against 2.0 fails with latency classed high and alerts (alerts
// subject, MQTT output, webhook); half of the 2.0 devices against the other half pass; a canary
// of two devices carries the too-small warning. Results are read over the API, from the results
// subject and from InfluxDB.
func TestCanaryEndToEnd(t *testing.T) {
	t.Parallel()
	db := influxtest.Shared(t).NewDB(t)
	h := hubtest.Start(t, func(c *hub.Config) { c.InfluxURL, c.InfluxBucket = db.URL, db.Bucket })
	hook := newHookServer(t, 0, 0)

	type dev struct {
		id      string
		latency float64
		client  paho.Client
	}
	var fleet []*dev
	for i := range 16 {
		d := &dev{id: fmt.Sprintf("k%d", i), latency: 100}
		fw := "2.0"
		if i >= 10 {
			d.id, d.latency, fw = fmt.Sprintf("c%d", i-10), 130, "2.1"
		}
		tok := h.CreateDevice(d.id, map[string]any{"type": "gateway", "tags": map[string]string{"fw": fw}})
		d.client = mqttClient(t, h.MQTTAddr(), d.id, d.id, tok)
		fleet = append(fleet, d)
	}

	// Invalid definitions: 400 naming the field.
	good := func() map[string]any {
		return map[string]any{
			"name": "fw21", "interval": "10s", "lateness": "0s", "idle_timeout": "0s", "notify": "change", "intervals": 3,
			"canary_group": map[string]any{"tags": []string{"fw:2.1"}}, "control_group": map[string]any{"tags": []string{"fw:2.0"}},
			"metrics": []map[string]any{{"field": "latency", "better": "lower", "tolerance": 0.05},
				{"field": "errors", "better": "lower", "method": "mann-whitney", "significance": 0.01}},
			"outputs": []map[string]any{{"kind": "mqtt", "topic": "alerts/canaries"},
				{"kind": "webhook", "url": hook.URL, "headers": map[string]string{"X-Token": "s3cret"}}},
		}
	}
	for _, tc := range []struct {
		key  string
		val  any
		want string
	}{
		{"metrics", []map[string]any{{"field": "latency", "method": "bayes"}}, `metrics[0].method: unknown method "bayes": want "ratio" or "mann-whitney"`},
		{"canary_group", map[string]any{}, `canary_group: empty: give "devices"`},
		{"control_group", map[string]any{"tags": []string{"fw:2.1"}}, "control_group: overlaps canary_group"},
		{"metrics", []map[string]any{{"field": "latency", "tolerance": -1}}, "metrics[0].tolerance: want a fraction from 0 to 10 (0.05 is 5%), got -1"},
		{"interval", "soon", `want a duration like "10s", got "soon"`},
		{"colour", "blue", "colour"},
	} {
		body := good()
		body[tc.key] = tc.val
		var e struct{ Error string }
		if code := h.Do("POST", "/api/v1/canaries", body, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s=%v: %d %q, want 400 with %q", tc.key, tc.val, code, e.Error, tc.want)
		}
	}

	app := mqttClient(t, h.MQTTAddr(), "watcher", "app", hubtest.APIKey)
	var col collector
	if tok := app.Subscribe("alerts/canaries", 1, col.handler); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	nc, err := nats.Connect(h.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	resSub, err := nc.SubscribeSync("iot.rules.fw21.results")
	if err != nil {
		t.Fatal(err)
	}
	alertSub, err := nc.SubscribeSync("iot.rules.fw21.alerts")
	if err != nil {
		t.Fatal(err)
	}

	var created rules.Canary
	if code := h.Do("POST", "/api/v1/canaries", good(), &created); code != http.StatusCreated || created.Tenant != "default" || !strings.Contains(created.SQL, "TUMBLING(10s)") {
		t.Fatalf("create: %d %+v", code, created)
	}
	for _, c := range []map[string]any{
		{"name": "twin", "interval": "10s", "lateness": "0s", "idle_timeout": "0s",
			"canary_group":  map[string]any{"devices": []string{"k0", "k1", "k2", "k3", "k4"}},
			"control_group": map[string]any{"devices": []string{"k5", "k6", "k7", "k8", "k9"}},
			"metrics":       []map[string]any{{"field": "latency"}, {"field": "errors", "method": "mann-whitney"}}},
		{"name": "tiny", "interval": "10s", "lateness": "0s", "idle_timeout": "0s",
			"canary_group": map[string]any{"devices": []string{"k0", "k1"}}, "control_group": map[string]any{"type": "gateway", "tags": []string{"fw:2.1"}},
			"metrics": []map[string]any{{"field": "latency"}}},
	} {
		if code := h.Do("POST", "/api/v1/canaries", c, nil); code != http.StatusCreated {
			t.Fatalf("create %s: %d", c["name"], code)
		}
	}
	var dup struct{ Error string }
	if code := h.Do("POST", "/api/v1/canaries", good(), &dup); code != http.StatusConflict {
		t.Errorf("second fw21: %d %q, want 409", code, dup.Error)
	}
	for _, name := range []string{"fw21", "twin", "tiny"} {
		hubtest.Eventually(t, 10*time.Second, func() bool {
			var st rules.Stats
			return h.Do("GET", "/api/v1/rules/"+name+"/stats", nil, &st) == 200 && st.Running && !st.CatchingUp
		}, "canary %s not running", name)
	}

	// Three intervals of six readings per device, each interval fully stored before the next
	// (lateness 0: the first reading of an interval closes the previous one), then one reading
	// to close the third.
	t0 := time.Now().Add(-time.Hour).Truncate(10 * time.Second)
	rng := rand.New(rand.NewPCG(3, 4))
	publish := func(k, readings int) {
		var toks []paho.Token
		for _, d := range fleet {
			for s := range readings {
				at := t0.Add(time.Duration(k)*10*time.Second + time.Duration(s)*1500*time.Millisecond)
				body, _ := json.Marshal(map[string]any{"ts": at.UnixMilli(), "latency": d.latency * (1 + 0.05*rng.NormFloat64()), "errors": float64(rng.IntN(3))})
				toks = append(toks, d.client.Publish("devices/"+d.id+"/telemetry", 1, false, body))
			}
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	for k := range 3 {
		publish(k, 6)
	}
	publish(3, 1)

	type page struct{ Results []rules.StoredResult }
	results := func(name string) []rules.StoredResult {
		var p page
		if code := h.Do("GET", "/api/v1/canaries/"+name+"/results?since="+t0.Add(-time.Minute).Format(time.RFC3339), nil, &p); code != 200 {
			t.Fatalf("results of %s: %d", name, code)
		}
		return p.Results
	}
	var fw21 []rules.StoredResult
	hubtest.Eventually(t, 20*time.Second, func() bool {
		fw21 = results("fw21")
		return len(fw21) >= 3 && len(results("twin")) >= 3 && len(results("tiny")) >= 3
	}, "want 3 results of each canary, fw21 has %d", len(fw21))

	for i, r := range fw21 {
		v := r.Values
		if v["status"] != "fail" || v["latency.class"] != "high" || v["errors.class"] != "same" || v["score"] != 0.5 || v["verdict"] != "fail" ||
			v["canary_devices"] != 6.0 || v["control_devices"] != 10.0 || r.WindowStart != t0.Add(time.Duration(i)*10*time.Second).UTC() {
			t.Errorf("fw21 interval %d: [%s, %s) %v", i, r.WindowStart, r.WindowEnd, v)
		}
		if m := v["metrics"].([]any)[0].(map[string]any); m["field"] != "latency" || m["class"] != "high" || m["worse"] != true ||
			m["relative_diff"].(float64) < 0.2 || m["relative_diff"].(float64) > 0.4 {
			t.Errorf("fw21 interval %d latency: %v", i, m)
		}
	}
	for i, r := range results("twin") {
		if v := r.Values; v["status"] != "pass" || v["score"] != 1.0 || v["latency.class"] != "same" || v["errors.class"] != "same" || v["warning_count"] != 0.0 {
			t.Errorf("twin interval %d: %v", i, v)
		}
	}
	for i, r := range results("tiny") {
		if w := fmt.Sprint(r.Values["warnings"]); !strings.Contains(w, "canary group: 2 devices, fewer than 5: too small for a meaningful comparison") ||
			!strings.Contains(w, "canary group: 12 samples of latency, fewer than 30") {
			t.Errorf("tiny interval %d: warnings %s", i, w)
		}
	}

	// A backtest of a canary scores it as the live run did: the same results for the three
	// closed intervals (IDs, classes, verdicts), and the fourth, closed by the end of the input.
	for _, name := range []string{"fw21", "twin"} {
		var rep btReport
		if code := h.Do("POST", "/api/v1/backtests", map[string]any{"rule": name, "from": t0.Add(-time.Minute).Format(time.RFC3339)}, &rep); code != 200 {
			t.Fatalf("backtest %s: %d %s", name, code, rep.Error)
		}
		live := results(name)
		if len(rep.Run.Results) != 4 || len(live) != 3 {
			t.Fatalf("backtest %s: %d results, live %d; want 4 and 3", name, len(rep.Run.Results), len(live))
		}
		liveRes := make([]rules.Result, len(live))
		for i := range live {
			liveRes[i] = live[i].Result
		}
		if got, want := canon(t, rep.Run.Results[:3]), canon(t, liveRes); !slices.Equal(got, want) {
			t.Errorf("backtest of canary %s differs from live:\n got %s\nwant %s", name, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
		want := map[string]string{"fw21": "fail", "twin": "pass"}[name]
		if v := rep.Run.Results[3].Values["verdict"]; v != want {
			t.Errorf("backtest of canary %s: last verdict %v, want %s", name, v, want)
		}
	}

	var bad struct{ Error string }
	if code := h.Do("GET", "/api/v1/canaries/fw21/results?since=yesterday", nil, &bad); code != 400 || !strings.HasPrefix(bad.Error, `since: "yesterday" is not an RFC 3339 time`) {
		t.Errorf("bad since: %d %q", code, bad.Error)
	}
	if got := results("fw21"); len(got) != 3 {
		t.Errorf("%d results, want 3", len(got))
	}
	var later struct{ Results []rules.StoredResult }
	if code := h.Do("GET", "/api/v1/canaries/fw21/results?since="+fw21[1].WindowEnd.Format(time.RFC3339Nano), nil, &later); code != 200 || len(later.Results) != 2 || later.Results[0].ID != fw21[1].ID {
		t.Errorf("since the second interval's end: %d, %d results", code, len(later.Results))
	}

	// The latest verdict over the API; the list.
	var one rules.Canary
	if code := h.Do("GET", "/api/v1/canaries/fw21", nil, &one); code != 200 || one.Latest == nil || one.Latest.ID != fw21[len(fw21)-1].ID || one.Latest.Values["verdict"] != "fail" {
		t.Errorf("GET fw21: %d latest %+v", code, one.Latest)
	}
	var list struct{ Canaries []rules.Canary }
	if code := h.Do("GET", "/api/v1/canaries", nil, &list); code != 200 || len(list.Canaries) != 3 || list.Canaries[0].Name != "fw21" || list.Canaries[0].Latest == nil {
		t.Errorf("list: %d %+v", code, list)
	}

	// The results subject has each interval once; the alerts subject has one "fired" (notify
	// change), which reached the MQTT output and the webhook too.
	seen := map[string]bool{}
	for range 3 {
		msg, err := resSub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("results subject: %v", err)
		}
		var r rules.Result
		if err := json.Unmarshal(msg.Data, &r); err != nil || seen[r.ID] || r.Values["status"] != "fail" {
			t.Errorf("results subject: %s (%v)", msg.Data, err)
		}
		seen[r.ID] = true
	}
	msg, err := alertSub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("alerts subject: %v", err)
	}
	var alert rules.Result
	if err := json.Unmarshal(msg.Data, &alert); err != nil || alert.State != "fired" || alert.ID != fw21[0].ID || alert.Values["verdict"] != "fail" {
		t.Errorf("alert %s (%v)", msg.Data, err)
	}
	if extra, err := alertSub.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("a second alert without a change of verdict: %s", extra.Data)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		return len(col.results("alerts/canaries")) == 1 && len(hook.received()) == 1
	}, "alert did not reach the MQTT output and the webhook: %d, %d", len(col.results("alerts/canaries")), len(hook.received()))
	if got := hook.received()[0]; got.Rule != "fw21" || got.State != "fired" {
		t.Errorf("webhook got %+v", got)
	}

	// InfluxDB: one point per interval in rule_results, with the score and per-metric means.
	var cols []string
	var rows [][]any
	hubtest.Eventually(t, 15*time.Second, func() bool {
		cols, rows = influxSelect(t, db, `SELECT score, "latency.class", "latency.canary_mean", verdict FROM rule_results WHERE "rule" = 'fw21'`)
		return len(rows) == 3
	}, "influxdb: %d rows for fw21, want 3", len(rows))
	for _, row := range rows {
		if row[1] != 0.5 || row[2] != "high" || row[3].(float64) < 120 || row[4] != "fail" {
			t.Errorf("influx row %v (columns %v)", row, cols)
		}
	}

	// DELETE: gone from the API; a rule of the same name is not a canary.
	if code := h.Do("DELETE", "/api/v1/canaries/tiny", nil, nil); code != http.StatusNoContent {
		t.Errorf("delete: %d", code)
	}
	var e struct{ Error string }
	if code := h.Do("GET", "/api/v1/canaries/tiny", nil, &e); code != 404 {
		t.Errorf("after delete: %d %q", code, e.Error)
	}
	if code := h.Do("POST", "/api/v1/rules", map[string]any{"name": "plain", "sql": avgQuery}, nil); code != 201 {
		t.Fatalf("create rule: %d", code)
	}
	if code := h.Do("GET", "/api/v1/canaries/plain", nil, &e); code != 404 || !strings.Contains(e.Error, "plain is a rule, not a canary") {
		t.Errorf("GET canary of a rule: %d %q", code, e.Error)
	}

	// PUT replaces a canary (200), creates one (201), refuses a plain rule's name and says
	// what is wrong with a bad definition, naming the field.
	edited := good()
	edited["threshold"] = 0.5
	var put rules.Canary
	if code := h.Do("PUT", "/api/v1/canaries/fw21", edited, &put); code != 200 || put.Threshold == nil || *put.Threshold != 0.5 {
		t.Errorf("PUT fw21: %d %+v", code, put)
	}
	var again rules.Canary
	if code := h.Do("GET", "/api/v1/canaries/fw21", nil, &again); code != 200 || again.Threshold == nil || *again.Threshold != 0.5 {
		t.Errorf("GET after PUT: %d threshold %v", code, again.Threshold)
	}
	fresh := good()
	delete(fresh, "name")
	if code := h.Do("PUT", "/api/v1/canaries/fw22", fresh, &put); code != 201 || put.Name != "fw22" {
		t.Errorf("PUT a new fw22: %d %+v", code, put)
	}
	if code := h.Do("PUT", "/api/v1/canaries/plain", good(), &e); code != 404 || !strings.Contains(e.Error, "plain is a rule, not a canary") {
		t.Errorf("PUT canary over a rule: %d %q", code, e.Error)
	}
	badDef := good()
	badDef["metrics"] = []map[string]any{{"field": "latency", "tolerance": -1}}
	if code := h.Do("PUT", "/api/v1/canaries/fw21", badDef, &e); code != 400 || !strings.Contains(e.Error, "metrics[0].tolerance") {
		t.Errorf("PUT with a bad tolerance: %d %q", code, e.Error)
	}
}
