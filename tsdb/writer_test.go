package tsdb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

func TestWriterStoresTelemetryWithTagsFieldsAndTimes(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	db := influxtest.Shared(t).NewDB(t)
	reg, err := devices.New(context.Background(), bus.JetStream(), devices.Config{}, streamstest.Logger(t))
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	if _, _, err := reg.Create(context.Background(), devices.Device{ID: "therm-1", Type: "thermostat", Tags: map[string]string{"site": "berlin", "device": "spoof"}}); err != nil {
		t.Fatalf("create device: %v", err)
	}
	w := newWriter(t, bus, testConfig(db), tsdb.TelemetryMapping(reg, ""))
	startWriter(t, w)

	t1, t2 := base.Add(1500*time.Millisecond+123), base.Add(time.Minute)
	publish(t, bus,
		telemetry("therm-1", t1, map[string]any{"temperature": 21, "door": false, "fw": "1.2", "env": map[string]any{"rh": 40.5}, "time": "noon"}),
		telemetry("ghost", t2, map[string]any{"temperature": 19.5}),
	)
	// A SenML pack with two times: the second keeps its offset from the first.
	senml := &streams.Envelope{DeviceID: "therm-1", Topic: "devices/therm-1/telemetry", ContentType: "application/senml+json",
		EventTime: base.Add(2 * time.Hour), Payload: []byte(`[{"bn":"p.","bt":1704074400,"n":"a","v":1},{"n":"a","t":10,"v":2}]`)}
	senml.Stamp(time.Now())
	publish(t, bus, senml)

	var rows []row
	eventually(t, 60*time.Second, func() bool {
		rows = stored(t, db, "therm-1", base, base.Add(3*time.Hour))
		return len(rows) == 7
	}, "got %d rows of therm-1, want 7", len(rows))
	want := map[string]struct {
		at time.Time
		v  any
	}{
		"temperature": {t1, 21.0}, // integers are stored as floats
		"door":        {t1, false},
		"fw":          {t1, "1.2"},
		"env.rh":      {t1, 40.5},
		"time_":       {t1, "noon"}, // InfluxDB refuses the field name "time"
	}
	wantTags := map[string]string{"device": "therm-1", "type": "thermostat", "tag_site": "berlin", "tag_device": "spoof"}
	var senmlTimes []time.Time
	for _, r := range rows {
		for k, v := range wantTags {
			if r.Tags[k] != v {
				t.Errorf("field %s: got tag %s=%q, want %q (tags %v)", r.Field, k, r.Tags[k], v, r.Tags)
			}
		}
		if r.Field == "p.a" {
			senmlTimes = append(senmlTimes, r.Time)
			continue
		}
		w, ok := want[r.Field]
		if !ok {
			t.Errorf("got unexpected field %q", r.Field)
			continue
		}
		if !r.Time.Equal(w.at) || r.Value != w.v {
			t.Errorf("field %s: got %v at %s, want %v at %s", r.Field, r.Value, r.Time.Format(time.RFC3339Nano), w.v, w.at.Format(time.RFC3339Nano))
		}
	}
	wantSenML := []time.Time{base.Add(2 * time.Hour), base.Add(2*time.Hour + 10*time.Second)}
	if len(senmlTimes) != 2 || !senmlTimes[0].Equal(wantSenML[0]) || !senmlTimes[1].Equal(wantSenML[1]) {
		t.Errorf("got SenML times %v, want %v", senmlTimes, wantSenML)
	}

	// An unknown device is stored under its device tag alone.
	var ghost []row
	eventually(t, 30*time.Second, func() bool {
		ghost = stored(t, db, "ghost", base, base.Add(time.Hour))
		return len(ghost) == 1
	}, "got %d rows of ghost, want 1", len(ghost))
	if g := ghost[0]; len(g.Tags) != 1 || g.Tags["device"] != "ghost" || g.Value != 19.5 || !g.Time.Equal(t2) {
		t.Errorf("got ghost row %+v, want device tag only, 19.5 at %s", g, t2)
	}

	eventually(t, 10*time.Second, func() bool {
		lag, err := w.Lag(context.Background())
		return err == nil && lag == 0
	}, "lag did not reach 0")
	st := w.Status()
	if !st.Running || !st.Healthy || st.Written != 3 || st.Consumer != w.Consumer() {
		t.Errorf("got status %+v, want running, healthy, 3 written", st)
	}
	if v := gauge(t, "tributary_tsdb_up", w.Consumer()); v != 1 {
		t.Errorf("got tributary_tsdb_up %v, want 1", v)
	}
}

// gauge reads a metric of the default registry labelled with the consumer.
func gauge(t testing.TB, name, consumer string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "consumer" && l.GetValue() == consumer {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func TestWriterDeadLettersRejectedAndUnmappableMessages(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	db := influxtest.Shared(t).NewDB(t)
	w := newWriter(t, bus, testConfig(db), tsdb.TelemetryMapping(nil, ""))

	// Neighbours in one batch: the writer starts after they are all in the stream.
	envs := []*streams.Envelope{
		telemetry("d1", base.Add(1*time.Second), map[string]any{"temp": 1.5, "n": 1}),
		telemetry("d1", base.Add(2*time.Second), map[string]any{"temp": 2.5, "n": 2}),
		telemetry("d1", base.Add(3*time.Second), map[string]any{"temp": "hot", "n": 3}), // type conflict
		telemetry("d1", base.Add(4*time.Second), map[string]any{"temp": 4.5, "n": 4}),
	}
	bad := &streams.Envelope{DeviceID: "d1", Topic: "devices/d1/telemetry", EventTime: base.Add(5 * time.Second), Payload: []byte("not telemetry")}
	bad.Stamp(time.Now())
	envs = append(envs, bad, telemetry("d1", base.Add(6*time.Second), map[string]any{"temp": 6.5, "n": 6}))
	publish(t, bus, envs...)
	startWriter(t, w)

	eventually(t, 60*time.Second, func() bool {
		lag, err := w.Lag(context.Background())
		return err == nil && lag == 0
	}, "the stream was not consumed")
	var temps []any
	for _, r := range stored(t, db, "d1", base, base.Add(time.Minute)) {
		if r.Field == "temp" {
			temps = append(temps, r.Value)
		}
	}
	if want := []any{1.5, 2.5, 4.5, 6.5}; !equalAny(temps, want) {
		t.Errorf("got stored temps %v, want %v", temps, want)
	}
	page, err := bus.DeadLetters(context.Background(), "d1", 10, 0)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	if len(page.Messages) != 2 {
		t.Fatalf("got %d dead letters, want 2", len(page.Messages))
	}
	conflict, unmappable := page.Messages[0], page.Messages[1]
	if string(conflict.Payload) == "not telemetry" {
		conflict, unmappable = unmappable, conflict
	}
	if reason := conflict.Meta[streams.MetaReason]; !strings.Contains(reason, "field type conflict") || !strings.Contains(string(conflict.Payload), "hot") {
		t.Errorf("got dead letter %q with reason %q, want the \"hot\" message with InfluxDB's field type conflict", conflict.Payload, reason)
	}
	if reason := unmappable.Meta[streams.MetaReason]; !strings.Contains(reason, "cannot store") || string(unmappable.Payload) != "not telemetry" {
		t.Errorf("got dead letter %q with reason %q, want the undecodable message", unmappable.Payload, reason)
	}
	if st := w.Status(); st.DeadLettered != 2 || st.Written != 4 {
		t.Errorf("got status %+v, want 4 written and 2 dead-lettered", st)
	}
}

func equalAny(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWriterRedeliveryIsIdempotent(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	db := influxtest.Shared(t).NewDB(t)
	cfg := testConfig(db)
	cfg.BatchSize, cfg.MaxAckPending = 50, 100
	const n = 1000
	for i := range n {
		publish(t, bus, telemetry("d1", base.Add(time.Duration(i)*time.Second), map[string]any{"n": i}))
	}
	w1 := newWriter(t, bus, cfg, tsdb.TelemetryMapping(nil, ""))
	stop := startWriter(t, w1)
	eventually(t, 60*time.Second, func() bool { return w1.Status().Written >= n/4 }, "first writer wrote %d, want %d", w1.Status().Written, n/4)
	stop() // mid-stream: held messages go back to the stream

	w2 := newWriter(t, bus, cfg, tsdb.TelemetryMapping(nil, ""))
	if w2.Consumer() != w1.Consumer() {
		t.Fatalf("got consumer %q for the same InfluxDB, want %q", w2.Consumer(), w1.Consumer())
	}
	stop = startWriter(t, w2)
	checkExactlyOnce(t, db, "d1", n)
	stop()

	// Replay everything: a new consumer rewrites all points, and nothing is duplicated.
	if err := bus.JetStream().DeleteConsumer(context.Background(), streams.StreamMessages, w1.Consumer()); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	w3 := newWriter(t, bus, cfg, tsdb.TelemetryMapping(nil, ""))
	startWriter(t, w3)
	eventually(t, 60*time.Second, func() bool { return w3.Status().Written == n }, "replay wrote %d, want %d", w3.Status().Written, n)
	checkExactlyOnce(t, db, "d1", n)
}

// checkExactlyOnce waits until field n of device holds 0..count-1, each exactly once.
func checkExactlyOnce(t *testing.T, db influxtest.DB, device string, count int) {
	t.Helper()
	var rows []row
	eventually(t, 90*time.Second, func() bool {
		rows = stored(t, db, device, base.Add(-time.Hour), base.Add(100*24*time.Hour))
		return len(rows) >= count
	}, "got %d points, want %d", len(rows), count)
	seen := make([]int, count)
	for _, r := range rows {
		v, ok := r.Value.(float64)
		if !ok || r.Field != "n" || v < 0 || int(v) >= count {
			t.Fatalf("got unexpected point %+v", r)
		}
		seen[int(v)]++
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("value %d stored %d times, want once", i, c)
		}
	}
	if len(rows) != count {
		t.Errorf("got %d points, want %d", len(rows), count)
	}
}

func TestNewWriterValidates(t *testing.T) {
	bus := streamstest.New(t)
	log := streamstest.Logger(t)
	m := tsdb.TelemetryMapping(nil, "")
	for _, tc := range []struct {
		name string
		cfg  tsdb.Config
		m    tsdb.Mapping
		want string
	}{
		{"no url", tsdb.Config{}, m, "influx_url"},
		{"bad url", tsdb.Config{URL: "localhost:8086"}, m, "influx_url"},
		{"negative batch", tsdb.Config{URL: "http://x", BatchSize: -1}, m, "batch_size"},
		{"small max ack pending", tsdb.Config{URL: "http://x", BatchSize: 100, MaxAckPending: 10}, m, "max_ack_pending"},
		{"backoff order", tsdb.Config{URL: "http://x", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, m, "min_backoff"},
		{"no mapper", tsdb.Config{URL: "http://x"}, tsdb.Mapping{Subject: "iot.>"}, "Map"},
		{"no subject", tsdb.Config{URL: "http://x"}, tsdb.Mapping{Map: m.Map}, "subject"},
	} {
		_, err := tsdb.NewWriter(bus, tc.cfg, tc.m, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one naming %s", tc.name, err, tc.want)
		}
	}
	if _, err := tsdb.NewWriter(bus, tsdb.Config{URL: "http://127.0.0.1:1"}, m, log); err != nil {
		t.Errorf("got %v for a valid config, want nil", err)
	}
}
