package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/streams/window"
)

// canaryRun simulates one rollout and runs it through what a live canary runs — the compiled
// query on the window engine, then the scoring of each closed interval — and returns the
// final verdict and how many intervals failed. The fleet: 10 devices on firmware 2.1 and 10
// on 2.0, one reading per device every 10s, latency about 100 ms and throughput about 500
// with a per-device baseline spread of 5% (persistent across intervals, as real devices
// differ) and 10% reading noise. The canary devices' latency is multiplied by 1+shift.
func canaryRun(t testing.TB, seed uint64, method string, tolerance, shift float64, intervals int) (canary.Verdict, int) {
	spec := CanarySpec{Name: "eval", Lateness: D(0), IdleTimeout: D(0), CanaryDef: CanaryDef{
		Canary: Selector{Tags: []string{"fw:2.1"}}, Control: Selector{Tags: []string{"fw:2.0"}}, Interval: D(time.Minute),
		Config: canary.Config{Metrics: []canary.Metric{{Field: "latency", Method: method, Tolerance: &tolerance},
			{Field: "throughput", Better: "higher", Method: method, Tolerance: &tolerance}}},
	}}
	rs := spec.ruleSpec()
	c, err := compile(&rs)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := window.New(c.plan, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	type dev struct {
		id, fw        string
		lat, thr, mul float64
	}
	var fleet []dev
	for i := range 20 {
		d := dev{id: fmt.Sprintf("d%02d", i), fw: "2.0", lat: 100 * (1 + 0.05*rng.NormFloat64()), thr: 500 * (1 + 0.05*rng.NormFloat64()), mul: 1}
		if i%2 == 1 {
			d.fw, d.mul = "2.1", 1+shift
		}
		fleet = append(fleet, d)
	}
	t0 := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	var hist []canary.Outcome
	var v canary.Verdict
	failed := 0
	handle := func(res []window.Result) {
		for i := 0; i < len(res); {
			j := i + 1
			for j < len(res) && res[j].WindowEnd.Equal(res[i].WindowEnd) {
				j++
			}
			var iv canary.Interval
			iv, hist, v = c.canary.score(hist, res[i:j])
			if iv.Status == canary.StatusFail {
				failed++
			}
			i = j
		}
	}
	var seq uint64
	for step := range intervals * 6 {
		at := t0.Add(time.Duration(step) * 10 * time.Second)
		for _, d := range fleet {
			seq++
			res, _ := eng.Process(window.Event{Time: at, Received: at, Device: d.id, Type: "gw", Tags: map[string]string{"fw": d.fw}, Seq: seq,
				Fields: map[string]any{"latency": d.lat * d.mul * (1 + 0.1*rng.NormFloat64()), "throughput": d.thr * (1 + 0.1*rng.NormFloat64())}})
			handle(res)
		}
	}
	handle(eng.Flush())
	return v, failed
}

// TestCanaryEvaluation measures, over 50 simulated rollouts per case, how often a canary
// whose latency is degraded is caught (final verdict fail after 10 one-minute intervals: the
// recall) and how often a canary identical to its control fails (the false positive rate).
func TestCanaryEvaluation(t *testing.T) {
	t.Parallel()
	const seeds, intervals = 50, 10
	var report []string
	for _, tc := range []struct {
		method      string
		tolerance   float64
		shift       float64
		minRecall   float64 // for shift > 0
		maxFalsePos float64 // for shift = 0
	}{
		// With a 5% tolerance, the ratio of means flags the natural difference between two groups
		// of 10 devices whose baselines differ by 5%: a tolerance of 10% suits such a fleet.
		{canary.MethodRatio, 0.05, 0, 0, 0.2},
		{canary.MethodRatio, 0.05, 0.3, 1, 0},
		{canary.MethodRatio, 0.05, 0.1, 0.9, 0},
		{canary.MethodRatio, 0.1, 0, 0, 0.02},
		{canary.MethodRatio, 0.1, 0.3, 1, 0},
		{canary.MethodRatio, 0.1, 0.1, 0, 0}, // at the tolerance: reported, not required
		{canary.MethodMannWhitney, 0.05, 0, 0, 0.06},
		{canary.MethodMannWhitney, 0.05, 0.3, 1, 0},
		{canary.MethodMannWhitney, 0.05, 0.1, 0.8, 0},
	} {
		fails, intervalFails := 0, 0
		for seed := range uint64(seeds) {
			v, f := canaryRun(t, seed, tc.method, tc.tolerance, tc.shift, intervals)
			if v.Intervals != 5 {
				t.Fatalf("%s seed %d: verdict over %d intervals, want 5", tc.method, seed, v.Intervals)
			}
			if v.Status == canary.StatusFail {
				fails++
			}
			intervalFails += f
		}
		rate := float64(fails) / seeds
		ivRate := float64(intervalFails) / (seeds * intervals)
		if tc.shift == 0 {
			report = append(report, fmt.Sprintf("| %s | %.0f%% | identical | false positive rate %.2f | %.3f |", tc.method, 100*tc.tolerance, rate, ivRate))
			if rate > tc.maxFalsePos {
				t.Errorf("%s: identical canary failed in %d of %d rollouts (%.2f), want at most %.2f", tc.method, fails, seeds, rate, tc.maxFalsePos)
			}
			continue
		}
		report = append(report, fmt.Sprintf("| %s | %.0f%% | latency +%.0f%% | recall %.2f | %.3f |", tc.method, 100*tc.tolerance, 100*tc.shift, rate, ivRate))
		if rate < tc.minRecall {
			t.Errorf("%s, latency +%.0f%%: caught in %d of %d rollouts (%.2f), want at least %.2f", tc.method, 100*tc.shift, fails, seeds, rate, tc.minRecall)
		}
	}
	t.Log("\n| method | tolerance | canary | rollouts failed | intervals failed |\n|---|---|---|---|---|\n" + strings.Join(report, "\n"))
}

// BenchmarkCanaryInterval is the cost of scoring one closed interval in the runner: splitting
// the per-device rows into the groups and comparing three metrics (ratio of means, Mann–Whitney).
func BenchmarkCanaryInterval(b *testing.B) {
	for _, devices := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			def := CanaryDef{Canary: Selector{Tags: []string{"fw:2.1"}}, Control: Selector{Tags: []string{"fw:2.0"}}, Interval: D(time.Minute),
				Config: canary.Config{Metrics: []canary.Metric{{Field: "a"}, {Field: "b", Method: "mann-whitney"}, {Field: "c", Better: "higher"}}}}
			if err := def.Config.Normalize(); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			rows := make([]window.Result, devices)
			for i := range rows {
				fw := "2.0"
				if i%2 == 1 {
					fw = "2.1"
				}
				v := map[string]any{}
				for m := range 3 {
					v[fmt.Sprintf("m%d_mean", m)] = 100 + rng.NormFloat64()
					v[fmt.Sprintf("m%d_n", m)] = 6.0
				}
				rows[i] = window.Result{Group: map[string]any{"device": fmt.Sprintf("d%05d", i), "tags.fw": fw}, Values: v}
			}
			b.ReportAllocs()
			var hist []canary.Outcome
			for b.Loop() {
				_, hist, _ = def.score(hist, rows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(devices), "ns/device")
		})
	}
}

// BenchmarkCanaryEvents is the cost per reading of a canary in the window engine (its
// filter and per-device means of two metrics), over 1,000 and 10,000 devices per interval, by
// tags and by device lists.
func BenchmarkCanaryEvents(b *testing.B) {
	for _, devices := range []int{1000, 10000} {
		for _, by := range []string{"tags", "lists"} {
			b.Run(fmt.Sprintf("devices=%d/by=%s", devices, by), func(b *testing.B) {
				def := CanaryDef{Canary: Selector{Tags: []string{"fw:2.1"}}, Control: Selector{Tags: []string{"fw:2.0"}}, Interval: D(time.Minute),
					Config: canary.Config{Metrics: []canary.Metric{{Field: "latency"}, {Field: "throughput", Better: "higher"}}}}
				ids := make([]string, devices)
				for i := range ids {
					ids[i] = fmt.Sprintf("d%05d", i)
				}
				if by == "lists" {
					def.Canary, def.Control = Selector{Devices: ids[:devices/2]}, Selector{Devices: ids[devices/2:]}
				}
				spec := Spec{Name: "bench", Lateness: D(0), IdleTimeout: D(0), Canary: &def}
				c, err := compile(&spec)
				if err != nil {
					b.Fatal(err)
				}
				eng, err := window.New(c.plan, c.opts)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
				tags := []map[string]string{{"fw": "2.0"}, {"fw": "2.1"}}
				fields := map[string]any{"latency": 100.0, "throughput": 500.0}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					// Each device reports every 10 s: 6 readings per device and interval.
					at := t0.Add(time.Duration(i/devices) * 10 * time.Second)
					eng.Process(window.Event{Time: at, Received: at, Device: ids[i%devices], Type: "gw", Tags: tags[i%2], Fields: fields, Seq: uint64(i + 1)})
					i++
				}
			})
		}
	}
}
