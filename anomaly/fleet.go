package anomaly

import (
	"fmt"
	"math"
	"slices"
)

// MaxExpect bounds the expected outlier share: the estimator trims a quarter of the peers, so
// it tolerates up to that share of real outliers.
const MaxExpect = 0.25

// DefaultExpect is the expected outlier share when none is given.
const DefaultExpect = 0.01

// MinPeers is the smallest peer group that gets a verdict for vectors of dims fields: below
// it, center and spread cannot be told apart from the outliers.
func MinPeers(dims int) int { return max(5, 2*dims+2) }

// Verdict is the judgement of one member of a peer group.
type Verdict struct {
	// Valid is false when there is no verdict: the group is too small, or the member lacks
	// a finite value for a field.
	Valid bool
	// Score is the robust Mahalanobis distance from the group's center, in standard
	// deviations (about |z| for one field).
	Score float64
	// Outlier: Score is beyond the threshold.
	Outlier bool
}

// Outliers finds the members of a peer group whose vectors stand apart from the rest, by
// robust statistics (a reweighted minimum-covariance-determinant estimate, "MCD-lite"):
//
//  1. Each field is standardized robustly: z = (x − median) / σ̂, σ̂ = 1.4826 × MAD (or
//     1.2533 × the mean absolute deviation when MAD is 0).
//  2. The 75% of members closest to the center in z (Euclidean) form a core; the core's
//     mean and covariance (scaled for consistency at the normal distribution) give every
//     member's Mahalanobis distance; the 75% closest by that distance form the next core
//     (one concentration step of MCD). So correlated fields (temperature and power) are
//     judged together, and up to a quarter of outliers cannot mask each other.
//  3. Reweighting: members within the 97.5% χ² quantile form the final sample for mean and
//     covariance (scaled for the share actually kept), and every member's distance D to it
//     is its Score.
//
// The operator's single knob is the expected share of outliers p (EXPECT, default 0.01,
// at most 0.25). A member is an outlier when P(χ²_d > D²) < p / n, for n members and d
// fields: the chance that a group with no outliers at all shows one in a window is then
// about p, and the threshold grows with the group as it must (with 1,000 peers and
// p = 0.01, one field: |z| > 4.4; two fields: D > 4.8). A larger p flags more readily.
// For small groups the threshold is Hotelling's prediction bound instead of the χ² quantile
// (see threshold2). Measured on Gaussian peers with p = 0.01 (2,000 windows each): windows
// with a false outlier 0.7–0.9% for one field at 10 to 1,000 peers; 0.9–2% for two fields;
// 1% for three fields at 100 peers and more, up to 4% at 10–26 peers.
//
// An Outliers is not safe for concurrent use; it reuses buffers between calls.
type Outliers struct {
	expect float64
	// buffers
	z, dist, buf []float64
	idx          []int
	mu, cov, l   []float64
	tmp          []float64
}

// NewOutliers returns a detector for an expected outlier share in (0, MaxExpect].
func NewOutliers(expect float64) (*Outliers, error) {
	if err := CheckExpect(expect); err != nil {
		return nil, err
	}
	return &Outliers{expect: expect}, nil
}

// CheckExpect reports whether p is a usable expected outlier share.
func CheckExpect(p float64) error {
	if !(p > 0 && p <= MaxExpect) {
		return fmt.Errorf("expected outlier share must be above 0 and at most %g, like 0.01, got %g", MaxExpect, p)
	}
	return nil
}

// Threshold returns the distance beyond which a member of a group of n with dims fields is
// an outlier.
func (o *Outliers) Threshold(n, dims int) float64 { return math.Sqrt(threshold2(o.expect, n, dims)) }

// threshold2 is the squared distance threshold: the prediction bound of Hotelling's T² for a
// member judged against a mean and covariance estimated from n members,
// d(n²−1)/(n(n−d)) · F(d, n−d) at 1 − p/n. For large n it is the χ²_d quantile; for small
// groups it is larger, because estimating center and spread from few members makes every
// distance longer.
func threshold2(p float64, n, d int) float64 {
	nf, df := float64(n), float64(d)
	return df * (nf*nf - 1) / (nf * (nf - df)) * fQuantile(df, nf-df, 1-p/nf)
}

// Judge judges the rows of vecs (one per member, every row with the same number of fields)
// and writes one verdict per row to out. It returns a warning when the group has too few
// members with values for a verdict.
func (o *Outliers) Judge(vecs [][]float64, out []Verdict) (warning string) {
	for i := range out {
		out[i] = Verdict{}
	}
	if len(vecs) == 0 {
		return ""
	}
	d := len(vecs[0])
	o.idx = o.idx[:0]
	for i, v := range vecs {
		ok := len(v) == d
		for _, x := range v {
			ok = ok && finite(x)
		}
		if ok {
			o.idx = append(o.idx, i)
		}
	}
	n := len(o.idx)
	if min := MinPeers(d); n < min {
		return fmt.Sprintf("peer group has %d members with values; outliers need at least %d", n, min)
	}
	// 1. Robust standardization per field.
	o.z = grow(o.z, n*d)
	o.buf = grow(o.buf, n)
	for j := range d {
		for k, i := range o.idx {
			o.buf[k] = vecs[i][j]
		}
		slices.Sort(o.buf)
		med, sigma := robustSorted(o.buf)
		if sigma == 0 {
			sigma = 1 // every member has the same value: all z are 0
		}
		for k, i := range o.idx {
			o.z[k*d+j] = (vecs[i][j] - med) / sigma
		}
	}
	o.dist = grow(o.dist, n)
	o.mu = grow(o.mu, d)
	o.cov = grow(o.cov, d*d)
	o.l = grow(o.l, d*d)
	o.tmp = grow(o.tmp, d)
	for k := range n {
		var s float64
		for _, x := range o.z[k*d : (k+1)*d] {
			s += x * x
		}
		o.dist[k] = s
	}
	// 2. Core of the 75% closest, twice (the second by Mahalanobis distance).
	h := (3*n + 3) / 4
	q75 := chi2Quantile(d, 0.75)
	c75 := 0.75 / (1 - chi2Upper(d+2, q75))
	for range 2 {
		cut := o.kth(h)
		o.estimate(d, func(k int) bool { return o.dist[k] <= cut }, c75)
		o.distances(d)
	}
	// 3. Reweighting.
	// The consistency factor is for the share actually kept, which is below 97.5% when the
	// core's estimate happened to be narrow: a fixed factor would then keep it too narrow.
	q975 := chi2Quantile(d, 0.975)
	kept := 0
	for _, x := range o.dist {
		if x <= q975 {
			kept++
		}
	}
	share := min(float64(kept)/float64(n), 0.975)
	qs := chi2Quantile(d, share)
	cs := share / (1 - chi2Upper(d+2, qs))
	o.estimate(d, func(k int) bool { return o.dist[k] <= q975 }, cs)
	o.distances(d)
	thr := threshold2(o.expect, n, d)
	for k, i := range o.idx {
		out[i] = Verdict{Valid: true, Score: clampScore(math.Sqrt(o.dist[k])), Outlier: o.dist[k] > thr}
	}
	return ""
}

// kth returns the h-th smallest distance.
func (o *Outliers) kth(h int) float64 {
	o.buf = append(o.buf[:0], o.dist...)
	slices.Sort(o.buf)
	return o.buf[h-1]
}

// estimate sets mu and the Cholesky factor l of the covariance (times c) of the members in.
func (o *Outliers) estimate(d int, in func(k int) bool, c float64) {
	n := len(o.dist)
	clear(o.mu)
	clear(o.cov)
	cnt := 0
	for k := range n {
		if !in(k) {
			continue
		}
		cnt++
		for j := range d {
			o.mu[j] += o.z[k*d+j]
		}
	}
	if cnt == 0 {
		cnt = 1
	}
	for j := range d {
		o.mu[j] /= float64(cnt)
	}
	for k := range n {
		if !in(k) {
			continue
		}
		row := o.z[k*d : (k+1)*d]
		for a := range d {
			da := row[a] - o.mu[a]
			for b := 0; b <= a; b++ {
				o.cov[a*d+b] += da * (row[b] - o.mu[b])
			}
		}
	}
	var trace float64
	for a := range d {
		for b := 0; b <= a; b++ {
			o.cov[a*d+b] *= c / float64(max(cnt-1, 1))
			o.cov[b*d+a] = o.cov[a*d+b]
		}
		trace += o.cov[a*d+a]
	}
	// Collinear or constant fields make the covariance singular: a small ridge keeps the
	// distances finite (members off a degenerate direction then score very high).
	ridge := 1e-9 * math.Max(trace/float64(d), 1e-12)
	for !o.cholesky(d, ridge) {
		ridge *= 100
	}
}

// cholesky factors cov + ridge·I into l; false if it is not positive definite.
func (o *Outliers) cholesky(d int, ridge float64) bool {
	for a := range d {
		for b := 0; b <= a; b++ {
			s := o.cov[a*d+b]
			if a == b {
				s += ridge
			}
			for k := range b {
				s -= o.l[a*d+k] * o.l[b*d+k]
			}
			if a == b {
				if !(s > 0) {
					return false
				}
				o.l[a*d+a] = math.Sqrt(s)
			} else {
				o.l[a*d+b] = s / o.l[b*d+b]
			}
		}
	}
	return true
}

// distances sets dist to the squared Mahalanobis distances under mu and l.
func (o *Outliers) distances(d int) {
	for k := range o.dist {
		row := o.z[k*d : (k+1)*d]
		var s float64
		for a := range d {
			x := row[a] - o.mu[a]
			for b := range a {
				x -= o.l[a*d+b] * o.tmp[b]
			}
			x /= o.l[a*d+a]
			o.tmp[a] = x
			s += x * x
		}
		o.dist[k] = s
	}
}

func grow(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}
