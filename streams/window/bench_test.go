package window_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

const avgQuery = "SELECT device, avg(temperature) AS avg_t FROM 'devices/+/telemetry' GROUP BY device, "

// fleet returns n device IDs and, per device, a few payloads to cycle
// through, built before the timer starts.
func fleet(n int) ([]string, [][]map[string]any) {
	ids := make([]string, n)
	payloads := make([][]map[string]any, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("th-%05d", i)
		for k := range 4 {
			payloads[i] = append(payloads[i], map[string]any{"temperature": 18 + float64((i+k)%70)/7, "humidity": 40.0})
		}
	}
	return ids, payloads
}

// benchEngine feeds b.N events: device i%devices, one event per device per
// second of event time, in time order, and reports events/s.
func benchEngine(b *testing.B, query string, devices int, opts window.Options) {
	e := engine(b, query, opts)
	ids, payloads := fleet(devices)
	step := time.Second / time.Duration(devices)
	b.ReportAllocs()
	b.ResetTimer()
	results := 0
	for i := range b.N {
		d := i % devices
		rs, _ := e.Process(window.Event{
			Time:   base.Add(time.Duration(i) * step),
			Device: ids[d],
			Type:   "thermostat",
			Fields: payloads[d][(i/devices)%4],
			Seq:    uint64(i + 1),
		})
		results += len(rs)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if b.N > 10*60*devices && results == 0 {
		b.Fatal("no results")
	}
}

// BenchmarkTumblingAvg1000Devices is the engine alone: avg over TUMBLING(1m)
// grouped by 1,000 devices, each sending once a second. Run it on one core:
//
//	go test ./streams/window -run '^$' -bench TumblingAvg1000Devices -cpu 1 -benchtime 5000000x
func BenchmarkTumblingAvg1000Devices(b *testing.B) {
	benchEngine(b, avgQuery+"TUMBLING(1m)", 1000, window.Options{Lateness: 5 * time.Second})
}

// BenchmarkWindows compares the window kinds on the same input.
func BenchmarkWindows(b *testing.B) {
	for _, w := range []string{"TUMBLING(1m)", "HOPPING(1m, 15s)", "SLIDING(10s)", "SESSION(5s)", "COUNTWINDOW(60)"} {
		b.Run(w, func(b *testing.B) {
			benchEngine(b, avgQuery+w, 1000, window.Options{Lateness: 5 * time.Second})
		})
	}
	b.Run("TUMBLING(1m)/all-aggregates", func(b *testing.B) {
		benchEngine(b, "SELECT device, count(*) AS n, sum(temperature) AS s, avg(temperature) AS a, min(temperature) AS lo, "+
			"max(temperature) AS hi, first(temperature) AS f, last(temperature) AS l, stddev(temperature) AS sd "+
			"FROM 'devices/+/telemetry' WHERE temperature > -50 GROUP BY device, TUMBLING(1m)", 1000, window.Options{Lateness: 5 * time.Second})
	})
}

// BenchmarkOpenWindowMemory measures the heap held per open group-window:
// 100,000 devices each with one open TUMBLING(1m) window, group state
// included.
func BenchmarkOpenWindowMemory(b *testing.B) {
	for _, c := range []struct{ name, query string }{
		{"avg", avgQuery + "TUMBLING(1m)"},
		{"count-sum-avg-min-max", "SELECT device, count(*) AS n, sum(temperature) AS s, avg(temperature) AS a, min(temperature) AS lo, " +
			"max(temperature) AS hi FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)"},
	} {
		b.Run(c.name, func(b *testing.B) {
			const n = 100_000
			ids, payloads := fleet(n)
			p := plan(b, c.query)
			var perWindow float64
			b.ReportAllocs()
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				e, err := window.New(p, window.Options{})
				if err != nil {
					b.Fatal(err)
				}
				for i := range n {
					e.Process(window.Event{Time: base.Add(time.Duration(i) * time.Microsecond), Device: ids[i], Fields: payloads[i][0]})
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if got := e.Stats().OpenWindows; got != n {
					b.Fatalf("open windows: got %d, want %d", got, n)
				}
				perWindow = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(e)
			}
			runtime.KeepAlive(payloads)
			b.ReportMetric(perWindow, "bytes/window")
		})
	}
}
