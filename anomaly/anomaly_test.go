package anomaly

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestThreshold(t *testing.T) {
	for _, c := range []struct{ conf, z float64 }{{0.95, 1.95996}, {0.99, 2.57583}, {0.999, 3.29053}} {
		if got := Threshold(c.conf); math.Abs(got-c.z) > 1e-4 {
			t.Errorf("Threshold(%g) = %g, want %g", c.conf, got, c.z)
		}
	}
	for _, bad := range []float64{0, 1, -0.5, 1.5, math.NaN()} {
		if err := CheckConfidence(bad); err == nil || !strings.Contains(err.Error(), "between 0 and 1") {
			t.Errorf("CheckConfidence(%g) = %v", bad, err)
		}
	}
}

func TestChi2(t *testing.T) {
	// Reference values from tables.
	for _, c := range []struct {
		k    int
		p, x float64
	}{{1, 0.95, 3.8415}, {2, 0.95, 5.9915}, {3, 0.99, 11.345}, {2, 0.75, 2.7726}, {1, 1 - 1e-5, 19.511}, {4, 0.975, 11.143}} {
		if got := chi2Quantile(c.k, c.p); math.Abs(got-c.x) > 1e-3*c.x {
			t.Errorf("chi2Quantile(%d, %g) = %g, want %g", c.k, c.p, got, c.x)
		}
		if got := chi2Upper(c.k, c.x); math.Abs(got-(1-c.p)) > 1e-3*(1-c.p) {
			t.Errorf("chi2Upper(%d, %g) = %g, want %g", c.k, c.x, got, 1-c.p)
		}
	}
}

func TestRobust(t *testing.T) {
	for _, c := range []struct {
		in         []float64
		med, sigma float64
	}{
		{[]float64{1, 2, 3, 4, 100}, 3, 1.4826},
		{[]float64{1, 2, 3, 4}, 2.5, 1.4826},
		{[]float64{5, 5, 5, 5}, 5, 0},
		{[]float64{5, 5, 5, 9}, 5, 1.2533}, // MAD 0: mean absolute deviation 1
		{[]float64{7}, 7, 0},
	} {
		a := slices.Clone(c.in)
		slices.Sort(a)
		med, sigma := robustSorted(a)
		if med != c.med || math.Abs(sigma-c.sigma) > 1e-9 {
			t.Errorf("robust(%v) = %g, %g; want %g, %g", c.in, med, sigma, c.med, c.sigma)
		}
	}
}

// TestRobustMatchesBruteForce checks the merge walk for the MAD against sorting deviations.
func TestRobustMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := 1 + r.IntN(30)
		a := make([]float64, n)
		for i := range a {
			a[i] = float64(r.IntN(10)) // many ties
		}
		slices.Sort(a)
		med := medianSorted(a)
		dev := make([]float64, n)
		for i, x := range a {
			dev[i] = math.Abs(x - med)
		}
		slices.Sort(dev)
		mad := medianSorted(dev)
		_, sigma := robustSorted(a)
		if mad > 0 && math.Abs(sigma-madToSigma*mad) > 1e-9 {
			t.Fatalf("%v: sigma %g, want %g", a, sigma, madToSigma*mad)
		}
	}
}

func TestSpikeTable(t *testing.T) {
	s, err := NewSpike(0.99, 5)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		x       float64
		score   float64
		anomaly bool
	}{
		{10, 0, false}, {11, 0, false}, {9, 0, false}, {10, 0, false}, {12, 0, false}, // warm-up
		{10, 0, false},           // history 10,11,9,10,12: median 10, MAD 1
		{20, 10 / 1.4826, false}, // history 11,9,10,12,10: median 10, MAD 1; threshold 17.6 for n=5
		{40, 30 / 1.4826, true},  // history 9,10,12,10,20: median 10, MAD 1
	}
	for i, st := range steps {
		score, anomaly := s.Add(st.x)
		if math.Abs(score-st.score) > 1e-9 || anomaly != st.anomaly {
			t.Errorf("point %d (%g): got %g %v, want %g %v", i, st.x, score, anomaly, st.score, st.anomaly)
		}
	}
	// history now 10,12,10,20,40: median 12, deviations 2,0,2,8,28 → MAD 2.
	if score, anomaly := s.Add(11.5); math.Abs(score-(-0.5/(2*1.4826))) > 1e-9 || anomaly {
		t.Errorf("last point: got %g %v", score, anomaly)
	}
	for _, c := range []struct {
		conf     float64
		n        int
		min, max float64
	}{{0.99, 100000, 2.57, 2.59}, {0.999, 100000, 3.28, 3.30}, {0.99, 5, 17, 18}, {0.99, 60, 2.8, 3.1}} {
		if z := spikeThreshold(c.conf, c.n); z < c.min || z > c.max {
			t.Errorf("spikeThreshold(%g, %d) = %g, want %g–%g", c.conf, c.n, z, c.min, c.max)
		}
	}
	for _, c := range []struct {
		conf float64
		n    int
		want string
	}{{0, 10, "confidence"}, {1, 10, "confidence"}, {0.9, 2, "history"}, {0.9, MaxHistory + 1, "history"}} {
		if _, err := NewSpike(c.conf, c.n); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewSpike(%g, %d) = %v, want an error about %s", c.conf, c.n, err, c.want)
		}
	}
}

// TestSpikeConstantSeries: a constant series never flags; a change after it scores the maximum.
func TestSpikeConstantSeries(t *testing.T) {
	s, _ := NewSpike(0.95, 10)
	for i := range 1000 {
		if score, anomaly := s.Add(21.5); score != 0 || anomaly {
			t.Fatalf("point %d: %g %v", i, score, anomaly)
		}
	}
	if score, anomaly := s.Add(22); score != MaxScore || !anomaly {
		t.Fatalf("after a constant series: %g %v", score, anomaly)
	}
	if score, anomaly := s.Add(math.NaN()); score != 0 || anomaly {
		t.Fatalf("NaN: %g %v", score, anomaly)
	}
}

// TestSpikeFalseAlarmRate: on Gaussian noise the share of flagged points is about 1 − c.
func TestSpikeFalseAlarmRate(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, conf := range []float64{0.95, 0.99} {
		s, _ := NewSpike(conf, 100)
		flagged, n := 0, 50000
		for range n {
			if _, a := s.Add(r.NormFloat64()); a {
				flagged++
			}
		}
		rate := float64(flagged) / float64(n)
		if want := 1 - conf; rate < want*0.7 || rate > want*1.5 {
			t.Errorf("confidence %g: %.4f of points flagged, want about %.4f", conf, rate, want)
		}
	}
}

func TestSpikeFindsSpikes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	s, _ := NewSpike(0.999, 60)
	hits := 0
	for i := range 10000 {
		x := 20 + r.NormFloat64()
		spike := i > 100 && i%97 == 0
		if spike {
			x += 8
		}
		if _, a := s.Add(x); a && spike {
			hits++
		}
	}
	if hits < 100 {
		t.Fatalf("%d of 102 spikes found", hits)
	}
}

func TestChangePoint(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	c, err := NewChangePoint(0.999, 80)
	if err != nil {
		t.Fatal(err)
	}
	flagsBefore := 0
	for range 2000 {
		if _, a := c.Add(r.NormFloat64()); a {
			flagsBefore++
		}
	}
	if flagsBefore > 40 {
		t.Errorf("%d flags on 2000 points of noise", flagsBefore)
	}
	// A level shift of 2σ is found within a recent part (20 points).
	found := -1
	for i := range 100 {
		if s, a := c.Add(2 + r.NormFloat64()); a && s > 0 {
			found = i
			break
		}
	}
	if found < 0 || found > 20 {
		t.Errorf("level shift found after %d points, want within 20", found)
	}
	// A stuck value: the spread collapses.
	c, _ = NewChangePoint(0.999, 80)
	for range 200 {
		c.Add(r.NormFloat64())
	}
	found = -1
	for i := range 100 {
		if s, a := c.Add(0.3); a && s < 0 {
			found = i
			break
		}
	}
	if found < 0 || found > 20 {
		t.Errorf("stuck value found after %d points, want within 20", found)
	}
	// A constant series is no change.
	c, _ = NewChangePoint(0.95, 8)
	for i := range 100 {
		if s, a := c.Add(4); s != 0 || a {
			t.Fatalf("constant point %d: %g %v", i, s, a)
		}
	}
	if _, err := NewChangePoint(0.99, 7); err == nil || !strings.Contains(err.Error(), "from 8 to") {
		t.Errorf("history 7: %v", err)
	}
}

// TestStateRoundTrip: a detector restored from its state scores the rest of a series exactly
// as the original, at every split point.
func TestStateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	xs := make([]float64, 300)
	for i := range xs {
		xs[i] = r.NormFloat64() + float64(i/100)
	}
	type det interface {
		Add(float64) (float64, bool)
		AppendState([]byte) []byte
		ReadState([]byte) ([]byte, error)
	}
	mk := map[string]func() det{
		"spike":       func() det { d, _ := NewSpike(0.99, 30); return d },
		"changepoint": func() det { d, _ := NewChangePoint(0.99, 40); return d },
	}
	for name, newDet := range mk {
		for _, split := range []int{0, 5, 29, 30, 31, 77, 299} {
			a := newDet()
			for _, x := range xs[:split] {
				a.Add(x)
			}
			state := append(a.AppendState(nil), 0xAB)
			b := newDet()
			rest, err := b.ReadState(state)
			if err != nil || len(rest) != 1 || rest[0] != 0xAB {
				t.Fatalf("%s split %d: ReadState: %v, rest %v", name, split, err, rest)
			}
			for i, x := range xs[split:] {
				s1, a1 := a.Add(x)
				s2, a2 := b.Add(x)
				if s1 != s2 || a1 != a2 {
					t.Fatalf("%s split %d point %d: %g %v vs restored %g %v", name, split, i, s1, a1, s2, a2)
				}
			}
		}
		if _, err := newDet().ReadState([]byte{0x05, 1, 2}); err == nil {
			t.Errorf("%s: truncated state accepted", name)
		}
	}
}

func TestFQuantile(t *testing.T) {
	for _, c := range []struct{ d1, d2, p, x float64 }{{1, 10, 0.95, 4.9646}, {3, 20, 0.99, 4.9382}, {2, 1000, 0.95, 3.0047}} {
		if got := fQuantile(c.d1, c.d2, c.p); math.Abs(got-c.x) > 1e-3*c.x {
			t.Errorf("fQuantile(%g, %g, %g) = %g, want %g", c.d1, c.d2, c.p, got, c.x)
		}
	}
}

// TestSpikeSmallHistoryCalibrated: short histories estimate median and MAD poorly; the
// threshold widens so that the false alarm rate stays about 1 − c.
func TestSpikeSmallHistoryCalibrated(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, n := range []int{10, 30} {
		s, _ := NewSpike(0.99, n)
		flagged, total := 0, 200000
		for range total {
			if _, a := s.Add(r.NormFloat64()); a {
				flagged++
			}
		}
		if rate := float64(flagged) / float64(total); rate < 0.005 || rate > 0.015 {
			t.Errorf("history %d: %.4f of points flagged at 0.99", n, rate)
		} else {
			t.Logf("history %d: %.4f of points flagged at 0.99", n, rate)
		}
	}
}
