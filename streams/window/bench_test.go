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
func benchEngine(b *testing.B, query string, devices int, opts window.Options) int {
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
	return results
}

// BenchmarkTumblingAvg1000Devices is the engine alone: avg over TUMBLING(1m)
// grouped by 1,000 devices, each sending once a second. Run it on one core:
//
//	go test ./streams/window -run '^$' -bench TumblingAvg1000Devices -cpu 1 -benchtime 5000000x
func BenchmarkTumblingAvg1000Devices(b *testing.B) {
	results := benchEngine(b, avgQuery+"TUMBLING(1m)", 1000, window.Options{Lateness: 5 * time.Second})
	if b.N > 2*60*1000 && results == 0 {
		b.Fatal("no results")
	}
}

// BenchmarkWindows compares the window kinds on the same input.
func BenchmarkWindows(b *testing.B) {
	// Devices send every second: SESSION(5s) never closes, SESSION(800ms)
	// closes one session per event.
	for _, w := range []string{"TUMBLING(1m)", "HOPPING(1m, 15s)", "SLIDING(10s)", "SESSION(5s)", "SESSION(800ms)", "COUNTWINDOW(60)"} {
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
// 100,000 open windows, group state included. With TUMBLING each device has
// one window; with HOPPING(1m, 15s) each of 25,000 devices has four, which
// shows the cost of a window beyond the group's.
//
//	go test ./streams/window -run '^$' -bench OpenWindowMemory -benchtime 3x
func BenchmarkOpenWindowMemory(b *testing.B) {
	const windows = 100_000
	for _, c := range []struct {
		name, query string
		perGroup    int
	}{
		{"avg", avgQuery + "TUMBLING(1m)", 1},
		{"count-sum-avg-min-max", "SELECT device, count(*) AS n, sum(temperature) AS s, avg(temperature) AS a, min(temperature) AS lo, " +
			"max(temperature) AS hi FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)", 1},
		{"avg-hopping-4-per-group", avgQuery + "HOPPING(1m, 15s)", 4},
	} {
		b.Run(c.name, func(b *testing.B) {
			n := windows / c.perGroup
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
				if got := e.Stats().OpenWindows; got != windows {
					b.Fatalf("open windows: got %d, want %d", got, windows)
				}
				perWindow = float64(after.HeapAlloc-before.HeapAlloc) / windows
				runtime.KeepAlive(e)
			}
			runtime.KeepAlive(payloads)
			b.ReportMetric(perWindow, "bytes/window")
		})
	}
}
