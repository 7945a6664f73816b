package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"
)

type recordingTransport struct{ sent [][]byte }

func (f *recordingTransport) connect(context.Context) error { return nil }
func (f *recordingTransport) publish(_ context.Context, p []byte) error {
	f.sent = append(f.sent, p)
	return nil
}
func (f *recordingTransport) close() {}

const planDef = `
name: det
profiles:
  - name: p
    devices: 5
    protocol: mqtt
    rate: 10/s
    clock_skew: 1s
    out_of_order: 0.1
    fields:
      t: {model: sine, mean: 20, amplitude: 2, period: 2s, noise: 0.5}
      w: {model: random_walk, start: 50, step: 1, min: 0, max: 100}
      s: {model: step, values: [1, 2, 3], every: 1s}
      q: {model: sequence, values: ["a", "b"]}
      c: {model: constant, value: true}
`

// payloads runs device i of plan for n ticks without a clock and returns what it sent.
func payloads(t *testing.T, plan *Plan, i, n int) [][]byte {
	t.Helper()
	tr := &recordingTransport{}
	d := newDevice(plan, &plan.Devices[i], tr, &counters{sentMetric: metricSent.WithLabelValues("test")})
	d.connected = true
	start := time.Unix(1_800_000_000, 0)
	interval := plan.Def.Profiles[0].Rate.Interval()
	for k := range n {
		d.tick(context.Background(), start, d.plan.Phase+time.Duration(k)*interval, k)
	}
	return tr.sent
}

func mustPlan(t *testing.T, src string, seed int64) *Plan {
	t.Helper()
	def, err := Parse([]byte(src), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	return NewPlan(def, seed)
}

func TestPlanDeterministic(t *testing.T) {
	a, b, c := mustPlan(t, planDef, 7), mustPlan(t, planDef, 7), mustPlan(t, planDef, 8)
	pa, pb, pc := payloads(t, a, 3, 40), payloads(t, b, 3, 40), payloads(t, c, 3, 40)
	if len(pa) != len(pb) {
		t.Fatalf("same seed: %d and %d messages", len(pa), len(pb))
	}
	for i := range pa {
		if !bytes.Equal(pa[i], pb[i]) {
			t.Fatalf("same seed, message %d: %s vs %s", i, pa[i], pb[i])
		}
	}
	same := 0
	for i := range min(len(pa), len(pc)) {
		if bytes.Equal(pa[i], pc[i]) {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("seeds 7 and 8 give %d identical messages", same)
	}
	var m map[string]any
	if err := json.Unmarshal(pa[0], &m); err != nil {
		t.Fatalf("payload %s: %v", pa[0], err)
	}
	for _, f := range []string{"ts", "t", "w", "s", "q", "c"} {
		if _, ok := m[f]; !ok {
			t.Fatalf("payload %s lacks %s", pa[0], f)
		}
	}
}

// TestAnomaliesLeaveTheRestAlone: injecting anomalies changes values only inside their windows,
// by exactly what they say.
func TestAnomaliesLeaveTheRestAlone(t *testing.T) {
	const base = `
name: an
profiles:
  - name: p
    devices: 1
    protocol: mqtt
    rate: 10/s
    timestamps: false
    fields:
      t: {model: sine, mean: 20, amplitude: 2, period: 2s, noise: 0.5}
`
	with := base + `    anomalies:
      - {kind: spike, field: t, at: 1s, duration: 500ms, magnitude: 100}
      - {kind: stuck, field: t, at: 2s, duration: 500ms}
      - {kind: dropout, at: 3s, duration: 500ms}
      - {kind: drift, field: t, at: 3500ms, duration: 400ms, magnitude: 8}
`
	plain, anom := mustPlan(t, base, 1), mustPlan(t, with, 1)
	pp, pa := payloads(t, plain, 0, 40), payloads(t, anom, 0, 40)
	value := func(b []byte) float64 {
		var m struct{ T float64 }
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m.T
	}
	phase := plain.Devices[0].Phase
	j := 0 // index into pa, which lacks the dropout
	var stuck []float64
	for k := range 40 {
		off := phase + time.Duration(k)*100*time.Millisecond
		switch {
		case off >= 3*time.Second && off < 3500*time.Millisecond:
			continue // dropped
		case off >= time.Second && off < 1500*time.Millisecond:
			if d := value(pa[j]) - value(pp[k]); d < 99.99 || d > 100.01 {
				t.Fatalf("tick %d in the spike: %g vs %g", k, value(pa[j]), value(pp[k]))
			}
		case off >= 2*time.Second && off < 2500*time.Millisecond:
			stuck = append(stuck, value(pa[j]))
		case off >= 3500*time.Millisecond && off < 3900*time.Millisecond:
			want := 8 * float64(off-3500*time.Millisecond) / float64(400*time.Millisecond)
			if d := value(pa[j]) - value(pp[k]); d < want-0.01 || d > want+0.01 {
				t.Fatalf("tick %d in the drift: %g vs %g, want a difference of %g", k, value(pa[j]), value(pp[k]), want)
			}
		default:
			if !bytes.Equal(pa[j], pp[k]) {
				t.Fatalf("tick %d outside the windows: %s vs %s", k, pa[j], pp[k])
			}
		}
		j++
	}
	if len(pa) != 35 || len(stuck) != 5 {
		t.Fatalf("sent %d (want 35), stuck %d (want 5)", len(pa), len(stuck))
	}
	for _, v := range stuck {
		if v != stuck[0] {
			t.Fatalf("stuck values differ: %v", stuck)
		}
	}
}

const resumeDef = `
name: res
profiles:
  - name: p
    devices: 3
    protocol: mqtt
    rate: 20/s
    late: {fraction: 0.1, delay: 300ms}
    out_of_order: 0.1
    disconnects: {every: 2s, downtime: 400ms}
    bursts: {every: 1500ms, count: 3}
    fields:
      w: {model: random_walk, start: 50, step: 1}
      t: {model: sine, mean: 20, amplitude: 2, period: 2s, noise: 0.5}
      q: {model: sequence, values: [1, 2, 3, 4, 5, 6, 7]}
    anomalies:
      - {kind: spike, field: t, magnitude: 30, devices: 1, at: 3s, duration: 500ms}
`

// TestResumedDeviceCarriesOn: a device resumed at an offset (as on another hub after its
// owner died) sends exactly what the uninterrupted device sends from that point: its random
// walks, noise, late and held messages, disconnects and bursts are where they would have been.
func TestResumedDeviceCarriesOn(t *testing.T) {
	plan := mustPlan(t, resumeDef, 11)
	const end = 8 * time.Second
	// A start far enough back that every event up to end is due at once: no waiting.
	start := time.Now().Add(-time.Minute)
	run := func(i int, from time.Duration) [][]byte {
		tr := &recordingTransport{}
		d := newDevice(plan, &plan.Devices[i], tr, &counters{sentMetric: metricSent.WithLabelValues("test")})
		d.run(context.Background(), start, from, end)
		return tr.sent
	}
	for i := range plan.Devices {
		whole := run(i, 0)
		resumed := run(i, 5*time.Second)
		if len(resumed) == 0 || len(resumed) >= len(whole) {
			t.Fatalf("device %d: %d messages resumed at 5 s of %d in all", i, len(resumed), len(whole))
		}
		tail := whole[len(whole)-len(resumed):]
		for j := range resumed {
			if !bytes.Equal(resumed[j], tail[j]) {
				t.Fatalf("device %d, message %d after the resume point: %s, uninterrupted %s", i, j, resumed[j], tail[j])
			}
		}
		// Nothing due well before the resume point is sent again (late messages are due 300 ms
		// after their time, held ones with the next message).
		var first struct{ Ts int64 }
		json.Unmarshal(resumed[0], &first)
		if off := time.Duration(first.Ts-start.UnixMilli())*time.Millisecond - plan.Devices[i].Skew; off < 5*time.Second-time.Second {
			t.Errorf("device %d: first resumed message %s is from %v into the run, well before the resume point", i, resumed[0], off)
		}
	}
}
