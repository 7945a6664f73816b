package rules_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestAnomalyRestartIsExact stops and restarts the manager while events flow into a rule
// with a spike score (whose history spans windows) and fleet outliers: the results equal those
// of a run that was never stopped, because the histories are in the checkpoint.
func TestAnomalyRestartIsExact(t *testing.T) {
	t.Parallel()
	const q = `SELECT device, spike(t, 0.999, 8).score AS s, changepoint(t, 0.999, 16).score AS c, avg(t) AS a
		FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) OUTLIERS(a)`
	run := func(t *testing.T, restartAt int) []string {
		bus := streamstest.New(t)
		m := startManager(t, bus, newDevices(), fastConfig)
		mustCreate(t, m, rules.Spec{Name: "anom", SQL: q, Lateness: rules.D(2 * time.Second), IdleTimeout: rules.D(0)})
		r := rand.New(rand.NewPCG(8, 8))
		for i := range 62 {
			if i == restartAt {
				m.stop()
				m = startManager(t, bus, newDevices(), fastConfig)
				waitRunning(t, m, "anom")
			}
			for d := range 6 {
				v := 20 + r.NormFloat64()
				if d == 2 && i >= 30 && i < 40 {
					v += 5 // runs hot for a window
				}
				if d == 4 && i == 45 {
					v += 9 // a spike
				}
				telemetry(t, bus, fmt.Sprintf("d%d", d), base.Add(time.Duration(i)*time.Second), map[string]any{"t": v})
			}
		}
		return summary(waitResults(t, m, "anom", 5*6))
	}
	want := run(t, -1)
	got := run(t, 33)
	if !slices.Equal(got, want) {
		t.Errorf("after a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The verdicts and scores are there: d2 is the outlier in [30s, 40s), d4 spikes in [40s, 50s).
	var outliers, spikes []string
	for _, l := range want {
		var dev, at string
		fmt.Sscanf(l[strings.Index(l, `{"device":"`)+11:], "%2s", &dev)
		at = l[strings.Index(l, " [")+2 : strings.Index(l, " [")+10]
		if strings.Contains(l, `"outlier":true`) {
			outliers = append(outliers, dev+"@"+at)
		}
		var s float64
		if i := strings.Index(l, `"s":`); i >= 0 {
			fmt.Sscanf(l[i+4:], "%g", &s)
		}
		if s > 10 {
			spikes = append(spikes, dev+"@"+at)
		}
	}
	if !slices.Equal(outliers, []string{"d2@10:00:30"}) || !slices.Equal(spikes, []string{"d4@10:00:40"}) {
		t.Errorf("outliers %v (want d2@10:00:30), spike scores above 10 %v (want d4@10:00:40)", outliers, spikes)
	}
}
