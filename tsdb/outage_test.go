package tsdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestWriterSurvivesInfluxOutage stops InfluxDB during a steady publish and restarts it: every
// message is stored exactly once, and the outage shows as lag and an unhealthy status.
func TestWriterSurvivesInfluxOutage(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	srv := influxtest.Start(t)
	db := influxtest.DB{URL: srv.URL, Org: srv.Org, Token: srv.Token, Database: srv.Database, Bucket: srv.Bucket}
	cfg := testConfig(db)
	cfg.BatchSize, cfg.MaxAckPending = 100, 400
	w := newWriter(t, bus, cfg, tsdb.TelemetryMapping(nil, ""))
	startWriter(t, w)

	const n = 3000
	published := make(chan int, n)
	go func() {
		defer close(published)
		tick := time.NewTicker(time.Millisecond) // a steady rate, about 1000 messages/s
		defer tick.Stop()
		for i := range n {
			<-tick.C
			if _, err := bus.Publish(context.Background(), telemetry("d1", base.Add(time.Duration(i)*time.Second), map[string]any{"n": i})); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			published <- i
		}
	}()
	for i := range published {
		if i == n/4 {
			break
		}
	}
	srv.Stop()
	eventually(t, 30*time.Second, func() bool {
		lag, err := w.Lag(context.Background())
		return !w.Status().Healthy && err == nil && lag > 0
	}, "outage not visible: status %+v", w.Status())
	st := w.Status()
	if st.LastError == "" || st.FailingSince.IsZero() {
		t.Errorf("got status %+v during the outage, want last error and failing since", st)
	}
	if v := gauge(t, "tributary_tsdb_up", w.Consumer()); v != 0 {
		t.Errorf("got tributary_tsdb_up %v during the outage, want 0", v)
	}
	eventually(t, 10*time.Second, func() bool { return gauge(t, "tributary_tsdb_consumer_lag", w.Consumer()) > 0 }, "lag gauge stayed 0")
	for range published { // the rest of the publish happens during the outage
	}
	// Memory stays bounded: the writer holds at most MaxAckPending messages, the stream the rest.
	cons, err := bus.JetStream().Consumer(context.Background(), streams.StreamMessages, w.Consumer())
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	if info.NumAckPending > cfg.MaxAckPending || info.NumPending == 0 {
		t.Errorf("during the outage: got %d held and %d waiting in the stream, want at most %d held and the rest waiting",
			info.NumAckPending, info.NumPending, cfg.MaxAckPending)
	}
	srv.Restart()

	checkExactlyOnce(t, db, "d1", n)
	eventually(t, 30*time.Second, func() bool {
		lag, err := w.Lag(context.Background())
		return w.Status().Healthy && err == nil && lag == 0
	}, "did not catch up: status %+v", w.Status())
}
