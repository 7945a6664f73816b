package rules_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestComposition chains two rules: b reads a's results.
func TestComposition(t *testing.T) {
	bus := streamstest.New(t)
	devs := newDevices(devices.Device{ID: "d1", Tags: map[string]string{"site": "s1"}}, devices.Device{ID: "d2", Tags: map[string]string{"site": "s1"}})
	m := startManager(t, bus, devs, fastConfig)
	mustCreate(t, m, rules.Spec{Name: "per-device", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0)})
	mustCreate(t, m, rules.Spec{Name: "per-site", Lateness: rules.D(0), IdleTimeout: rules.D(0),
		SQL: `SELECT tags.site, max(avg_t) AS hottest, count(*) AS devices FROM 'rules/per-device' GROUP BY tags.site, TUMBLING(20s)`})
	for i := range 45 {
		at := base.Add(time.Duration(i) * time.Second)
		telemetry(t, bus, "d1", at, map[string]any{"t": float64(i)})
		telemetry(t, bus, "d2", at, map[string]any{"t": float64(100 + i)})
	}
	got := waitResults(t, m, "per-site", 1)
	r := got[0]
	// per-device windows [0,10) and [10,20) of d1 and d2 fall into per-site [0,20).
	if r.Group["tags.site"] != "s1" || r.Values["hottest"] != 114.5 || r.Values["devices"] != 4.0 || !r.WindowStart.Equal(base) {
		t.Errorf("got %+v, want site s1 with hottest 114.5 over 4 device windows", r.Result)
	}
}

// TestNotifyChange checks that notify "change" sends fired when the condition starts to hold
// and cleared when a window of the group closes without it, to every output.
func TestNotifyChange(t *testing.T) {
	bus := streamstest.New(t)
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "hot", Lateness: rules.D(0), IdleTimeout: rules.D(0), Notify: "change",
		SQL:     `SELECT device, avg(t) AS avg_t FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) HAVING avg_t > 30`,
		Outputs: []rules.Output{{Kind: "mqtt", Topic: "alerts/hot"}, {Kind: "command", Command: "cool"}}})
	// Windows of d1: 40 (fires), 50 (still on), 10 (clears), 60 (fires again); then one to close.
	for w, v := range []float64{40, 50, 10, 60, 0} {
		telemetry(t, bus, "d1", base.Add(time.Duration(w*10)*time.Second), map[string]any{"t": v})
	}
	var states []string
	eventually(t, 10*time.Second, func() bool {
		page, err := bus.Latest(context.Background(), []string{"rules/hot/alerts"}, 10, 0)
		if err != nil {
			return false
		}
		states = states[:0]
		for _, e := range page.Messages {
			var n rules.Result
			_ = json.Unmarshal(e.Payload, &n)
			states = append(states, n.State+"@"+n.WindowStart.Format("04:05"))
		}
		return len(states) >= 3
	}, "want 3 notifications")
	if want := "fired@00:00 cleared@00:20 fired@00:30"; strings.Join(states, " ") != want {
		t.Errorf("notifications %q, want %q", strings.Join(states, " "), want)
	}
	results := waitResults(t, m, "hot", 3) // results: every window passing HAVING
	if len(results) != 3 {
		t.Errorf("got %d results, want 3 (windows 0, 10 and 30)", len(results))
	}
	for _, topic := range []string{"alerts/hot", "devices/d1/commands/cool"} {
		var page streams.Page
		eventually(t, 5*time.Second, func() bool {
			var err error
			page, err = bus.Latest(context.Background(), []string{topic}, 10, 0)
			return err == nil && len(page.Messages) == 3
		}, "want 3 notifications on %s", topic)
		if topic == "alerts/hot" {
			continue
		}
		var cmd devices.CommandMessage
		var note rules.Result
		if err := json.Unmarshal(page.Messages[1].Payload, &cmd); err != nil || json.Unmarshal(cmd.Payload, &note) != nil ||
			cmd.Name != "cool" || cmd.ID == "" || page.Messages[1].Meta[devices.MetaCommandID] != cmd.ID || note.State != "cleared" {
			t.Errorf("command message %s (%+v): want the devices' command format with the notification as payload", page.Messages[1].Payload, cmd)
		}
	}
	st, _ := m.Stats(context.Background(), "hot")
	if st.Notifications != 3 || st.FiredGroups != 1 || st.HavingFailed != 1 || st.Results != 3 {
		t.Errorf("stats = %+v", st)
	}
}

// hookServer is a webhook receiver that fails the first failures requests.
type hookServer struct {
	*httptest.Server
	failures atomic.Int32
	mu       sync.Mutex
	bodies   []rules.Result
	ids      []string
}

func newHookServer(t *testing.T, failures int32, status int) *hookServer {
	h := &hookServer{}
	h.failures.Store(failures)
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.failures.Add(-1) >= 0 {
			w.WriteHeader(status)
			return
		}
		data, _ := io.ReadAll(r.Body)
		var n rules.Result
		if err := json.Unmarshal(data, &n); err != nil || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Token") != "s3cret" {
			t.Errorf("webhook request %s %q: %v", r.Header, data, err)
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, n)
		h.ids = append(h.ids, r.Header.Get("X-Tributary-Id"))
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) received() []rules.Result {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]rules.Result(nil), h.bodies...)
}

func TestWebhookRetriesThenDelivers(t *testing.T) {
	bus := streamstest.New(t)
	hook := newHookServer(t, 2, http.StatusServiceUnavailable)
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "hot", Lateness: rules.D(0), IdleTimeout: rules.D(0),
		SQL: `SELECT device, max(t) AS max_t FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) HAVING max_t > 30`,
		Outputs: []rules.Output{{Kind: "webhook", URL: hook.URL + "/hook", Backoff: rules.D(10 * time.Millisecond),
			Headers: map[string]string{"X-Token": "s3cret"}}}})
	for w, v := range []float64{40, 10, 50, 0} {
		telemetry(t, bus, "d1", base.Add(time.Duration(w*10)*time.Second), map[string]any{"t": v})
	}
	eventually(t, 10*time.Second, func() bool { return len(hook.received()) == 2 }, "webhook did not get 2 notifications")
	got := hook.received()
	if got[0].Values["max_t"] != 40.0 || got[1].Values["max_t"] != 50.0 || got[0].Group["device"] != "d1" {
		t.Errorf("webhook got %+v", got)
	}
	// The receiver has the body before the sender has its answer and counts the delivery.
	var st rules.Stats
	eventually(t, 5*time.Second, func() bool {
		st, _ = m.Stats(context.Background(), "hot")
		return st.Webhooks != nil && st.Webhooks.Pending == 0
	}, "webhook deliveries still pending")
	if st.Webhooks.Delivered != 2 || st.Webhooks.FailedAttempts != 2 || st.Webhooks.DeadLettered != 0 {
		t.Errorf("webhook stats = %+v", st.Webhooks)
	}
}

func TestWebhookDeadLetter(t *testing.T) {
	bus := streamstest.New(t)
	hook := newHookServer(t, 1000, http.StatusInternalServerError)
	refused := newHookServer(t, 1000, http.StatusBadRequest)
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "hot", Lateness: rules.D(0), IdleTimeout: rules.D(0),
		SQL: `SELECT device, max(t) AS max_t FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) HAVING max_t > 30`,
		Outputs: []rules.Output{
			{Kind: "webhook", URL: hook.URL, MaxAttempts: 3, Backoff: rules.D(5 * time.Millisecond)},
			{Kind: "webhook", URL: refused.URL, MaxAttempts: 3, Backoff: rules.D(5 * time.Millisecond)},
		}})
	telemetry(t, bus, "d1", base, map[string]any{"t": 40.0})
	telemetry(t, bus, "d1", base.Add(10*time.Second), map[string]any{"t": 0.0})
	var dead []*streams.Envelope
	eventually(t, 10*time.Second, func() bool {
		page, err := bus.DeadLetters(context.Background(), "d1", 10, 0)
		dead = page.Messages
		return err == nil && len(dead) == 2
	}, "want 2 dead letters")
	reasons := dead[0].Meta[streams.MetaReason] + "\n" + dead[1].Meta[streams.MetaReason]
	for _, want := range []string{"webhook " + hook.URL + ": HTTP 500 (after 3 attempts)", "webhook " + refused.URL + ": HTTP 400 (after 1 attempts)"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("dead letter reasons %q, want one with %q", reasons, want)
		}
	}
	if dead[0].Topic != "rules/hot/alerts" || dead[0].Meta["rule"] != "hot" {
		t.Errorf("dead letter %+v", dead[0])
	}
	st, _ := m.Stats(context.Background(), "hot")
	if st.Webhooks == nil || st.Webhooks.DeadLettered != 2 || st.Webhooks.FailedAttempts != 4 {
		t.Errorf("webhook stats = %+v", st.Webhooks)
	}
}

// TestReplaceAndDelete checks PUT keeps the state when the meaning is unchanged and starts
// over when it changes, and DELETE removes the rule and its state.
func TestReplaceAndDelete(t *testing.T) {
	bus := streamstest.New(t)
	ctx := context.Background()
	m := startManager(t, bus, newDevices(), fastConfig)
	spec := rules.Spec{Name: "avg", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0)}
	r1 := mustCreate(t, m, spec)
	for i := range 15 {
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": 1.0})
	}
	waitResults(t, m, "avg", 1)

	spec.Description = "now with a description"
	spec.Outputs = []rules.Output{{Kind: "mqtt", Topic: "out/avg"}}
	r2, created, err := m.Put(ctx, "avg", spec)
	if err != nil || created || r2.Incarnation != r1.Incarnation || r2.StartSeq != r1.StartSeq || r2.Description != spec.Description {
		t.Fatalf("put without change of meaning: %+v, %v, %v; want the same incarnation", r2, created, err)
	}
	eventually(t, 5*time.Second, func() bool {
		s, _ := m.Stats(ctx, "avg")
		return s.Running && s.EventsIn == 15
	}, "state not kept across the replacement")

	// Disabled, the rule keeps its state; enabled again, it reads what came meanwhile.
	off := false
	spec.Enabled = &off
	if _, _, err := m.Put(ctx, "avg", spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool {
		s, _ := m.Stats(ctx, "avg")
		return !s.Running && s.EventsIn == 15
	}, "rule not stopped by enabled: false")
	for i := 15; i < 25; i++ {
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": 1.0})
	}
	spec.Enabled = nil
	if _, _, err := m.Put(ctx, "avg", spec); err != nil {
		t.Fatal(err)
	}
	waitResults(t, m, "avg", 2)
	eventually(t, 5*time.Second, func() bool {
		s, _ := m.Stats(ctx, "avg")
		return s.EventsIn == 25
	}, "after enabling again: want 25 events in")

	spec.SQL = strings.Replace(avgQuery, "avg(t)", "max(t)", 1)
	r3, _, err := m.Put(ctx, "avg", spec)
	if err != nil || r3.Incarnation == r1.Incarnation || r3.StartSeq <= r1.StartSeq || !r3.CreatedAt.Equal(r1.CreatedAt) {
		t.Fatalf("put with a new query: %+v, %v; want a new incarnation", r3, err)
	}
	eventually(t, 5*time.Second, func() bool {
		s, _ := m.Stats(ctx, "avg")
		return s.Running && s.EventsIn == 0
	}, "state not reset by a change of meaning")

	if _, created, err := m.Put(ctx, "other", rules.Spec{SQL: avgQuery}); err != nil || !created {
		t.Fatalf("put of a new rule: %v, %v", created, err)
	}
	if list, err := m.List(ctx); err != nil || len(list) != 2 || list[0].Name != "avg" || list[1].Name != "other" {
		t.Fatalf("list = %v, %v", list, err)
	}
	if err := m.Delete(ctx, "avg"); err != nil {
		t.Fatal(err)
	}
	kv, _ := bus.JetStream().KeyValue(ctx, rules.StateBucket)
	eventually(t, 5*time.Second, func() bool {
		_, err := kv.Get(ctx, "avg")
		return err != nil
	}, "state of the deleted rule is still there")
	if err := m.Delete(ctx, "avg"); err == nil {
		t.Error("second delete succeeded")
	}
	if _, err := m.Stats(ctx, "avg"); err == nil {
		t.Error("stats of a deleted rule")
	}
}

func TestStartEarliestAndIdleClose(t *testing.T) {
	bus := streamstest.New(t)
	for i := range 12 { // before the rule exists
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": float64(i)})
	}
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "now", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0)})
	mustCreate(t, m, rules.Spec{Name: "backfill", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0), Start: "earliest"})
	mustCreate(t, m, rules.Spec{Name: "from-5s", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0),
		Start: time.Now().Add(-time.Hour).Format(time.RFC3339)})
	// Idle closing: the stream goes quiet, and the open window closes as processing time passes.
	// The events are a second apart: each is a session of its own, the last one closed only by
	// idle time.
	mustCreate(t, m, rules.Spec{Name: "idle", Lateness: rules.D(0), IdleTimeout: rules.D(100 * time.Millisecond), Start: "earliest",
		SQL: `SELECT device, count(*) AS n, max(t) AS last FROM 'devices/+/telemetry' GROUP BY device, SESSION(500ms)`})
	for _, name := range []string{"backfill", "from-5s"} {
		if got := waitResults(t, m, name, 1); got[0].Values["n"] != 10.0 {
			t.Errorf("%s: got %+v, want the first window of 10 events", name, got[0].Result)
		}
	}
	got := waitResults(t, m, "idle", 12)
	if last := got[len(got)-1]; last.Values["last"] != 11.0 || last.Values["n"] != 1.0 {
		t.Errorf("idle: got %+v, want the last session closed while idle", last.Result)
	}
	if got := results(t, m, "now"); len(got) != 0 {
		t.Errorf("rule starting now got %d results from old events", len(got))
	}
}

func TestResultsQuery(t *testing.T) {
	bus := streamstest.New(t)
	ctx := context.Background()
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "avg", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0)})
	for i := range 61 {
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": 1.0})
	}
	waitResults(t, m, "avg", 6)
	page, err := m.Results(ctx, "avg", rules.ResultsQuery{Limit: 4})
	if err != nil || len(page.Results) != 4 || page.Next == 0 {
		t.Fatalf("first page: %d results, next %d, %v", len(page.Results), page.Next, err)
	}
	rest, err := m.Results(ctx, "avg", rules.ResultsQuery{After: page.Next})
	if err != nil || len(rest.Results) != 2 || rest.Next != 0 || !rest.Results[0].WindowStart.Equal(base.Add(40*time.Second)) {
		t.Fatalf("second page: %+v, %v", rest, err)
	}
	ranged, err := m.Results(ctx, "avg", rules.ResultsQuery{From: base.Add(20 * time.Second), To: base.Add(40 * time.Second)})
	if err != nil || len(ranged.Results) != 2 {
		t.Fatalf("window ends in [20s, 40s): %+v, %v", ranged, err)
	}
	if _, err := m.Results(ctx, "nope", rules.ResultsQuery{}); err == nil {
		t.Error("results of an unknown rule")
	}
}
