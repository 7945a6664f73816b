package tsdb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

func TestMain(m *testing.M) { os.Exit(influxtest.Main(m)) }

// base is a fixed event time for tests, well inside one InfluxDB shard group (shard groups
// of autogen span a week starting on Thursdays, 00:00 UTC): field types are fixed per shard,
// so a type conflict needs its points in one shard.
var base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// testConfig is a writer config for db with quick retries.
func testConfig(db influxtest.DB) tsdb.Config {
	return tsdb.Config{
		URL: db.URL, Token: db.Token, Org: db.Org, Bucket: db.Bucket,
		BatchSize:     500,
		FlushInterval: 20 * time.Millisecond,
		AckWait:       5 * time.Second,
		WriteTimeout:  5 * time.Second,
		MinBackoff:    20 * time.Millisecond,
		MaxBackoff:    200 * time.Millisecond,
		LagInterval:   100 * time.Millisecond,
	}
}

// startWriter runs w until the test ends (or stop is called) and waits for its consumer.
func startWriter(t *testing.T, w *tsdb.Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("writer Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("writer did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("writer stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("writer not ready within 30s")
	}
	return stop
}

func newWriter(t *testing.T, bus *streams.Bus, cfg tsdb.Config, m tsdb.Mapping) *tsdb.Writer {
	t.Helper()
	w, err := tsdb.NewWriter(bus, cfg, m, streamstest.Logger(t))
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	return w
}

// telemetry builds a device telemetry envelope with an explicit event time.
func telemetry(device string, at time.Time, fields map[string]any) *streams.Envelope {
	body, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	env := &streams.Envelope{
		DeviceID:    device,
		Topic:       "devices/" + device + "/telemetry",
		EventTime:   at,
		ContentType: "application/json",
		Protocol:    "mqtt",
		Payload:     body,
	}
	env.Stamp(time.Now())
	return env
}

func publish(t testing.TB, bus *streams.Bus, envs ...*streams.Envelope) {
	t.Helper()
	for _, env := range envs {
		if _, err := bus.Publish(context.Background(), env); err != nil {
			t.Fatalf("publish %s: %v", env, err)
		}
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// row is one record of our own Flux queries.
type row struct {
	Time  time.Time
	Field string
	Value any
	Tags  map[string]string
}

// fluxRows runs flux against db and returns every record.
func fluxRows(t testing.TB, db influxtest.DB, flux string) ([]row, error) {
	t.Helper()
	c := influxdb2.NewClient(db.URL, db.Token)
	defer c.Close()
	res, err := c.QueryAPI(db.Org).Query(context.Background(), flux)
	if err != nil {
		return nil, err
	}
	var rows []row
	for res.Next() {
		r := res.Record()
		tags := map[string]string{}
		for k, v := range r.Values() {
			if s, ok := v.(string); ok && k != "_field" && k != "_measurement" && k != "result" && k != "_value" {
				tags[k] = s
			}
		}
		rows = append(rows, row{Time: r.Time().UTC(), Field: r.Field(), Value: r.Value(), Tags: tags})
	}
	return rows, res.Err()
}

// stored returns all telemetry rows of a device in [from, to).
func stored(t testing.TB, db influxtest.DB, device string, from, to time.Time) []row {
	t.Helper()
	rows, err := fluxRows(t, db, fmt.Sprintf(`from(bucket: %q)
  |> range(start: %s, stop: %s)
  |> filter(fn: (r) => r._measurement == "telemetry" and r.device == %q)
  |> filter(fn: (r) => r._time < %s)`, db.Bucket, from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano), device, to.Format(time.RFC3339Nano)))
	if err != nil {
		t.Fatalf("flux: %v", err)
	}
	return rows
}
