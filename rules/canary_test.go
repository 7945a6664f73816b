package rules_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

func canarySpec(name string) rules.CanarySpec {
	return rules.CanarySpec{Name: name, Lateness: rules.D(0), IdleTimeout: rules.D(0),
		CanaryDef: rules.CanaryDef{
			Canary:   rules.Selector{Tags: []string{"fw:2.1"}},
			Control:  rules.Selector{Tags: []string{"fw:2.0"}},
			Interval: rules.D(10 * time.Second),
			Config: canary.Config{Metrics: []canary.Metric{{Field: "latency"}, {Field: "throughput", Better: "higher", Method: "mann-whitney"}},
				Intervals: 2},
		}}
}

func TestCanaryDefinitionErrors(t *testing.T) {
	bus := streamstest.New(t)
	m := startManager(t, bus, newDevices(), fastConfig)
	f := func(x float64) *float64 { return &x }
	for _, tc := range []struct {
		change func(*rules.CanarySpec)
		want   string
	}{
		{func(s *rules.CanarySpec) { s.Canary = rules.Selector{} }, `canary_group: empty: give "devices"`},
		{func(s *rules.CanarySpec) { s.Control = rules.Selector{} }, `control_group: empty`},
		{func(s *rules.CanarySpec) { s.Control = s.Canary }, "control_group: overlaps canary_group: every device of canary_group matches control_group"},
		{func(s *rules.CanarySpec) { s.Control = rules.Selector{Tags: []string{"fw:2.1"}, Type: "gw"} }, "control_group: overlaps canary_group: every device of control_group matches canary_group"},
		{func(s *rules.CanarySpec) {
			s.Canary, s.Control = rules.Selector{Devices: []string{"a", "b"}}, rules.Selector{Devices: []string{"c", "b"}}
		}, `control_group: overlaps canary_group: device "b" is in both`},
		{func(s *rules.CanarySpec) { s.Canary.Devices = []string{"a"} }, `canary_group: give "devices" alone`},
		{func(s *rules.CanarySpec) { s.Canary.Tags = []string{"fw=2.1"} }, `canary_group.tags[0]: want key:value, e.g. "fw:2.1", got "fw=2.1"`},
		{func(s *rules.CanarySpec) { s.Metrics[1].Method = "t-test" }, `metrics[1].method: unknown method "t-test": want "ratio" or "mann-whitney"`},
		{func(s *rules.CanarySpec) { s.Metrics[0].Tolerance = f(-5) }, "metrics[0].tolerance: want a fraction from 0 to 10"},
		{func(s *rules.CanarySpec) { s.Metrics = nil }, "metrics: missing"},
		{func(s *rules.CanarySpec) { s.Threshold = f(2) }, "threshold: want a share from 0 to 1"},
		{func(s *rules.CanarySpec) { s.Interval = rules.D(time.Millisecond) }, "interval: must be between 100ms and 24h0m0s, got 1ms"},
		{func(s *rules.CanarySpec) { s.Tenant = "a b" }, `tenant: "a b"`},
		{func(s *rules.CanarySpec) { s.Notify = "sometimes" }, `notify: want "every" or "change"`},
	} {
		s := canarySpec("bad")
		s.Metrics = append([]canary.Metric(nil), s.Metrics...)
		tc.change(&s)
		_, err := m.CreateCanary(context.Background(), s)
		if !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an invalid-definition error containing %q", err, tc.want)
		}
	}
	if _, err := m.GetCanary(context.Background(), "bad"); !errors.Is(err, rules.ErrNotFound) {
		t.Errorf("a refused canary exists: %v", err)
	}
	// Groups on different tags may overlap: accepted, resolved per device at run time.
	s := canarySpec("maybe")
	s.Control = rules.Selector{Type: "gw"}
	c, err := m.CreateCanary(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tenant != "default" || *c.Threshold != 0.9 || c.MinDevices != 5 || !strings.Contains(c.SQL, `WHERE (tags."fw" = '2.1') OR (type = 'gw') GROUP BY device, tags."fw", type, TUMBLING(10s)`) {
		t.Errorf("defaults or query wrong: %+v\n%s", c.CanaryDef, c.SQL)
	}
	// PUT of the stored rule (as GET /api/v1/rules/maybe answers it) keeps the canary; a change
	// of scoring is a change of meaning (a new fingerprint).
	r, err := m.Get(context.Background(), "maybe")
	if err != nil || r.Canary == nil {
		t.Fatalf("the canary as a rule: %+v, %v", r, err)
	}
	r.Canary.Threshold = f(0.5)
	r2, _, err := m.Put(context.Background(), "maybe", r.Spec)
	if err != nil || r2.Canary == nil || *r2.Canary.Threshold != 0.5 || r2.Fingerprint == c.Fingerprint || r2.SQL != c.SQL {
		t.Errorf("PUT of a canary: %+v, %v", r2, err)
	}
	// A rule is not a canary.
	mustCreate(t, m, rules.Spec{Name: "plain", SQL: avgQuery})
	if _, err := m.GetCanary(context.Background(), "plain"); !errors.Is(err, rules.ErrNotFound) {
		t.Errorf("GetCanary of a rule: %v", err)
	}
	if err := m.DeleteCanary(context.Background(), "plain"); !errors.Is(err, rules.ErrNotFound) {
		t.Errorf("DeleteCanary of a rule: %v", err)
	}
}

// fleetDevices registers n canary (fw 2.1) and n control (fw 2.0) devices.
func fleetDevices(n int) *deviceMap {
	d := newDevices()
	for i := range n {
		d.m[fmt.Sprintf("c%d", i)] = devices.Device{ID: fmt.Sprintf("c%d", i), Type: "gw", Tags: map[string]string{"fw": "2.1"}}
		d.m[fmt.Sprintf("k%d", i)] = devices.Device{ID: fmt.Sprintf("k%d", i), Type: "gw", Tags: map[string]string{"fw": "2.0"}}
	}
	d.m["other"] = devices.Device{ID: "other", Type: "gw", Tags: map[string]string{"fw": "1.0"}}
	return d
}

// sendInterval publishes readings of every device for interval k (10s each from base).
func sendInterval(t *testing.T, bus *streams.Bus, rng *rand.Rand, n, k int, canaryLatency float64) {
	for s := range 5 {
		at := base.Add(time.Duration(k)*10*time.Second + time.Duration(s)*2*time.Second)
		for i := range n {
			telemetry(t, bus, fmt.Sprintf("c%d", i), at, map[string]any{"latency": canaryLatency * (1 + 0.02*rng.NormFloat64()), "throughput": 500 + rng.NormFloat64()})
			telemetry(t, bus, fmt.Sprintf("k%d", i), at, map[string]any{"latency": 100 * (1 + 0.02*rng.NormFloat64()), "throughput": 500 + rng.NormFloat64()})
		}
		telemetry(t, bus, "other", at, map[string]any{"latency": 1e6})
	}
}

// TestCanaryRuntime: a canary with 30% higher latency fails every interval with latency classed
// high, alerts, and keeps its verdict history across a restart; a canary equal to its
// control passes.
func TestCanaryRuntime(t *testing.T) {
	bus := streamstest.New(t)
	devs := fleetDevices(6)
	m := startManager(t, bus, devs, fastConfig)
	ctx := context.Background()
	same := canarySpec("same") // half the control group against the other half
	same.Canary, same.Control = rules.Selector{Devices: []string{"k0", "k1", "k2"}}, rules.Selector{Devices: []string{"k3", "k4", "k5"}}
	for _, s := range []rules.CanarySpec{canarySpec("worse"), same} {
		if _, err := m.CreateCanary(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitRunning(t, m, s.Name)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sendInterval(t, bus, rng, 6, 0, 130)
	sendInterval(t, bus, rng, 6, 1, 130)
	sendInterval(t, bus, rng, 6, 2, 130) // closes interval 1
	got := waitResults(t, m, "worse", 2)
	for i, r := range got {
		v := r.Values
		if v["status"] != "fail" || v["score"] != 0.5 || v["latency.class"] != "high" || v["throughput.class"] != "same" ||
			v["canary_devices"] != 6.0 || v["control_devices"] != 6.0 || v["verdict"] != "fail" || v["verdict_intervals"] != float64(i+1) {
			t.Errorf("interval %d: %v", i, v)
		}
		if w := v["warnings"].([]any); len(w) != 0 { // 6 devices × 5 readings: big enough
			t.Errorf("interval %d: warnings %v", i, w)
		}
		if r.ID != fmt.Sprintf("worse/%d-%d/canary", r.WindowStart.UnixNano(), r.WindowEnd.UnixNano()) || r.WindowEnd.Sub(r.WindowStart) != 10*time.Second {
			t.Errorf("interval %d: id %s window %s-%s", i, r.ID, r.WindowStart, r.WindowEnd)
		}
	}
	st, err := m.Stats(ctx, "worse")
	if err != nil || st.Notifications != 2 {
		t.Errorf("worse: %d notifications (%v), want 2: one alert per failing interval", st.Notifications, err)
	}
	for _, r := range waitResults(t, m, "same", 2) {
		v := r.Values
		w := fmt.Sprint(v["warnings"])
		if v["status"] != "pass" || v["score"] != 1.0 || v["latency.class"] != "same" || v["verdict"] != "pass" ||
			!strings.Contains(w, "canary group: 3 devices, fewer than 5") || !strings.Contains(w, "control group: 15 samples of latency, fewer than 30") {
			t.Errorf("same: %v", v)
		}
	}
	if st, _ := m.Stats(ctx, "same"); st.Notifications != 0 {
		t.Errorf("same: %d notifications, want none", st.Notifications)
	}

	// Restart: the verdict history (2 intervals) survives, so the next interval's verdict
	// still averages two intervals.
	m.stop()
	m = startManager(t, bus, devs, fastConfig)
	waitRunning(t, m, "worse")
	sendInterval(t, bus, rng, 6, 3, 100) // closes interval 2 (worse), interval 3 equal
	sendInterval(t, bus, rng, 6, 4, 100) // closes interval 3
	sendInterval(t, bus, rng, 6, 5, 100) // closes interval 4
	got = waitResults(t, m, "worse", 5)
	if len(got) != 5 {
		t.Fatalf("%d results after the restart, want 5 (none repeated): %v", len(got), summary(got))
	}
	v2, v3, v4 := got[2].Values, got[3].Values, got[4].Values
	if v2["status"] != "fail" || v2["verdict_intervals"] != 2.0 || v2["verdict"] != "fail" {
		t.Errorf("interval 2: %v", v2)
	}
	if v3["status"] != "pass" || v3["score"] != 1.0 || v3["latency.class"] != "same" || v3["verdict_score"] != 0.75 || v3["verdict"] != "fail" {
		t.Errorf("interval 3 (canary back to normal, verdict over 2 intervals still failing): %v", v3)
	}
	if v4["status"] != "pass" || v4["verdict_score"] != 1.0 || v4["verdict"] != "pass" {
		t.Errorf("interval 4: %v", v4)
	}
	c, err := m.GetCanary(ctx, "worse")
	if err != nil || c.Latest == nil || c.Latest.ID != got[4].ID {
		t.Errorf("GetCanary latest = %+v, %v; want interval 4", c.Latest, err)
	}
	if st, _ := m.Stats(ctx, "worse"); st.Notifications != 4 {
		t.Errorf("%d notifications, want 4 (intervals 0-3 end with a failing verdict)", st.Notifications)
	}
}

// TestCanaryIgnoresNonNumbers: a reading whose metric is not a number counts neither in the
// mean nor in the number of samples.
func TestCanaryIgnoresNonNumbers(t *testing.T) {
	bus := streamstest.New(t)
	m := startManager(t, bus, fleetDevices(5), fastConfig)
	s := canarySpec("strs")
	s.Metrics = []canary.Metric{{Field: "latency"}}
	if _, err := m.CreateCanary(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, m, "strs")
	for i := range 5 {
		telemetry(t, bus, fmt.Sprintf("c%d", i), base, map[string]any{"latency": 100.0})
		telemetry(t, bus, fmt.Sprintf("c%d", i), base.Add(time.Second), map[string]any{"latency": "n/a"})
		telemetry(t, bus, fmt.Sprintf("k%d", i), base, map[string]any{"latency": 100.0})
	}
	telemetry(t, bus, "k0", base.Add(10*time.Second), map[string]any{"latency": 100.0})
	r := waitResults(t, m, "strs", 1)[0]
	ms := r.Values["metrics"].([]any)[0].(map[string]any)
	if ms["canary_samples"] != 5.0 || ms["control_samples"] != 5.0 || ms["canary_mean"] != 100.0 || ms["class"] != "same" {
		t.Errorf("latency: %v", ms)
	}
}
