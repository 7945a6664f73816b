package fleet

import (
	"encoding/json"
	"testing"
	"time"
)

// TestSamplesMatchLiveTicks: offline samples carry the values a live device sends (the same
// payloads, without transport effects), in send order, with their ground truth.
func TestSamplesMatchLiveTicks(t *testing.T) {
	const def = `
name: gen
profiles:
  - name: p
    devices: 3
    protocol: mqtt
    rate: 10/s
    clock_skew: 1s
    fields:
      t: {model: sine, mean: 20, amplitude: 2, period: 2s, noise: 0.5}
      w: {model: random_walk, start: 50, step: 1}
    anomalies:
      - {kind: spike, field: t, at: 1s, duration: 500ms, magnitude: 100, devices: 2}
      - {kind: dropout, at: 3s, duration: 500ms, devices: 1}
`
	plan := mustPlan(t, def, 5)
	start := time.Unix(1_800_000_000, 0)
	byDevice := map[string][]Sample{}
	var last time.Duration
	plan.Samples(start, 4*time.Second, func(s Sample) bool {
		if s.Offset < last {
			t.Fatalf("sample of %s at %s after %s", s.Device, s.Offset, last)
		}
		last = s.Offset
		byDevice[s.Device] = append(byDevice[s.Device], s)
		return true
	})
	spiked := 0
	for i, d := range plan.Devices {
		live := payloads(t, plan, i, 40)
		got := byDevice[d.ID]
		if len(got) != len(live) {
			t.Fatalf("%s: %d samples, %d live messages", d.ID, len(got), len(live))
		}
		for k, s := range got {
			var m map[string]any
			if err := json.Unmarshal(live[k], &m); err != nil {
				t.Fatal(err)
			}
			if m["t"] != s.Values["t"] || m["w"] != s.Values["w"] || int64(m["ts"].(float64)) != s.Time.UnixMilli() {
				t.Fatalf("%s sample %d: %v, live %s", d.ID, k, s, live[k])
			}
			inSpike := s.Offset >= time.Second && s.Offset < 1500*time.Millisecond && len(d.Anomalies) > 0 && d.Anomalies[0].Kind == Spike
			if inSpike != (len(s.Anomalies) == 1 && s.Anomalies[0].Kind == Spike) {
				t.Fatalf("%s sample %d at %s: truth %v", d.ID, k, s.Offset, s.Anomalies)
			}
			if inSpike {
				spiked++
			}
		}
	}
	if spiked != 10 {
		t.Fatalf("%d samples labelled spike, want 10 (2 devices × 5)", spiked)
	}
}
