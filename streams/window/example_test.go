package window_test

import (
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/streams/window"
)

func Example() {
	rule, err := sql.Compile("hot_rooms", `
		SELECT device, avg(temperature) AS avg_t, count(*) AS n
		FROM 'devices/+/telemetry'
		GROUP BY device, TUMBLING(1m)
		HAVING avg_t > 28`)
	if err != nil {
		panic(err)
	}
	e, err := window.New(rule.Plan, window.Options{Lateness: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	t0 := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	for i, m := range []struct {
		device string
		sec    int
		temp   float64
	}{
		{"th-1", 10, 29}, {"th-2", 20, 21}, {"th-1", 40, 30},
		{"th-1", 20, 31}, // out of order, still in its window
		{"th-2", 66, 22}, // the watermark passes 12:01 + 5s: the first minute closes
		{"th-1", 50, 40}, // too late for the closed window
	} {
		results, disposition := e.Process(window.Event{
			Time:   t0.Add(time.Duration(m.sec) * time.Second),
			Device: m.device,
			Fields: map[string]any{"temperature": m.temp},
			Seq:    uint64(i + 1),
		})
		fmt.Printf("%s %ds: %s\n", m.device, m.sec, disposition)
		for _, r := range results {
			fmt.Printf("  result %s %s-%s avg_t=%v n=%v\n", r.GroupKey,
				r.WindowStart.Format("15:04:05"), r.WindowEnd.Format("15:04:05"), r.Values["avg_t"], r.Values["n"])
		}
	}
	st := e.Stats()
	fmt.Printf("accepted %d, late %d, dropped by HAVING %d\n", st.Accepted, st.Late, st.HavingFiltered)
	// Output:
	// th-1 10s: accepted
	// th-2 20s: accepted
	// th-1 40s: accepted
	// th-1 20s: accepted
	// th-2 66s: accepted
	//   result ["th-1"] 12:00:00-12:01:00 avg_t=30 n=3
	// th-1 50s: late
	// accepted 5, late 1, dropped by HAVING 1
}
