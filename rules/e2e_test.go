package rules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

func TestMain(m *testing.M) {
	code := influxtest.Main(m)
	if hubdBin.dir != "" {
		os.RemoveAll(hubdBin.dir)
	}
	os.Exit(code)
}

func mqttClient(t testing.TB, addr, id, user, pass string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// collector gathers the payloads of MQTT messages by topic.
type collector struct {
	mu  sync.Mutex
	got map[string][][]byte
}

func (c *collector) handler(_ paho.Client, m paho.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got == nil {
		c.got = map[string][][]byte{}
	}
	c.got[m.Topic()] = append(c.got[m.Topic()], m.Payload())
}

func (c *collector) results(topic string) []rules.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []rules.Result
	for _, p := range c.got[topic] {
		var r rules.Result
		if json.Unmarshal(p, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// TestEndToEnd runs a hub with InfluxDB: an MQTT device and a CoAP device send telemetry, an
// alert rule aggregates it, and the results reach an MQTT subscriber, a NATS subscriber, a
// webhook receiver, InfluxDB and the results API.
func TestEndToEnd(t *testing.T) {
	db := influxtest.Shared(t).NewDB(t)
	h := hubtest.Start(t, func(c *hub.Config) { c.InfluxURL, c.InfluxBucket = db.URL, db.Bucket })
	mqttTok := h.CreateDevice("th-mqtt", map[string]any{"type": "thermo", "tags": map[string]string{"site": "lab"}})
	coapTok := h.CreateDevice("th-coap", map[string]any{"type": "thermo", "tags": map[string]string{"site": "roof"}})
	hook := newHookServer(t, 1, http.StatusBadGateway) // the first request fails: retried

	// Errors are 400 with the position in the query, or the field.
	var e struct{ Error string }
	if code := h.Do("POST", "/api/v1/rules", map[string]any{"name": "bad", "sql": "SELECT avg(t) FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m"}, &e); code != 400 || e.Error != "line 1, col 62: expected ')' after window size, found end of input" {
		t.Errorf("bad SQL: %d %q", code, e.Error)
	}
	if code := h.Do("POST", "/api/v1/rules", map[string]any{"name": "bad", "sql": avgQuery, "outputs": []map[string]any{{"kind": "pager"}}}, &e); code != 400 || !strings.HasPrefix(e.Error, "outputs[0].kind: ") {
		t.Errorf("bad output: %d %q", code, e.Error)
	}
	if code := h.Do("POST", "/api/v1/rules", []byte(`{"name":"bad","sql":"x","latenes":"1s"}`), &e); code != 400 || !strings.Contains(e.Error, "latenes") {
		t.Errorf("unknown field: %d %q", code, e.Error)
	}

	app := mqttClient(t, h.MQTTAddr(), "watcher", "app", hubtest.APIKey)
	var col collector
	for _, topic := range []string{"rules/hot/results", "alerts/hot"} {
		if tok := app.Subscribe(topic, 1, col.handler); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	nc, err := nats.Connect(h.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	natsSub, err := nc.SubscribeSync("iot.rules.hot.results")
	if err != nil {
		t.Fatal(err)
	}

	spec := map[string]any{
		"name": "hot", "lateness": "0s", "idle_timeout": "0s",
		"sql": `SELECT device, tags.site, avg(temperature) AS avg_t, count(*) AS n FROM 'devices/+/telemetry'
		        WHERE type = 'thermo' GROUP BY device, tags.site, TUMBLING(10s) HAVING avg_t > 25`,
		"outputs": []map[string]any{{"kind": "mqtt", "topic": "alerts/hot"},
			{"kind": "webhook", "url": hook.URL, "backoff": "10ms", "headers": map[string]string{"X-Token": "s3cret"}}},
	}
	var created rules.Rule
	if code := h.Do("POST", "/api/v1/rules", spec, &created); code != http.StatusCreated || !created.Alert || created.Source != "devices/+/telemetry" ||
		created.Lateness == nil || *created.Lateness != 0 || !slices.Equal(created.Columns, []string{"device", "tags.site", "avg_t", "n"}) {
		t.Fatalf("create: %d %+v", code, created)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		var s rules.Stats
		return h.Do("GET", "/api/v1/rules/hot/stats", nil, &s) == 200 && s.Running && !s.CatchingUp
	}, "rule not running")

	dev := mqttClient(t, h.MQTTAddr(), "th-mqtt", "th-mqtt", mqttTok)
	coap, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer coap.Close()
	post := func(at time.Time, temp float64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		body := fmt.Sprintf(`{"temperature":%g,"ts":%d}`, temp, at.UnixMilli())
		resp, err := coap.Post(ctx, "/devices/th-coap/telemetry", message.AppJSON, strings.NewReader(body),
			message.Option{ID: message.URIQuery, Value: []byte("token=" + coapTok)})
		if err != nil || resp.Code() != codes.Changed && resp.Code() != codes.Created {
			t.Fatalf("coap post: %v %v", resp, err)
		}
	}
	start := time.Now().Add(-time.Hour).Truncate(time.Minute)
	// Window 0: mqtt avg 30 (alert), coap avg 20 (no alert). Window 1: both 40. One event in
	// window 2 from each closes window 1.
	mqttTemps, coapTemps := []float64{28, 32, 40, 40, 0}, []float64{18, 22, 40, 40, 0}
	for i := range mqttTemps {
		at := start.Add(time.Duration(i/2*10+i%2) * time.Second)
		p := fmt.Sprintf(`{"temperature":%g,"ts":"%s"}`, mqttTemps[i], at.Format(time.RFC3339Nano))
		if tok := dev.Publish("devices/th-mqtt/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		post(at, coapTemps[i])
	}

	hubtest.Eventually(t, 15*time.Second, func() bool { return len(col.results("rules/hot/results")) == 3 }, "mqtt subscriber: %d results, want 3", len(col.results("rules/hot/results")))
	got := map[string]float64{}
	for _, r := range col.results("rules/hot/results") {
		got[fmt.Sprintf("%s/%s@%s", r.Group["device"], r.Group["tags.site"], r.WindowStart.Sub(start))] = r.Values["avg_t"].(float64)
	}
	want := map[string]float64{"th-mqtt/lab@0s": 30, "th-mqtt/lab@10s": 40, "th-coap/roof@10s": 40}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("results over MQTT %v, want %v", got, want)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool { return len(col.results("alerts/hot")) == 3 }, "alerts/hot: %d notifications, want 3", len(col.results("alerts/hot")))
	for range 3 {
		if _, err := natsSub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("nats subscriber: %v", err)
		}
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return len(hook.received()) == 3 }, "webhook: %d notifications, want 3", len(hook.received()))

	var page rules.ResultsPage
	q := url.Values{"from": {start.Format(time.RFC3339)}, "to": {start.Add(time.Minute).Format(time.RFC3339)}}
	if code := h.Do("GET", "/api/v1/rules/hot/results?"+q.Encode(), nil, &page); code != 200 || len(page.Results) != 3 {
		t.Errorf("results API: %d, %d results", code, len(page.Results))
	}
	var st rules.Stats
	if h.Do("GET", "/api/v1/rules/hot/stats", nil, &st); st.EventsIn != 10 || st.Results != 3 || st.HavingFailed != 1 || st.LastResult == nil || st.Webhooks == nil || st.Webhooks.Delivered != 3 {
		t.Errorf("stats = %+v", st)
	}

	// InfluxDB: one point per result in rule_results, tagged with rule and group keys.
	var rows [][]any
	var cols []string
	hubtest.Eventually(t, 30*time.Second, func() bool {
		cols, rows = influxSelect(t, db, `SELECT * FROM rule_results`)
		return len(rows) == 3
	}, "influxdb: %d rows of rule_results, want 3", len(rows))
	ci := func(name string) int { return slices.Index(cols, name) }
	for _, row := range rows {
		if row[ci("rule")] != "hot" || row[ci("tags.site")] == nil || row[ci("avg_t")] == nil || row[ci("n")] != 2.0 {
			t.Errorf("influx row %v (columns %v)", row, cols)
		}
	}

	// Listing, replacing, deleting.
	var list struct{ Rules []rules.Rule }
	if code := h.Do("GET", "/api/v1/rules", nil, &list); code != 200 || len(list.Rules) != 1 {
		t.Errorf("list: %d %+v", code, list)
	}
	spec["enabled"] = false
	var replaced rules.Rule
	if code := h.Do("PUT", "/api/v1/rules/hot", spec, &replaced); code != 200 || replaced.IsEnabled() || replaced.Incarnation != created.Incarnation {
		t.Errorf("put: %d %+v", code, replaced)
	}
	if code := h.Do("DELETE", "/api/v1/rules/hot", nil, nil); code != http.StatusNoContent {
		t.Errorf("delete: %d", code)
	}
	if code := h.Do("GET", "/api/v1/rules/hot", nil, &e); code != http.StatusNotFound {
		t.Errorf("get after delete: %d", code)
	}
}

// influxSelect runs an InfluxQL query and returns the columns and rows of its first series.
func influxSelect(t *testing.T, db influxtest.DB, q string) ([]string, [][]any) {
	t.Helper()
	resp, err := http.Get(db.URL + "/query?" + url.Values{"db": {db.Database}, "q": {q}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ans struct {
		Results []struct {
			Series []struct {
				Columns []string
				Values  [][]any
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ans); err != nil {
		t.Fatalf("influx answer %s: %v", body, err)
	}
	if len(ans.Results) == 0 || len(ans.Results[0].Series) == 0 {
		return nil, nil
	}
	return ans.Results[0].Series[0].Columns, ans.Results[0].Series[0].Values
}
