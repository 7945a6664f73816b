package simulator_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/simtest"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// offsets are the event times (ms after base) of the messages, in the order they are stored.
var offsets = []int{0, 10, 5, 20, 30, 25, 15, 40, 100, 50, 60, 70, 120, 80, 90}

func store(t *testing.T) (*streams.Bus, time.Time) {
	bus := streamstest.New(t)
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var envs []*streams.Envelope
	for i, o := range offsets {
		dev := []string{"a", "b"}[i%2]
		envs = append(envs, &streams.Envelope{DeviceID: dev, Topic: "devices/" + dev + "/telemetry",
			EventTime: base.Add(time.Duration(o) * time.Millisecond), Payload: fmt.Appendf(nil, `{"o":%d}`, o)})
	}
	envs = append(envs, &streams.Envelope{Topic: "sandbox/r1/devices/a/telemetry", EventTime: base, Payload: []byte(`{}`)})
	simtest.Publish(t, bus.JetStream(), envs...)
	return bus, base
}

func read(t *testing.T, bus *streams.Bus, sel simulator.Selection, opts simulator.InputOptions) ([]int, simulator.InputStats) {
	t.Helper()
	src, err := simulator.NewResolver(bus.JetStream(), nil, nil).Resolve(simtest.Ctx(t), sel)
	if err != nil {
		t.Fatal(err)
	}
	in, err := simulator.OpenInput(simtest.Ctx(t), bus.JetStream(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var got []int
	for env, err := range in.All(simtest.Ctx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, int(env.EventTime.Sub(sel.From.Add(time.Second))/time.Millisecond))
	}
	return got, in.Stats()
}

func TestInputOrders(t *testing.T) {
	bus, base := store(t)
	sel := simulator.Selection{From: base.Add(-time.Second)}
	got, st := read(t, bus, sel, simulator.InputOptions{})
	if !slices.Equal(got, offsets) || st.Read != uint64(len(offsets)) {
		t.Fatalf("stream order: got %v, want %v", got, offsets)
	}
	sorted := slices.Sorted(slices.Values(offsets))
	if got, st = read(t, bus, sel, simulator.InputOptions{Order: simulator.OrderEventTime}); !slices.Equal(got, sorted) || st.Late != 0 {
		t.Fatalf("event-time order: got %v (late %d), want %v", got, st.Late, sorted)
	}
	// 15 is stored after 30 and 50 after 100: with 20ms of reordering allowed both are put in
	// place (nothing comes more than 20ms of event time after a later one was read) ...
	got, st = read(t, bus, sel, simulator.InputOptions{Order: simulator.OrderEventTime, MaxDisorder: 20 * time.Millisecond})
	want := []int{0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 120}
	if !slices.Equal(got, want) {
		t.Fatalf("bounded reordering: got %v, want %v", got, want)
	}
	// ... with 5ms they cannot be: they are yielded late, out of order.
	got, st = read(t, bus, sel, simulator.InputOptions{Order: simulator.OrderEventTime, MaxDisorder: 5 * time.Millisecond})
	if st.Late == 0 || len(got) != len(offsets) {
		t.Fatalf("tight reordering: got %v with %d late, want some late", got, st.Late)
	}
}

func TestSelectionBounds(t *testing.T) {
	bus, base := store(t)
	from := base.Add(-time.Second)
	for _, tc := range []struct {
		name string
		sel  simulator.Selection
		want []int
	}{
		{"event-time range", simulator.Selection{From: base.Add(20 * time.Millisecond), To: base.Add(70 * time.Millisecond)}, []int{20, 30, 25, 40, 50, 60}},
		{"device", simulator.Selection{From: from, Devices: []string{"b"}}, []int{10, 20, 25, 40, 50, 70, 80}},
		{"device and topic", simulator.Selection{From: from, Devices: []string{"b"}, Topics: []string{"devices/+/events/#"}}, nil},
		{"topic", simulator.Selection{From: from, Topics: []string{"devices/a/#"}}, []int{0, 5, 30, 15, 100, 60, 120, 90}},
		{"everything but the sandbox", simulator.Selection{From: from, Topics: []string{"#"}}, offsets},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := simulator.NewResolver(bus.JetStream(), nil, nil).Resolve(simtest.Ctx(t), tc.sel)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("resolved %+v, want an empty selection", src)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			in, err := simulator.OpenInput(simtest.Ctx(t), bus.JetStream(), src, simulator.InputOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var got []int
			for env, err := range in.All(simtest.Ctx(t)) {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, int(env.EventTime.Sub(base)/time.Millisecond))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
