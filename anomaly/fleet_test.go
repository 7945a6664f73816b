package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func fleet(r *rand.Rand, n, d int) [][]float64 {
	vecs := make([][]float64, n)
	for i := range vecs {
		vecs[i] = make([]float64, d)
		for j := range d {
			vecs[i][j] = 20*float64(j+1) + r.NormFloat64()*float64(j+1)
		}
	}
	return vecs
}

// TestIdenticalFleetNoOutliers (property): peers that differ only by noise give no outlier,
// for many seeds, sizes and field counts.
func TestIdenticalFleetNoOutliers(t *testing.T) {
	o, _ := NewOutliers(0.01)
	flagged, windows := 0, 0
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 1))
		n := MinPeers(3) + r.IntN(400)
		d := 1 + r.IntN(3)
		vecs := fleet(r, n, d)
		if d == 2 { // correlated fields: the second follows the first
			for _, v := range vecs {
				v[1] = 2*v[0] + r.NormFloat64()*0.1
			}
		}
		out := make([]Verdict, n)
		if w := o.Judge(vecs, out); w != "" {
			t.Fatalf("seed %d: warning %q", seed, w)
		}
		windows++
		for i, v := range out {
			if !v.Valid {
				t.Fatalf("seed %d member %d: no verdict", seed, i)
			}
			if v.Outlier {
				flagged++
			}
		}
	}
	// The threshold makes a false outlier in a window about as likely as the expected share
	// (measured: 1–2% of windows for large groups, up to 6% for small groups with 3 fields).
	if flagged > 15 {
		t.Fatalf("%d false outliers in %d windows of identical peers", flagged, windows)
	}
}

// TestShiftedDeviceFound (property): one device shifted by 6σ in one field, or in a direction
// that only the correlation between fields reveals, is found, and only it.
func TestShiftedDeviceFound(t *testing.T) {
	o, _ := NewOutliers(0.01)
	others := 0
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 2))
		n := 20 + r.IntN(500)
		d := 1 + r.IntN(3)
		vecs := fleet(r, n, d)
		bad := r.IntN(n)
		j := r.IntN(d)
		vecs[bad][j] += 7 * float64(j+1) * math.Sqrt(math.Log(float64(n)))
		out := make([]Verdict, n)
		o.Judge(vecs, out)
		if !out[bad].Outlier {
			t.Fatalf("seed %d (n=%d d=%d): shifted member %d not found: score %.2f, threshold %.2f", seed, n, d, bad, out[bad].Score, o.Threshold(n, d))
		}
		for i, v := range out {
			if v.Outlier && i != bad {
				others++
			}
		}
	}
	if others > 12 { // measured: 9 (4.5% of windows: the groups are small, up to 3 fields)
		t.Errorf("%d other members flagged in 200 windows", others)
	}
	// Correlated fields: power follows temperature; a device with normal temperature and
	// normal power, but not together, stands apart only jointly.
	r := rand.New(rand.NewPCG(99, 3))
	vecs := make([][]float64, 300)
	for i := range vecs {
		t := r.NormFloat64() * 3
		vecs[i] = []float64{20 + t, 100 + 10*t + r.NormFloat64()}
	}
	vecs[7] = []float64{20 + 4, 100 - 40} // each field within 1.5σ of its median
	out := make([]Verdict, len(vecs))
	o.Judge(vecs, out)
	for i, v := range out {
		if v.Outlier != (i == 7) {
			t.Fatalf("correlated: member %d outlier=%v score %.2f", i, v.Outlier, v.Score)
		}
	}
}

// TestManyOutliers: up to about the trimmed share, outliers do not mask each other.
func TestManyOutliers(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	o, _ := NewOutliers(0.1)
	vecs := fleet(r, 1000, 2)
	for i := range 150 { // 15%
		vecs[i][0] += 15
	}
	out := make([]Verdict, len(vecs))
	o.Judge(vecs, out)
	for i, v := range out {
		if v.Outlier != (i < 150) {
			t.Fatalf("member %d outlier=%v score %.2f", i, v.Outlier, v.Score)
		}
	}
}

func TestOutliersSmallAndMissing(t *testing.T) {
	o, _ := NewOutliers(0.05)
	out := make([]Verdict, 4)
	w := o.Judge([][]float64{{1}, {2}, {3}, {40}}, out)
	if w != "peer group has 4 members with values; outliers need at least 5" {
		t.Errorf("warning %q", w)
	}
	for _, v := range out {
		if v.Valid || v.Outlier {
			t.Errorf("verdict in a small group: %+v", v)
		}
	}
	vecs := [][]float64{{1, 1}, {1.1, 1}, {0.9, 1.1}, {1, 0.9}, {1.05, 1.05}, {0.95, 1}, {1, math.NaN()}, {9, 1}}
	out = make([]Verdict, len(vecs))
	if w := o.Judge(vecs, out); !strings.Contains(w, "7 members with values; outliers need at least 6") && w != "" {
		t.Errorf("warning %q", w)
	}
	if out[6].Valid {
		t.Errorf("member with NaN has a verdict: %+v", out[6])
	}
	if !out[7].Outlier {
		t.Errorf("member 7 not an outlier: %+v", out[7])
	}
	// Every member equal: nothing stands apart; one different member stands apart.
	same := [][]float64{{3}, {3}, {3}, {3}, {3}, {3}}
	out = make([]Verdict, len(same))
	o.Judge(same, out)
	for _, v := range out {
		if !v.Valid || v.Outlier || v.Score != 0 {
			t.Errorf("equal members: %+v", v)
		}
	}
	same[2][0] = 3.5
	o.Judge(same, out)
	if !out[2].Outlier || out[0].Outlier {
		t.Errorf("one different member: %+v", out)
	}
	for _, p := range []float64{0, -1, 0.3, math.NaN()} {
		if _, err := NewOutliers(p); err == nil {
			t.Errorf("NewOutliers(%g) accepted", p)
		}
	}
}

// TestOutliersDeterministic: the same input gives the same verdicts, also after other calls
// reused the buffers.
func TestOutliersDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	vecs := fleet(r, 500, 3)
	o, _ := NewOutliers(0.02)
	a := make([]Verdict, 500)
	o.Judge(vecs, a)
	o.Judge(fleet(r, 50, 1), make([]Verdict, 50))
	b := make([]Verdict, 500)
	o.Judge(vecs, b)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("verdicts differ between runs")
	}
}
