package rules_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// base is the event time of the tests' first events: a Monday, at a minute boundary.
var base = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// fastConfig checkpoints and advances often, so tests do not wait.
var fastConfig = rules.Config{CheckpointInterval: 50 * time.Millisecond, AdvanceInterval: 20 * time.Millisecond, Slack: 1}

// deviceMap is a registry for tests.
type deviceMap struct {
	mu sync.Mutex
	m  map[string]devices.Device
}

func (d *deviceMap) Get(id string) (devices.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev, ok := d.m[id]
	if !ok {
		return devices.Device{}, devices.ErrNotFound
	}
	return dev, nil
}

func newDevices(devs ...devices.Device) *deviceMap {
	d := &deviceMap{m: map[string]devices.Device{}}
	for _, dev := range devs {
		d.m[dev.ID] = dev
	}
	return d
}

// running is a Manager running until stop or the end of the test.
type running struct {
	*rules.Manager
	stop func()
}

func startManager(t *testing.T, bus *streams.Bus, devs rules.DeviceLookup, cfg rules.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m, err := rules.New(ctx, bus, devs, cfg, streamstest.Logger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("manager stopped while starting: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("manager not ready after 10s")
	}
	r := &running{Manager: m}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager stopped with %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("manager did not stop within 20s")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

func mustCreate(t *testing.T, m *running, spec rules.Spec) rules.Rule {
	t.Helper()
	r, err := m.Create(context.Background(), spec)
	if err != nil {
		t.Fatalf("create %s: %v", spec.Name, err)
	}
	waitRunning(t, m, spec.Name)
	return r
}

func waitRunning(t *testing.T, m *running, name string) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		s, err := m.Stats(context.Background(), name)
		return err == nil && s.Running && !s.CatchingUp
	}, "rule %s not running", name)
}

// telemetry publishes one JSON telemetry message of device at event time at.
func telemetry(t *testing.T, bus *streams.Bus, device string, at time.Time, fields map[string]any) uint64 {
	t.Helper()
	body, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	env := &streams.Envelope{DeviceID: device, Topic: "devices/" + device + "/telemetry", EventTime: at,
		ContentType: "application/json", Protocol: "mqtt", Payload: body}
	env.Stamp(time.Now())
	seq, err := bus.Publish(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// results returns every stored result of rule, failing on a window seen twice.
func results(t *testing.T, m *running, rule string) []rules.StoredResult {
	t.Helper()
	page, err := m.Results(context.Background(), rule, rules.ResultsQuery{Limit: rules.MaxResults})
	if err != nil {
		t.Fatalf("results of %s: %v", rule, err)
	}
	seen := map[string]bool{}
	for _, r := range page.Results {
		if seen[r.ID] {
			t.Errorf("result %s published twice", r.ID)
		}
		seen[r.ID] = true
	}
	return page.Results
}

func waitResults(t *testing.T, m *running, rule string, n int) []rules.StoredResult {
	t.Helper()
	var got []rules.StoredResult
	eventually(t, 15*time.Second, func() bool {
		got = results(t, m, rule)
		return len(got) >= n
	}, "rule %s: want %d results", rule, n)
	return got
}

// summary renders results as sorted lines "group [start,end) values" for comparisons.
func summary(rs []rules.StoredResult) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		v, _ := json.Marshal(r.Values)
		g, _ := json.Marshal(r.Group)
		out = append(out, fmt.Sprintf("%s %s [%s,%s) %s", r.ID, g, r.WindowStart.Format("15:04:05"), r.WindowEnd.Format("15:04:05"), v))
	}
	slices.Sort(out)
	return out
}

func eventually(t testing.TB, d time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
