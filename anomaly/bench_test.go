package anomaly

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// go test -bench . -cpu 1 ./anomaly

func benchSeries(b *testing.B, add func(float64) (float64, bool)) {
	r := rand.New(rand.NewPCG(1, 1))
	xs := make([]float64, 4096)
	for i := range xs {
		xs[i] = 20 + r.NormFloat64()
	}
	for i := range 1000 {
		add(xs[i%len(xs)])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		add(xs[i%len(xs)])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

func BenchmarkSpike(b *testing.B) {
	for _, n := range []int{60, 600} {
		b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
			s, _ := NewSpike(0.99, n)
			benchSeries(b, s.Add)
		})
	}
}

func BenchmarkChangePoint(b *testing.B) {
	for _, n := range []int{120, 1200} {
		b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
			c, _ := NewChangePoint(0.99, n)
			benchSeries(b, c.Add)
		})
	}
}

func BenchmarkOutliers(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, d := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("devices=%d/fields=%d", n, d), func(b *testing.B) {
				r := rand.New(rand.NewPCG(2, 2))
				vecs := fleet(r, n, d)
				out := make([]Verdict, n)
				o, _ := NewOutliers(0.01)
				o.Judge(vecs, out)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					o.Judge(vecs, out)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
			})
		}
	}
}
