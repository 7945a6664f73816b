package devices

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// dropStatus stores nothing: the instance using it dies, in effect, between writing a status
// record and publishing the event.
type dropStatus struct{}

func (dropStatus) Publish(context.Context, *streams.Envelope) (uint64, error) { return 0, nil }

// TestLostInstanceEventsPublishedAgain: instance A writes a device online and dies before (or
// after) publishing the event; instance B, seeing A silent, publishes A's last event again and
// then marks the device offline. The stream holds online then offline, each exactly once,
// whether or not A's event went out.
func TestLostInstanceEventsPublishedAgain(t *testing.T) {
	for _, tt := range []struct {
		name      string
		published bool
	}{{"event lost with A", false}, {"event published before A died", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			bus := streamstest.New(t)
			js := bus.JetStream()
			log := streamstest.Logger(t)
			reg, err := New(ctx, js, Config{}, log)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := reg.Create(ctx, Device{ID: "d1"}); err != nil {
				t.Fatal(err)
			}
			types, err := newTypes(ctx, js, 1, log)
			if err != nil {
				t.Fatal(err)
			}
			cfg := LivenessConfig{HeartbeatInterval: 100 * time.Millisecond, SweepInterval: 50 * time.Millisecond}
			var pubA Publisher = dropStatus{}
			if tt.published {
				pubA = bus
			}
			a, err := newLiveness(ctx, js, reg, types, pubA, cfg, 1, log)
			if err != nil {
				t.Fatal(err)
			}
			// A writes the device online and then does nothing more: no heartbeats, no stop.
			a.Connected("d1", "mqtt", "127.0.0.1:50000")
			a.flush(ctx)
			if got := a.StatusOf("d1"); got != StatusOnline {
				t.Fatalf("after A's write: %q, want online", got)
			}

			b, err := newLiveness(ctx, js, reg, types, bus, cfg, 1, log)
			if err != nil {
				t.Fatal(err)
			}
			bctx, stopB := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- b.Run(bctx) }()
			defer func() { stopB(); <-done }()

			var events []StatusEvent
			for deadline := time.Now().Add(10 * time.Second); ; {
				events = readStatusEvents(t, js, "d1")
				if len(events) >= 2 || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // several more sweeps: nothing more may come
			events = readStatusEvents(t, js, "d1")
			if len(events) != 2 || events[0].Status != StatusOnline || events[0].Reason != "connected" ||
				events[1].Status != StatusOffline || events[1].Reason != "hub instance lost" {
				t.Fatalf("status events %+v; want online (connected), then offline (hub instance lost), once each", events)
			}
		})
	}
}

func readStatusEvents(t *testing.T, js jetstream.JetStream, id string) []StatusEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, streams.StreamMessages, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"iot.devices." + id + ".status"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []StatusEvent
	for {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev StatusEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatalf("status event %q: %v", m.Data(), err)
			}
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}
