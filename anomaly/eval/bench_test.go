package eval

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/streams/window"
)

// Rule-level costs: the anomaly functions and fleet outliers inside the window engine, as a
// rule runs them, on one core:
//
//	go test -run '^$' -bench . -cpu 1 ./anomaly/...

func engine(b *testing.B, query string) *window.Engine {
	r, err := sql.Compile("bench", query)
	if err != nil {
		b.Fatal(err)
	}
	e, err := window.New(r.Plan, window.Options{Lateness: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// benchPerEvent feeds 1,000 devices, one event per device and second, and reports the cost
// per event of the query (engine included); the baseline is the same query with avg instead.
func benchPerEvent(b *testing.B, query string) {
	const devices = 1000
	e := engine(b, query)
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, devices)
	payloads := make([][]map[string]any, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("th-%05d", i)
		for range 8 {
			payloads[i] = append(payloads[i], map[string]any{"temp": 20 + r.NormFloat64()})
		}
	}
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	step := time.Second / devices
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d := i % devices
		e.Process(window.Event{Time: t0.Add(time.Duration(i) * step), Device: ids[d], Fields: payloads[d][(i/devices)%8], Seq: uint64(i + 1)})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

func BenchmarkRulePerEvent(b *testing.B) {
	for _, c := range []struct{ name, expr string }{
		{"avg (baseline)", "avg(temp) AS x"},
		{"spike(temp,0.99,60)", "spike(temp, 0.99, 60).score AS x"},
		{"changepoint(temp,0.99,120)", "changepoint(temp, 0.99, 120).score AS x"},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchPerEvent(b, "SELECT device, "+c.expr+" FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)")
		})
	}
}

// BenchmarkRuleOutliersWindow is the cost of closing one window of n devices with
// OUTLIERS(t, v): each iteration adds one event per device to a fresh minute and closes it
// (so it includes n events of engine work), reported per window and per device.
func BenchmarkRuleOutliersWindow(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, withOutliers := range []bool{false, true} {
			name := fmt.Sprintf("devices=%d/avg-only", n)
			q := "SELECT device, avg(temp) AS t, avg(vib) AS v FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)"
			if withOutliers {
				name = fmt.Sprintf("devices=%d/outliers", n)
				q += " OUTLIERS(t, v)"
			}
			b.Run(name, func(b *testing.B) {
				e := engine(b, q)
				r := rand.New(rand.NewPCG(3, 4))
				ids := make([]string, n)
				payloads := make([]map[string]any, n)
				for i := range ids {
					ids[i] = fmt.Sprintf("th-%05d", i)
					payloads[i] = map[string]any{"temp": 20 + r.NormFloat64(), "vib": 1 + r.NormFloat64()*0.1}
				}
				t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
				seq := uint64(0)
				b.ReportAllocs()
				b.ResetTimer()
				results := 0
				for k := range b.N {
					at := t0.Add(time.Duration(k) * time.Minute)
					for i := range ids {
						seq++
						rs, _ := e.Process(window.Event{Time: at, Device: ids[i], Fields: payloads[i], Seq: seq})
						results += len(rs)
					}
				}
				results += len(e.Flush())
				if results != b.N*n {
					b.Fatalf("%d results, want %d", results, b.N*n)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/window")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
			})
		}
	}
}
