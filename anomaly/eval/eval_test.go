package eval

import (
	"testing"
	"time"
)

// TestEvaluate scores every detector against the simulator's labels and holds the
// recommended settings to thresholds a little below what was measured (README, "Anomaly
// detection and fleet outliers"), so that a regression fails. The lower confidences are
// reported, not held: they trade precision for recall on purpose.
//
//	go test ./anomaly/eval -run TestEvaluate -v
func TestEvaluate(t *testing.T) {
	t.Parallel()
	began := time.Now()
	scores, err := Run(Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("evaluation (seed 1, 1 h of 240 devices, %s):\n%s", time.Since(began).Round(time.Millisecond), Table(scores))
	want := map[string]struct{ precision, recall float64 }{
		"spike(temp, 0.999, 60)":         {0, 0.95},
		"spike(temp, 0.9999, 60)":        {0.8, 0.95},
		"changepoint(temp, 0.99, 120)":   {0, 0.95},
		"changepoint(temp, 0.9999, 120)": {0.9, 0.95},
		"OUTLIERS(t, v) EXPECT 0.02":     {0.95, 0.9},
	}
	for _, s := range scores {
		w, ok := want[s.Detector]
		if !ok {
			t.Errorf("no threshold for %s", s.Detector)
			continue
		}
		if s.Precision < w.precision || s.Recall < w.recall {
			t.Errorf("%s: precision %.3f recall %.3f, want at least %.2f and %.2f", s.Detector, s.Precision, s.Recall, w.precision, w.recall)
		}
		if s.MedianDelay > 0 {
			t.Logf("%s: median delay from the start of an anomaly to its first flag %s", s.Detector, s.MedianDelay.Round(time.Second))
		}
	}
}
