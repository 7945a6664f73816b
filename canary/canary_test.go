package canary_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/canary"
)

func ptr(f float64) *float64 { return &f }

func cfg(t testing.TB, metrics ...canary.Metric) *canary.Config {
	t.Helper()
	c := &canary.Config{Metrics: metrics}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMannWhitney(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []float64
		want float64
	}{
		// U = 0, mu = 12.5, sigma² = 25/12·11: z = 12/4.787 = 2.507.
		{"separated", []float64{1, 2, 3, 4, 5}, []float64{6, 7, 8, 9, 10}, 0.01219},
		// Ranks 1.5 1.5 3.5 | 3.5 5.5 5.5: U = 0.5, tie term 18, sigma² = 0.75·(7 − 18/30) = 4.8.
		{"ties", []float64{1, 1, 2}, []float64{2, 3, 3}, 0.1101},
		{"identical", []float64{1, 2, 3}, []float64{1, 2, 3}, 1},
		{"all tied", []float64{4, 4}, []float64{4, 4, 4}, 1},
		{"empty", nil, []float64{1}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := canary.MannWhitney(tc.a, tc.b)
			if math.Abs(got-tc.want) > 5e-4 {
				t.Fatalf("p = %.5f, want %.5f", got, tc.want)
			}
			if rev := canary.MannWhitney(tc.b, tc.a); math.Abs(rev-got) > 1e-12 {
				t.Fatalf("not symmetric: %g vs %g", got, rev)
			}
		})
	}
}

// units makes one unit per device with n readings of mean m.
func units(n int, mean float64, readings int) []canary.Unit {
	us := make([]canary.Unit, n)
	for i := range us {
		us[i] = canary.Unit{Mean: mean + float64(i%3-1), N: readings}
	}
	return us
}

func TestEvaluateTable(t *testing.T) {
	lat := canary.Metric{Field: "latency"}
	thr := canary.Metric{Field: "throughput", Better: canary.HigherIsBetter}
	mw := canary.Metric{Field: "latency", Method: canary.MethodMannWhitney}
	for _, tc := range []struct {
		name         string
		cfg          *canary.Config
		canary, ctrl canary.Group
		status       string
		score        float64
		classes      []canary.Class
		warn         []string
		noWarnings   bool
	}{
		{"equal", cfg(t, lat, thr),
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10), units(10, 50, 10)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10), units(10, 50, 10)}},
			canary.StatusPass, 1, []canary.Class{canary.Same, canary.Same}, nil, true},
		{"latency 30% up fails", cfg(t, lat, thr),
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 130, 10), units(10, 50, 10)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10), units(10, 50, 10)}},
			canary.StatusFail, 0.5, []canary.Class{canary.High, canary.Same}, nil, true},
		{"better is not worse", cfg(t, lat, thr),
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 70, 10), units(10, 80, 10)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10), units(10, 50, 10)}},
			canary.StatusPass, 1, []canary.Class{canary.Low, canary.High}, nil, true},
		{"higher is better, lower fails", cfg(t, thr),
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 40, 10)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 50, 10)}},
			canary.StatusFail, 0, []canary.Class{canary.Low}, nil, true},
		{"within tolerance", cfg(t, lat),
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 104, 10)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10)}},
			canary.StatusPass, 1, []canary.Class{canary.Same}, nil, true},
		{"mann-whitney separated", cfg(t, mw),
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 130, 10)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10)}},
			canary.StatusFail, 0, []canary.Class{canary.High}, nil, true},
		{"small groups warn", cfg(t, lat),
			canary.Group{Devices: 2, Metrics: [][]canary.Unit{units(2, 100, 3)}},
			canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10)}},
			canary.StatusPass, 1, []canary.Class{canary.Same},
			[]string{"canary group: 2 devices, fewer than 5", "canary group: 6 samples of latency, fewer than 30"}, false},
		{"no data is inconclusive", cfg(t, lat),
			canary.Group{}, canary.Group{Devices: 10, Metrics: [][]canary.Unit{units(10, 100, 10)}},
			canary.StatusInconclusive, 0, []canary.Class{canary.NoData},
			[]string{"canary group: no device sent data in this interval"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iv := canary.Evaluate(tc.cfg, tc.canary, tc.ctrl)
			if iv.Status != tc.status || math.Abs(iv.Score-tc.score) > 1e-9 {
				t.Fatalf("status %s score %g, want %s %g (%+v)", iv.Status, iv.Score, tc.status, tc.score, iv)
			}
			for i, c := range tc.classes {
				if iv.Metrics[i].Class != c {
					t.Errorf("metrics[%d] (%s) class %s, want %s", i, iv.Metrics[i].Field, iv.Metrics[i].Class, c)
				}
			}
			all := strings.Join(iv.Warnings, "\n")
			for _, w := range tc.warn {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q lack %q", iv.Warnings, w)
				}
			}
			if tc.noWarnings && len(iv.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", iv.Warnings)
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  canary.Config
		want string
	}{
		{canary.Config{}, "metrics: missing"},
		{canary.Config{Metrics: []canary.Metric{{Field: ""}}}, "metrics[0].field"},
		{canary.Config{Metrics: []canary.Metric{{Field: "a b"}}}, `metrics[0].field: "a b"`},
		{canary.Config{Metrics: []canary.Metric{{Field: "x"}, {Field: "x"}}}, `metrics[1].field: "x" is listed twice`},
		{canary.Config{Metrics: []canary.Metric{{Field: "x", Method: "t-test"}}}, `metrics[0].method: unknown method "t-test"`},
		{canary.Config{Metrics: []canary.Metric{{Field: "x", Better: "up"}}}, `metrics[0].better: want "lower" or "higher", got "up"`},
		{canary.Config{Metrics: []canary.Metric{{Field: "x", Tolerance: ptr(-0.1)}}}, "metrics[0].tolerance: want a fraction from 0 to 10"},
		{canary.Config{Metrics: []canary.Metric{{Field: "x", Tolerance: ptr(math.NaN())}}}, "metrics[0].tolerance"},
		{canary.Config{Metrics: []canary.Metric{{Field: "x", Significance: 0.1}}}, `metrics[0].significance: only used by method "mann-whitney"`},
		{canary.Config{Metrics: []canary.Metric{{Field: "x", Method: "mann-whitney", Significance: 1.5}}}, "metrics[0].significance: want a level above 0 and below 1"},
		{canary.Config{Metrics: []canary.Metric{{Field: "x"}}, Threshold: ptr(1.2)}, "threshold: want a share from 0 to 1"},
		{canary.Config{Metrics: []canary.Metric{{Field: "x"}}, Intervals: -1}, "intervals: want 1 to 1000"},
		{canary.Config{Metrics: []canary.Metric{{Field: "x"}}, MinDevices: -1}, "min_devices"},
	} {
		err := tc.cfg.Normalize()
		var ie *canary.InvalidError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Normalize(%+v) = %v, want an *InvalidError containing %q", tc.cfg, err, tc.want)
		}
	}
	c := canary.Config{Metrics: []canary.Metric{{Field: "env.rh", Method: "mann-whitney"}}}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	m := c.Metrics[0]
	if m.Better != "lower" || *m.Tolerance != 0.05 || m.Significance != 0.05 || *c.Threshold != 0.9 || c.Intervals != 5 || c.MinDevices != 5 || c.MinSamples != 30 {
		t.Fatalf("defaults not filled in: %+v %+v", c, m)
	}
}

// fleet simulates one interval of a group: devices with per-device baseline noise and
// normally distributed readings; shift multiplies every reading of metric i by shift[i].
func fleet(rng *rand.Rand, devices, readings int, base []float64, shift []float64) canary.Group {
	return noisyFleet(rng, devices, readings, 0.01, 0.05, base, shift)
}

// noisyFleet is fleet with the device-to-device spread and the reading noise given (as
// fractions of the base).
func noisyFleet(rng *rand.Rand, devices, readings int, spread, noise float64, base []float64, shift []float64) canary.Group {
	g := canary.Group{Devices: devices, Metrics: make([][]canary.Unit, len(base))}
	for i, b := range base {
		for range devices {
			dev := b * (1 + spread*rng.NormFloat64())
			var sum float64
			for range readings {
				sum += dev * (1 + noise*rng.NormFloat64()) * shift[i]
			}
			g.Metrics[i] = append(g.Metrics[i], canary.Unit{Mean: sum / float64(readings), N: readings})
		}
	}
	return g
}

// Property: canary drawn like the control passes with score 1 and every metric "same", for
// both methods, across seeds; shifted well beyond tolerance in the bad direction it fails.
func TestPropertyCanaryEqualsControl(t *testing.T) {
	for _, method := range []string{canary.MethodRatio, canary.MethodMannWhitney} {
		c := cfg(t, canary.Metric{Field: "latency", Method: method},
			canary.Metric{Field: "throughput", Better: canary.HigherIsBetter, Method: method},
			canary.Metric{Field: "errors", Method: method})
		base := []float64{120, 900, 3}
		for seed := range uint64(200) {
			rng := rand.New(rand.NewPCG(seed, 7))
			n := 10 + rng.IntN(20) // with 1% spread, 5% noise: 5% tolerance is > 6 standard errors
			ctrl := fleet(rng, n, 12, base, []float64{1, 1, 1})
			same := fleet(rng, n, 12, base, []float64{1, 1, 1})
			iv := canary.Evaluate(c, same, ctrl)
			if iv.Status != canary.StatusPass || iv.Score != 1 {
				t.Fatalf("%s seed %d: identical groups scored %s %g: %+v", method, seed, iv.Status, iv.Score, iv.Metrics)
			}
			for _, m := range iv.Metrics {
				if m.Class != canary.Same {
					t.Fatalf("%s seed %d: %s classed %s, want same", method, seed, m.Field, m.Class)
				}
			}
			// Identical data, not just the same distribution: exactly the same.
			if iv := canary.Evaluate(c, ctrl, ctrl); iv.Score != 1 || iv.Status != canary.StatusPass {
				t.Fatalf("%s seed %d: canary = control scored %g", method, seed, iv.Score)
			}
			worse := fleet(rng, n, 12, base, []float64{1.3, 0.7, 1})
			iv = canary.Evaluate(c, worse, ctrl)
			if iv.Status != canary.StatusFail {
				t.Fatalf("%s seed %d: canary 30%% worse passed: %+v", method, seed, iv.Metrics)
			}
			if iv.Metrics[0].Class != canary.High || iv.Metrics[1].Class != canary.Low || !iv.Metrics[0].Worse || !iv.Metrics[1].Worse {
				t.Fatalf("%s seed %d: classes %s/%s, want high/low and worse", method, seed, iv.Metrics[0].Class, iv.Metrics[1].Class)
			}
			if math.Abs(iv.Score-1.0/3) > 1e-9 {
				t.Fatalf("%s seed %d: score %g, want 1/3", method, seed, iv.Score)
			}
		}
	}
}

// Property: the score is the share of metrics not worse, whatever the data.
func TestPropertyScoreIsShareNotWorse(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 11))
		var ms []canary.Metric
		k := 1 + rng.IntN(6)
		base, shift := make([]float64, k), make([]float64, k)
		for i := range k {
			m := canary.Metric{Field: fmt.Sprintf("m%d", i), Tolerance: ptr(rng.Float64() * 0.2)}
			if rng.IntN(2) == 0 {
				m.Better = canary.HigherIsBetter
			}
			if rng.IntN(2) == 0 {
				m.Method = canary.MethodMannWhitney
			}
			ms = append(ms, m)
			base[i], shift[i] = 1+rng.Float64()*100, 0.5+rng.Float64()
		}
		c := cfg(t, ms...)
		iv := canary.Evaluate(c, fleet(rng, 1+rng.IntN(10), 1+rng.IntN(20), base, shift), fleet(rng, 1+rng.IntN(10), 1+rng.IntN(20), base, make1(k)))
		notWorse := 0
		for _, m := range iv.Metrics {
			if m.Worse != (m.Class == canary.High && m.Better == "lower" || m.Class == canary.Low && m.Better == "higher") {
				t.Fatalf("seed %d: %s class %s better %s worse %v", seed, m.Field, m.Class, m.Better, m.Worse)
			}
			if !m.Worse {
				notWorse++
			}
		}
		if want := float64(notWorse) / float64(k); math.Abs(iv.Score-want) > 1e-9 || iv.Pass != (iv.Score >= 0.9) {
			t.Fatalf("seed %d: score %g pass %v, want %g", seed, iv.Score, iv.Pass, want)
		}
	}
}

func make1(k int) []float64 {
	s := make([]float64, k)
	for i := range s {
		s[i] = 1
	}
	return s
}

func TestVerdict(t *testing.T) {
	c := cfg(t, canary.Metric{Field: "x"})
	c.Intervals = 3
	var h []canary.Outcome
	if v := canary.Judge(c, h); v.Status != canary.StatusInconclusive {
		t.Fatalf("empty history: %+v", v)
	}
	for _, iv := range []canary.Interval{
		{Status: canary.StatusPass, Pass: true, Score: 1},
		{Status: canary.StatusInconclusive},
		{Status: canary.StatusFail, Score: 0},
		{Status: canary.StatusPass, Pass: true, Score: 1},
		{Status: canary.StatusPass, Pass: true, Score: 1},
	} {
		h = canary.Record(c, h, iv)
	}
	v := canary.Judge(c, h)
	if len(h) != 3 || v.Intervals != 3 || v.Passed != 2 || math.Abs(v.Score-2.0/3) > 1e-9 || v.Status != canary.StatusFail {
		t.Fatalf("verdict %+v over %+v, want 2 of 3 passed, score 2/3, fail", v, h)
	}
	h = canary.Record(c, h, canary.Interval{Status: canary.StatusPass, Pass: true, Score: 1})
	if v := canary.Judge(c, h); v.Status != canary.StatusPass || v.Score != 1 {
		t.Fatalf("after the failure left the window: %+v", v)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	for _, devices := range []int{10, 100, 1000, 10000} {
		for _, method := range []string{canary.MethodRatio, canary.MethodMannWhitney} {
			b.Run(fmt.Sprintf("devices=%d/method=%s/metrics=3", devices, method), func(b *testing.B) {
				c := cfg(b, canary.Metric{Field: "a", Method: method}, canary.Metric{Field: "b", Method: method}, canary.Metric{Field: "c", Method: method})
				rng := rand.New(rand.NewPCG(1, 2))
				base := []float64{1, 2, 3}
				x, y := fleet(rng, devices, 10, base, []float64{1, 1, 1}), fleet(rng, devices, 10, base, []float64{1, 1, 1})
				b.ReportAllocs()
				for b.Loop() {
					canary.Evaluate(c, x, y)
				}
			})
		}
	}
}
