package rules_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

const avgQuery = `SELECT device, avg(t) AS avg_t, count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s)`

func TestTumblingResults(t *testing.T) {
	bus := streamstest.New(t)
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "avg", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0)})

	for i := range 25 {
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": float64(i)})
		telemetry(t, bus, "d2", base.Add(time.Duration(i)*time.Second), map[string]any{"t": float64(2 * i)})
	}
	got := waitResults(t, m, "avg", 4)
	want := map[string]map[string]any{
		"d1 10:00:00": {"device": "d1", "avg_t": 4.5, "n": 10.0},
		"d2 10:00:00": {"device": "d2", "avg_t": 9.0, "n": 10.0},
		"d1 10:00:10": {"device": "d1", "avg_t": 14.5, "n": 10.0},
		"d2 10:00:10": {"device": "d2", "avg_t": 29.0, "n": 10.0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results, want %d: %v", len(got), len(want), summary(got))
	}
	for _, r := range got {
		key := r.Group["device"].(string) + " " + r.WindowStart.Format("15:04:05")
		w, ok := want[key]
		if !ok {
			t.Errorf("unexpected result %v", summary([]rules.StoredResult{r}))
			continue
		}
		for k, v := range w {
			if r.Values[k] != v {
				t.Errorf("%s: %s = %v, want %v", key, k, r.Values[k], v)
			}
		}
		if r.WindowEnd.Sub(r.WindowStart) != 10*time.Second || r.Rule != "avg" || !strings.HasPrefix(r.ID, "avg/") {
			t.Errorf("%s: got %+v", key, r.Result)
		}
	}
	// The four results come out once the 41st event is in; the rest follows shortly.
	var st rules.Stats
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if st, err = m.Stats(context.Background(), "avg"); err != nil {
			t.Fatal(err)
		}
		if st.EventsIn >= 50 && st.ConsumerLag == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.EventsIn != 50 || st.Accepted != 50 || st.Results != 4 || st.OpenWindows != 2 || st.LastResult == nil || st.ConsumerLag != 0 {
		t.Errorf("stats = %+v, want 50 events in and accepted, 4 results, 2 open windows, no lag", st)
	}
}

func TestDefinitionErrors(t *testing.T) {
	bus := streamstest.New(t)
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "a", SQL: avgQuery})
	mustCreate(t, m, rules.Spec{Name: "b", SQL: `SELECT avg(avg_t) AS x FROM 'rules/a' GROUP BY TUMBLING(1m)`})
	for _, tc := range []struct {
		name string
		spec rules.Spec
		want string
	}{
		{"syntax", rules.Spec{Name: "x", SQL: "SELECT avg(t) FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m"}, "line 1, col "},
		{"semantics", rules.Spec{Name: "x", SQL: "SELECT t FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m)"}, "line 1, col 8: "},
		{"name", rules.Spec{Name: "bad name", SQL: avgQuery}, "name: "},
		{"empty sql", rules.Spec{Name: "x"}, "sql: "},
		{"lateness", rules.Spec{Name: "x", SQL: avgQuery, Lateness: rules.D(-time.Second)}, "lateness: "},
		{"idle", rules.Spec{Name: "x", SQL: avgQuery, IdleTimeout: rules.D(-1)}, "idle_timeout: "},
		{"notify", rules.Spec{Name: "x", SQL: avgQuery, Notify: "sometimes"}, "notify: "},
		{"notify change without having", rules.Spec{Name: "x", SQL: avgQuery, Notify: "change"}, "notify: "},
		{"start", rules.Spec{Name: "x", SQL: avgQuery, Start: "yesterday"}, "start: "},
		{"output kind", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "email"}}}, "outputs[0].kind: "},
		{"output kind missing", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Topic: "a"}}}, "outputs[0].kind: "},
		{"webhook url", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "mqtt", Topic: "a/b"}, {Kind: "webhook", URL: "ftp://x"}}}, "outputs[1].url: "},
		{"webhook relative url", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "webhook", URL: "/hook"}}}, "outputs[0].url: "},
		{"webhook attempts", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "webhook", URL: "http://h/", MaxAttempts: 99}}}, "outputs[0].max_attempts: "},
		{"webhook backoff", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "webhook", URL: "http://h/", Backoff: rules.D(0)}}}, "outputs[0].backoff: "},
		{"mqtt wildcard", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "mqtt", Topic: "a/+"}}}, "outputs[0].topic: "},
		{"mqtt devices", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "mqtt", Topic: "devices/d1/commands/x"}}}, "outputs[0].topic: "},
		{"mqtt with url", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "mqtt", Topic: "a", URL: "http://h/"}}}, "outputs[0].url: "},
		{"command name", rules.Spec{Name: "x", SQL: avgQuery, Outputs: []rules.Output{{Kind: "command", Command: "a/b"}}}, "outputs[0].command: "},
		{"cycle", rules.Spec{Name: "a", SQL: `SELECT avg(x) AS avg_t FROM 'rules/b' GROUP BY TUMBLING(1m)`}, "a → b → a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.name == "cycle" {
				_, _, err = m.Put(context.Background(), tc.spec.Name, tc.spec)
			} else {
				_, err = m.Create(context.Background(), tc.spec)
			}
			if !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an invalid-rule error containing %q", err, tc.want)
			}
		})
	}
	_, err := m.Create(context.Background(), rules.Spec{Name: "x", SQL: "SELECT avg(t) FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m"})
	var pe *sql.ParseError
	if !errors.As(err, &pe) || err.Error() != pe.Error() {
		t.Errorf("got %v, want the *sql.ParseError as it is", err)
	}
	if _, err := m.Create(context.Background(), rules.Spec{Name: "a", SQL: avgQuery}); !errors.Is(err, rules.ErrExists) {
		t.Errorf("second create: got %v, want ErrExists", err)
	}
	if _, err := m.Get(context.Background(), "nope"); !errors.Is(err, rules.ErrNotFound) {
		t.Errorf("get: got %v, want ErrNotFound", err)
	}
}

// TestRestartIsExact stops and restarts the manager while events flow: the results equal those
// of a run that was never stopped, each window once.
func TestRestartIsExact(t *testing.T) {
	run := func(t *testing.T, restartAt int) []string {
		bus := streamstest.New(t)
		m := startManager(t, bus, newDevices(), fastConfig)
		mustCreate(t, m, rules.Spec{Name: "avg", SQL: avgQuery, Lateness: rules.D(2 * time.Second), IdleTimeout: rules.D(0)})
		for i := range 60 {
			if i == restartAt {
				m.stop()
				m = startManager(t, bus, newDevices(), fastConfig)
				waitRunning(t, m, "avg")
			}
			// Slightly out of order: every third event is a second late.
			at := base.Add(time.Duration(i) * time.Second)
			if i%3 == 2 {
				at = at.Add(-time.Second)
			}
			telemetry(t, bus, "d1", at, map[string]any{"t": float64(i)})
		}
		return summary(waitResults(t, m, "avg", 5))
	}
	want := run(t, -1)
	got := run(t, 31)
	if !slices.Equal(got, want) {
		t.Errorf("after a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCrashReplayPublishesOnce makes the rule resume from an old checkpoint, as after kill -9,
// with a JetStream duplicate window too short to help: the results already published are
// found in the stream and not published again.
func TestCrashReplayPublishesOnce(t *testing.T) {
	bus := streamstest.NewWithConfig(t, streams.Config{DedupWindow: 100 * time.Millisecond})
	ctx := context.Background()
	m := startManager(t, bus, newDevices(), fastConfig)
	mustCreate(t, m, rules.Spec{Name: "avg", SQL: avgQuery, Lateness: rules.D(0), IdleTimeout: rules.D(0),
		Notify: "every", Outputs: []rules.Output{{Kind: "mqtt", Topic: "out/avg"}}})
	kv, err := bus.JetStream().KeyValue(ctx, rules.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": float64(i)})
	}
	waitResults(t, m, "avg", 1)
	var old jetstream.KeyValueEntry
	eventually(t, 5*time.Second, func() bool {
		e, err := kv.Get(ctx, "avg")
		if err == nil {
			old = e
		}
		return old != nil
	}, "no checkpoint")
	for i := 15; i < 45; i++ {
		telemetry(t, bus, "d1", base.Add(time.Duration(i)*time.Second), map[string]any{"t": float64(i)})
	}
	want := summary(waitResults(t, m, "avg", 4))
	m.stop()
	if _, err := kv.Put(ctx, "avg", old.Value()); err != nil { // back to the old checkpoint
		t.Fatal(err)
	}
	m = startManager(t, bus, newDevices(), fastConfig)
	waitRunning(t, m, "avg")
	telemetry(t, bus, "d1", base.Add(60*time.Second), map[string]any{"t": 0.0})
	got := summary(waitResults(t, m, "avg", 5))
	if len(got) != 5 || !slices.Equal(got[:4], want) && !slices.Equal(withoutLast(got, "10:00:40"), want) {
		t.Errorf("after replaying from an old checkpoint:\n%s\nwant the 4 results before plus one:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	st, _ := m.Stats(ctx, "avg")
	if st.DuplicatesSkipped == 0 {
		t.Errorf("stats = %+v: no duplicate was skipped", st)
	}
	page, err := bus.Latest(ctx, []string{"out/avg"}, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 5 {
		t.Errorf("got %d notifications on out/avg, want 5 (one per result)", len(page.Messages))
	}
}

func withoutLast(lines []string, start string) []string {
	var out []string
	for _, l := range lines {
		if !strings.Contains(l, "["+start+",") {
			out = append(out, l)
		}
	}
	return out
}

func TestLateEventsAndDevices(t *testing.T) {
	bus := streamstest.New(t)
	devs := newDevices(devices.Device{ID: "d1", Type: "thermo", Tags: map[string]string{"site": "berlin"}},
		devices.Device{ID: "d2", Type: "thermo", Tags: map[string]string{"site": "paris"}},
		devices.Device{ID: "d3", Type: "door", Tags: map[string]string{"site": "paris"}})
	m := startManager(t, bus, devs, fastConfig)
	mustCreate(t, m, rules.Spec{Name: "sites", Lateness: rules.D(0), IdleTimeout: rules.D(0),
		SQL: `SELECT tags.site, count(*) AS n, max(t) AS max_t FROM 'devices/+/telemetry' WHERE type = 'thermo' GROUP BY tags.site, TUMBLING(10s)`})
	for _, d := range []string{"d1", "d2", "d3"} {
		telemetry(t, bus, d, base, map[string]any{"t": 1.0})
	}
	telemetry(t, bus, "d1", base.Add(12*time.Second), map[string]any{"t": 2.0}) // closes [0,10)
	lateSeq := telemetry(t, bus, "d2", base.Add(5*time.Second), map[string]any{"t": 3.0})
	got := waitResults(t, m, "sites", 2)
	if s := summary(got); len(s) != 2 || !strings.Contains(s[0]+s[1], `{"tags.site":"berlin"}`) || !strings.Contains(s[0]+s[1], `{"tags.site":"paris"}`) {
		t.Errorf("got %v, want one result per site", s)
	}
	var late []*streams.Envelope
	eventually(t, 5*time.Second, func() bool {
		page, err := bus.Latest(context.Background(), []string{"rules/sites/late"}, 10, 0)
		late = page.Messages
		return err == nil && len(late) == 1
	}, "late event not on rules/sites/late")
	if e := late[0]; e.Meta["disposition"] != "late" || e.Meta["source_topic"] != "devices/d2/telemetry" || e.DeviceID != "d2" ||
		e.Meta["source_seq"] != strconv.FormatUint(lateSeq, 10) {
		t.Errorf("late message = %+v", e)
	}
	st, _ := m.Stats(context.Background(), "sites")
	if st.LateEvents != 1 || st.Filtered != 1 || st.EventsIn != 5 {
		t.Errorf("stats = %+v, want 1 late, 1 filtered of 5", st)
	}
}
