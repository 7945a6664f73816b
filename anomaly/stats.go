package anomaly

import (
	"fmt"
	"math"
	"sort"
)

// MaxScore bounds scores: a value that differs from a history with no spread at all would
// otherwise score infinitely, and JSON has no infinity.
const MaxScore = 1e6

// Threshold returns the two-sided standard normal quantile for confidence c: the |z| that a
// normally distributed value exceeds with probability 1 − c (1.96 for 0.95, 2.576 for 0.99).
func Threshold(c float64) float64 { return math.Sqrt2 * math.Erfinv(c) }

// CheckConfidence reports whether c is a usable confidence: strictly between 0 and 1.
func CheckConfidence(c float64) error {
	if !(c > 0 && c < 1) {
		return fmt.Errorf("confidence must be between 0 and 1 (exclusive), like 0.99, got %g", c)
	}
	return nil
}

// Robust scale constants for Gaussian data.
const (
	madToSigma    = 1.4826 // σ ≈ 1.4826 × MAD
	meanADToSigma = 1.2533 // σ ≈ √(π/2) × mean absolute deviation
	medianSE      = 1.2533 // sd(median of n) ≈ 1.2533 σ/√n
	logMADSE      = 1.1664 // sd(ln MAD of n) ≈ 1.1664/√n (asymptotic variance of MAD: 1.3605 σ²/n)
)

func clampScore(x float64) float64 {
	switch {
	case x > MaxScore:
		return MaxScore
	case x < -MaxScore:
		return -MaxScore
	case x != x:
		return 0
	}
	return x
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// medianSorted is the median of sorted, non-empty a.
func medianSorted(a []float64) float64 {
	n := len(a)
	if n%2 == 1 {
		return a[n/2]
	}
	return (a[n/2-1] + a[n/2]) / 2
}

// robustSorted returns the median and a robust estimate of σ of sorted, non-empty a:
// 1.4826 × MAD, or, when more than half the values are equal (MAD 0), 1.2533 × the mean
// absolute deviation from the median. It is 0 only when every value is the same.
func robustSorted(a []float64) (med, sigma float64) {
	med = medianSorted(a)
	n := len(a)
	// The deviations |a[i] − med| grow leftwards from j−1 and rightwards from j: merge the two
	// runs up to the middle rank, no allocation.
	j := sort.SearchFloat64s(a, med)
	i := j - 1
	var prev, cur float64
	for k := 0; k <= n/2; k++ {
		var d float64
		if i >= 0 && (j >= n || med-a[i] <= a[j]-med) {
			d = med - a[i]
			i--
		} else {
			d = a[j] - med
			j++
		}
		prev, cur = cur, d
	}
	mad := cur
	if n%2 == 0 {
		mad = (prev + cur) / 2
	}
	if mad > 0 {
		return med, madToSigma * mad
	}
	var s float64
	for _, x := range a {
		s += math.Abs(x - med)
	}
	return med, meanADToSigma * s / float64(n)
}

// sortedWindow keeps the values of a sliding window in order: insert and remove by binary
// search and one copy, so the median is O(1) and the MAD O(n) with no allocation.
type sortedWindow []float64

func (w *sortedWindow) insert(x float64) {
	a := *w
	i := sort.SearchFloat64s(a, x)
	a = append(a, 0)
	copy(a[i+1:], a[i:])
	a[i] = x
	*w = a
}

func (w *sortedWindow) remove(x float64) {
	a := *w
	i := sort.SearchFloat64s(a, x)
	if i < len(a) && a[i] == x {
		*w = append(a[:i], a[i+1:]...)
	}
}

// chi2Quantile returns x with P(χ²_k ≤ x) = p, by bisection on the regularized gamma
// function; p may be extremely close to 1.
func chi2Quantile(k int, p float64) float64 {
	a := float64(k) / 2
	q := 1 - p // upper tail wanted
	return bisect(func(x float64) bool { return gammaQ(a, x/2) > q }, float64(k)+10)
}

// bisect returns the x ≥ 0 where below turns false (below is true left of it), starting the
// search at [0, hi] and doubling hi as needed; to a relative precision of 1e-10.
func bisect(below func(x float64) bool, hi float64) float64 {
	lo := 0.0
	for below(hi) && hi < 1e300 {
		lo, hi = hi, hi*2
	}
	for range 200 {
		mid := (lo + hi) / 2
		if below(mid) {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo < 1e-10*hi {
			break
		}
	}
	return (lo + hi) / 2
}

// chi2Upper is P(χ²_k > x).
func chi2Upper(k int, x float64) float64 {
	if x <= 0 {
		return 1
	}
	return gammaQ(float64(k)/2, x/2)
}

// gammaQ is the regularized upper incomplete gamma function Q(a, x) (Numerical Recipes:
// series for x < a+1, continued fraction otherwise).
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	if x < a+1 {
		sum, del, ap := 1/a, 1/a, a
		for range 1000 {
			ap++
			del *= x / ap
			sum += del
			if math.Abs(del) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return 1 - sum*math.Exp(-x+a*math.Log(x)-lg)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return math.Exp(-x+a*math.Log(x)-lg) * h
}

// fQuantile returns x with P(F(d1, d2) ≤ x) = p, by bisection on the regularized incomplete
// beta function.
func fQuantile(d1, d2, p float64) float64 {
	return bisect(func(x float64) bool { return betaI(d1/2, d2/2, d1*x/(d1*x+d2)) < p }, 10)
}

// betaI is the regularized incomplete beta function I_x(a, b) (Numerical Recipes' continued
// fraction, with the symmetry relation for convergence).
func betaI(a, b, x float64) float64 {
	switch {
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	la, _ := math.Lgamma(a + b)
	lb, _ := math.Lgamma(a)
	lc, _ := math.Lgamma(b)
	front := math.Exp(la - lb - lc + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaCF(a, b, x) / a
	}
	return 1 - front*betaCF(b, a, 1-x)/b
}

func betaCF(a, b, x float64) float64 {
	const tiny = 1e-300
	qab, qap, qam := a+b, a+1, a-1
	c, d := 1.0, 1-qab*x/qap
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	h := d
	for m := 1; m < 10000; m++ {
		fm := float64(m)
		m2 := 2 * fm
		aa := fm * (b - fm) * x / ((qam + m2) * (a + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		aa = -(a + fm) * (qab + fm) * x / ((a + m2) * (qap + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return h
}
