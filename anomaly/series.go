package anomaly

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// MaxHistory bounds the history of the per-series detectors (points kept per series).
const MaxHistory = 10000

// ErrCorruptState is returned by ReadState for bytes that AppendState did not write.
var ErrCorruptState = errors.New("anomaly: corrupt detector state")

// history is the ring of a series' last points, oldest first once full.
type history struct {
	ring []float64
	head int // index of the oldest point when full
	size int
}

func (h *history) full() bool { return len(h.ring) == h.size }

// push appends x and returns the point it evicted, if any.
func (h *history) push(x float64) (old float64, evicted bool) {
	if len(h.ring) < h.size {
		h.ring = append(h.ring, x)
		return 0, false
	}
	old = h.ring[h.head]
	h.ring[h.head] = x
	h.head = (h.head + 1) % h.size
	return old, true
}

// at returns the i-th oldest point.
func (h *history) at(i int) float64 {
	if len(h.ring) < h.size {
		return h.ring[i]
	}
	return h.ring[(h.head+i)%h.size]
}

func (h *history) appendState(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(h.ring)))
	for i := range h.ring {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(h.at(i)))
	}
	return b
}

// readState reads points written by appendState and replays them through add.
func readPoints(b []byte, max int, add func(float64)) ([]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(max) || n*8 > uint64(len(b)-k) {
		return b, ErrCorruptState
	}
	b = b[k:]
	for range n {
		add(math.Float64frombits(binary.BigEndian.Uint64(b)))
		b = b[8:]
	}
	return b, nil
}

func checkHistory(name string, n, min int) error {
	if n < min || n > MaxHistory {
		return fmt.Errorf("%s: history must be a whole number of points from %d to %d, got %d", name, min, MaxHistory, n)
	}
	return nil
}

// Spike scores each point of a series against the trailing history of the n points before
// it: the robust z-score (x − median) / σ̂, where σ̂ is 1.4826 × the median absolute
// deviation (or 1.2533 × the mean absolute deviation when more than half the history is one
// value). Positive scores are spikes, negative ones dips. A point is anomalous when |score|
// exceeds the two-sided quantile of the confidence (2.576 at 0.99 for long histories; a
// little more for short ones, see spikeThreshold): for Gaussian noise, about
// 1 − confidence of the points. Until the history is full, points score 0.
// The median and MAD ignore a minority of outliers, so a spike does not mask the next one.
//
// A Spike is deterministic: the same points in the same order give the same scores.
type Spike struct {
	h      history
	sorted sortedWindow
	z      float64
}

// NewSpike returns a detector with the given confidence in (0, 1) and history size (at
// least 3 points).
func NewSpike(confidence float64, n int) (*Spike, error) {
	if err := CheckConfidence(confidence); err != nil {
		return nil, fmt.Errorf("spike: %w", err)
	}
	if err := checkHistory("spike", n, 3); err != nil {
		return nil, err
	}
	return &Spike{h: history{size: n}, z: spikeThreshold(confidence, n)}, nil
}

// spikeThreshold is the |score| a point of Gaussian noise exceeds with probability
// 1 − confidence when median and MAD come from n points: the two-sided Student t quantile
// with (n−1)/2.5 degrees of freedom (the MAD is a less precise scale than a standard
// deviation, more so in small samples; 2.5 is calibrated by simulation: 0.7–1.0 × the
// nominal rate for n from 10 to 100 at 0.99 and 0.999), widened by √(1 + 1.57/n) for the
// error of the median. For large n it is the normal quantile.
func spikeThreshold(confidence float64, n int) float64 {
	nu := float64(n-1) / 2.5
	return math.Sqrt(fQuantile(1, nu, confidence)) * math.Sqrt(1+1.57/float64(n))
}

// Add scores x against the history, then adds it. Values that are not finite score 0 and
// are not added.
func (s *Spike) Add(x float64) (score float64, anomaly bool) {
	if !finite(x) {
		return 0, false
	}
	if s.h.full() {
		med, sigma := robustSorted(s.sorted)
		switch {
		case sigma > 0:
			score = clampScore((x - med) / sigma)
		case x > med:
			score = MaxScore
		case x < med:
			score = -MaxScore
		}
		anomaly = math.Abs(score) > s.z
	}
	if old, ok := s.h.push(x); ok {
		s.sorted.remove(old)
	}
	s.sorted.insert(x)
	return score, anomaly
}

// AppendState appends the history, which ReadState restores.
func (s *Spike) AppendState(b []byte) []byte { return s.h.appendState(b) }

// ReadState restores the history from the front of b into an empty detector and returns
// the rest of b.
func (s *Spike) ReadState(b []byte) ([]byte, error) {
	return readPoints(b, s.h.size, func(x float64) { s.Add(x) })
}

// ChangePoint detects a lasting change of a series' level or spread. After each point it
// splits the trailing history of n points into a reference (the older n − m) and a recent
// part (the last m = n/4, at least 2) and tests two things with robust estimates:
//
//   - level: z = (median_recent − median_ref) / (1.2533 σ̂_ref √(1/m + 1/(n−m)));
//   - spread: z = ln(σ̂_recent / σ̂_ref) / (1.1664 √(1/m + 1/(n−m))), which catches stuck
//     values (spread collapses: large negative z) and noisy sensors (positive).
//
// The score is whichever z is larger in magnitude (signed). Both statistics are about
// standard normal for a series without change (independent Gaussian noise), and each point
// tests both again over much the same history; so the point is anomalous when |score|
// exceeds the normal quantile of 1 − (1 − confidence)/(2m) (two-sided; 3.76 for m = 30 at
// 0.99): without change, about 1 − confidence of the stretches of m points hold a flag. After
// a change, flags continue until the change fills the reference. Until the history is full,
// points score 0.
type ChangePoint struct {
	h           history
	ref, recent sortedWindow
	m           int
	z           float64
	se          float64 // √(1/m + 1/(n−m))
}

// NewChangePoint returns a detector with the given confidence in (0, 1) and history size
// (at least 8 points).
func NewChangePoint(confidence float64, n int) (*ChangePoint, error) {
	if err := CheckConfidence(confidence); err != nil {
		return nil, fmt.Errorf("changepoint: %w", err)
	}
	if err := checkHistory("changepoint", n, 8); err != nil {
		return nil, err
	}
	m := max(2, n/4)
	// Each point is a new test, and neighbouring points share their history: the threshold
	// holds two tests on each of m points to 1 − confidence together (Bonferroni), so that a
	// series without change raises about 1 − confidence alarms per m points.
	return &ChangePoint{h: history{size: n}, m: m, z: Threshold(1 - (1-confidence)/float64(2*m)),
		se: math.Sqrt(1/float64(m) + 1/float64(n-m))}, nil
}

// Add adds x to the history and scores the history's last part against the rest. Values that
// are not finite score 0 and are not added.
func (c *ChangePoint) Add(x float64) (score float64, anomaly bool) {
	if !finite(x) {
		return 0, false
	}
	if old, ok := c.h.push(x); ok {
		c.ref.remove(old)
	}
	c.recent.insert(x)
	if len(c.recent) > c.m {
		// The point leaving the recent part is the (m+1)-th newest.
		leaving := c.h.at(len(c.h.ring) - c.m - 1)
		c.recent.remove(leaving)
		c.ref.insert(leaving)
	}
	if !c.h.full() {
		return 0, false
	}
	mr, sr := robustSorted(c.ref)
	mc, sc := robustSorted(c.recent)
	var level, spread float64
	switch {
	case sr > 0:
		level = (mc - mr) / (medianSE * sr * c.se)
		spread = math.Log(math.Max(sc, sr*1e-9)/sr) / (logMADSE * c.se)
	case mc > mr || sc > 0:
		// The reference has no spread at all (a stuck sensor): any change stands out.
		level = MaxScore
		if mc < mr {
			level = -MaxScore
		}
	case mc < mr:
		level = -MaxScore
	}
	score = level
	if math.Abs(spread) > math.Abs(level) {
		score = spread
	}
	score = clampScore(score)
	return score, math.Abs(score) > c.z
}

// AppendState appends the history, which ReadState restores.
func (c *ChangePoint) AppendState(b []byte) []byte { return c.h.appendState(b) }

// ReadState restores the history from the front of b into an empty detector and returns
// the rest of b.
func (c *ChangePoint) ReadState(b []byte) ([]byte, error) {
	return readPoints(b, c.h.size, func(x float64) { c.Add(x) })
}
