package tsdb_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestWritersOfTwoInstances: two hub instances' writers share one durable consumer, so each
// message goes to one of them; when one instance dies (its NATS connection drops with messages
// fetched and not acknowledged), JetStream redelivers those to the other after AckWait, and
// every point is stored exactly once.
func TestWritersOfTwoInstances(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	other := streamstest.NewWithConfig(t, streams.Config{URL: bus.ClientURL()}) // another instance's connection
	db := influxtest.Shared(t).NewDB(t)
	cfg := testConfig(db)
	cfg.BatchSize, cfg.MaxAckPending = 50, 200
	const n = 2000
	for i := range n {
		publish(t, bus, telemetry("d1", base.Add(time.Duration(i)*time.Second), map[string]any{"n": i}))
	}
	w1 := newWriter(t, bus, cfg, tsdb.TelemetryMapping(nil, ""))
	w2 := newWriter(t, other, cfg, tsdb.TelemetryMapping(nil, ""))
	if w1.Consumer() != w2.Consumer() {
		t.Fatalf("instances use consumers %q and %q, want one shared", w1.Consumer(), w2.Consumer())
	}
	startWriter(t, w1)
	startWriter(t, w2)
	eventually(t, 60*time.Second, func() bool { return w2.Status().Written >= 100 && w1.Status().Written >= 100 },
		"both writers should share the work: written %d and %d", w1.Status().Written, w2.Status().Written)
	other.Close() // the second instance dies: what it fetched stays unacknowledged
	died := time.Now()
	checkExactlyOnce(t, db, "d1", n)
	t.Logf("first writer wrote %d messages, the dead one %d; all %d stored once %v after the death (AckWait %v)",
		w1.Status().Written, w2.Status().Written, n, time.Since(died).Round(time.Millisecond), cfg.AckWait)
}

// TestDeadWritersMessagesRedelivered: an instance dies holding messages it fetched but could not
// write yet (its InfluxDB requests hang); the surviving instance's writer gets them after
// AckWait and stores each once.
func TestDeadWritersMessagesRedelivered(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	other := streamstest.NewWithConfig(t, streams.Config{URL: bus.ClientURL()})
	db := influxtest.Shared(t).NewDB(t)
	// An InfluxDB that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go io.Copy(io.Discard, c)
		}
	}()
	cfg := testConfig(db)
	cfg.BatchSize, cfg.MaxAckPending = 50, 100
	hung := cfg
	hung.URL = "http://" + ln.Addr().String()
	m := tsdb.TelemetryMapping(nil, "")
	m.Durable = "tsdb-shared"
	const n = 300
	for i := range n {
		publish(t, bus, telemetry("d1", base.Add(time.Duration(i)*time.Second), map[string]any{"n": i}))
	}
	w2 := newWriter(t, other, hung, m)
	startWriter(t, w2)
	cons, err := bus.JetStream().Consumer(context.Background(), streams.StreamMessages, m.Durable)
	if err != nil {
		t.Fatal(err)
	}
	var held int
	eventually(t, 30*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		held = 0
		if err == nil {
			held = info.NumAckPending
		}
		return held >= 50
	}, "the hanging writer holds %d messages, want at least 50", held)
	other.Close() // it dies holding them
	died := time.Now()
	w1 := newWriter(t, bus, cfg, m)
	startWriter(t, w1)
	checkExactlyOnce(t, db, "d1", n)
	if w2.Status().Written != 0 {
		t.Errorf("the hanging writer wrote %d messages, want 0", w2.Status().Written)
	}
	t.Logf("the dead writer held %d messages; all %d stored once by the survivor %v after the death (AckWait %v)",
		held, n, time.Since(died).Round(time.Millisecond), cfg.AckWait)
}
