package replay

import (
	"math"
	"time"
)

// hist is a log-scale histogram of durations: 8 buckets per doubling from 1µs (about 9%
// resolution), bucket 0 below 1µs. Percentiles report a bucket's upper bound.
type hist struct {
	counts map[int]uint64
	n      uint64
	max    time.Duration
}

const histPerOctave = 8

func bucketOf(d time.Duration) int {
	if d < time.Microsecond {
		return 0
	}
	return 1 + int(math.Log2(float64(d)/float64(time.Microsecond))*histPerOctave)
}

func bucketUpper(i int) time.Duration {
	if i == 0 {
		return time.Microsecond
	}
	return time.Duration(float64(time.Microsecond) * math.Exp2(float64(i)/histPerOctave))
}

func (h *hist) add(d time.Duration) {
	if h.counts == nil {
		h.counts = map[int]uint64{}
	}
	h.counts[bucketOf(max(d, 0))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	top := 0
	for i := range h.counts {
		top = max(top, i)
	}
	var seen uint64
	for i := 0; i <= top; i++ {
		seen += h.counts[i]
		if seen >= rank {
			return min(bucketUpper(i), h.max)
		}
	}
	return h.max
}

func (h *hist) summary() Pacing {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	p := Pacing{Samples: h.n, P50Ms: ms(h.quantile(0.5)), P99Ms: ms(h.quantile(0.99)), MaxMs: ms(h.max)}
	if len(h.counts) > 0 {
		p.Buckets = make(map[int]uint64, len(h.counts))
		for k, v := range h.counts {
			p.Buckets[k] = v
		}
	}
	return p
}

func histFrom(p Pacing) hist {
	h := hist{n: p.Samples, max: time.Duration(p.MaxMs * 1e6)}
	if len(p.Buckets) > 0 {
		h.counts = make(map[int]uint64, len(p.Buckets))
		for k, v := range p.Buckets {
			h.counts[k] = v
		}
	}
	return h
}
