// Package eval measures the anomaly detectors of the rule language against ground truth: a
// virtual fleet from the simulator (simulator/fleet) with labelled anomalies — single-point
// spikes and dips, drifts, stuck values, level shifts, devices that run apart from their
// peers — is generated offline and run through rules compiled by rules/sql and evaluated by
// the window engine, exactly as the hub and its backtests run them. Run prints precision and
// recall per detector:
//
//	go test ./anomaly/eval -run TestEvaluate -v
package eval

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/simulator/fleet"
	"github.com/tributary-iot/tributary/streams/window"
)

// Score is one detector's result against the labels.
type Score struct {
	Detector string
	Query    string
	// Unit is what is counted: points, alarms or device-windows.
	Unit              string
	TP, FP, FN        int
	Precision, Recall float64
	Labelled, Flagged int
	MedianDelay       time.Duration // change points: from the anomaly's start to the first flag
	Events, Results   int
}

// count adds one item that is labelled or not and flagged or not.
func (s *Score) count(labelled, flagged bool) {
	switch {
	case labelled && flagged:
		s.TP++
	case labelled:
		s.FN++
	case flagged:
		s.FP++
	}
	if labelled {
		s.Labelled++
	}
	if flagged {
		s.Flagged++
	}
}

func (s *Score) finish() {
	if s.TP+s.FP > 0 {
		s.Precision = float64(s.TP) / float64(s.TP+s.FP)
	}
	if s.TP+s.FN > 0 {
		s.Recall = float64(s.TP) / float64(s.TP+s.FN)
	}
}

// Config sizes the evaluation fleet.
type Config struct {
	Seed     int64
	Duration time.Duration // of the run (default 1h)
}

// The fleet: three profiles, one per detector, so that each is scored on the anomalies it is
// for. Values are noisy (σ 0.3 for temperatures) around a slow daily-like sine, rounded to
// 3 decimals as the simulator sends them.
const fleetHead = `
name: eval
duration: %s
profiles:
  - name: spiky
    devices: 20
    protocol: mqtt
    rate: 1/s
    fields:
      temp: {model: sine, mean: 21, amplitude: 1, period: 6h, noise: 0.3}
    anomalies:
%s
  - name: drifty
    devices: 20
    protocol: mqtt
    rate: 1/s
    fields:
      temp: {model: sine, mean: 21, amplitude: 1, period: 6h, noise: 0.3}
    anomalies:
%s
  - name: fleet
    devices: 200
    protocol: mqtt
    rate: 6/m
    fields:
      temp: {model: constant, value: 21, noise: 0.5}
      vib: {model: constant, value: 1, noise: 0.05}
    anomalies:
%s
`

// Queries evaluated (%g: the confidence); per event (COUNTWINDOW(1)) for the per-series
// detectors, per minute for fleet outliers.
const (
	SpikeQuery = `SELECT device, spike(temp, %g, 60).anomaly AS a FROM 'devices/+/telemetry'
		WHERE type = 'spiky' GROUP BY device, COUNTWINDOW(1)`
	ChangeQuery = `SELECT device, changepoint(temp, %g, 120).anomaly AS a FROM 'devices/+/telemetry'
		WHERE type = 'drifty' GROUP BY device, COUNTWINDOW(1)`
	OutlierQuery = `SELECT device, avg(temp) AS t, avg(vib) AS v FROM 'devices/+/telemetry'
		WHERE type = 'fleet' GROUP BY device, TUMBLING(1m) OUTLIERS(t, v) EXPECT 0.02`
)

// definition writes the fleet file: anomalies at random times, from the seed.
func definition(cfg Config) (string, error) {
	r := rand.New(rand.NewPCG(uint64(cfg.Seed), 7))
	minutes := int(cfg.Duration / time.Minute)
	var spikes, changes, shifts strings.Builder
	// Two single-point spikes or dips of 5σ to 10σ per device and hour, at random.
	for range 40 * minutes / 60 {
		sign := 1 - 2*float64(r.IntN(2))
		fmt.Fprintf(&spikes, "      - {kind: spike, field: temp, at: %ds, magnitude: %.2f}\n",
			60+r.IntN((minutes-2)*60), sign*(1.5+1.5*r.Float64()))
	}
	// Every 10 minutes, on 4 devices each: a drift of ±2 (6.7σ) over 5 minutes, a value stuck
	// for 5 minutes, or a level shift of ±1 (3.3σ) for 5 minutes, in turn. A device has at most
	// one at a time; after each, 5 minutes without.
	kinds := []string{"drift", "stuck", "shift"}
	for k, at := 0, 5; at+6 < minutes; k, at = k+1, at+10 {
		sign := 1 - 2*float64(r.IntN(2))
		switch kinds[k%3] {
		case "drift":
			fmt.Fprintf(&changes, "      - {kind: drift, field: temp, at: %dm, duration: 5m, magnitude: %g, devices: 4}\n", at, 2*sign)
		case "stuck":
			fmt.Fprintf(&changes, "      - {kind: stuck, field: temp, at: %dm, duration: 5m, devices: 4}\n", at)
		case "shift":
			fmt.Fprintf(&changes, "      - {kind: spike, field: temp, at: %dm, duration: 5m, magnitude: %g, devices: 4}\n", at, sign)
		}
	}
	// Every 10 minutes, 4 of the 200 devices (2%) run apart for 5 minutes: temperature +1.6 or
	// vibration +0.16 (8σ of a minute's average of 6 readings), or temperature +1 (5σ), in turn.
	for k, at := 0, 5; at+6 < minutes; k, at = k+1, at+10 {
		switch k % 3 {
		case 0:
			fmt.Fprintf(&shifts, "      - {kind: spike, field: temp, at: %dm, duration: 5m, magnitude: 1.6, devices: 4}\n", at)
		case 1:
			fmt.Fprintf(&shifts, "      - {kind: spike, field: vib, at: %dm, duration: 5m, magnitude: 0.16, devices: 4}\n", at)
		case 2:
			fmt.Fprintf(&shifts, "      - {kind: spike, field: temp, at: %dm, duration: 5m, magnitude: 1, devices: 4}\n", at)
		}
	}
	return fmt.Sprintf(fleetHead, cfg.Duration, spikes.String(), changes.String(), shifts.String()), nil
}

// sample is a generated message with its labels.
type sample struct {
	fleet.Sample
	seq uint64
}

// Run generates the fleet and scores every detector.
func Run(cfg Config) ([]Score, error) {
	if cfg.Duration == 0 {
		cfg.Duration = time.Hour
	}
	src, err := definition(cfg)
	if err != nil {
		return nil, err
	}
	def, err := fleet.Parse([]byte(src), "yaml")
	if err != nil {
		return nil, fmt.Errorf("evaluation fleet: %w", err)
	}
	plan := fleet.NewPlan(def, cfg.Seed)
	start := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	// Each profile's messages go to its rule only (the rules' WHERE would drop the others).
	byType := map[string][]sample{}
	seq := uint64(0)
	plan.Samples(start, cfg.Duration, func(s fleet.Sample) bool {
		seq++
		byType[s.Type] = append(byType[s.Type], sample{s, seq})
		return true
	})
	var scores []Score
	for _, c := range []float64{0.999, 0.9999} {
		s, err := scoreSpike(byType["spiky"], c)
		if err != nil {
			return nil, err
		}
		scores = append(scores, s)
	}
	for _, c := range []float64{0.99, 0.9999} {
		s, err := scoreChange(byType["drifty"], c)
		if err != nil {
			return nil, err
		}
		scores = append(scores, s)
	}
	out, err := scoreOutliers(byType["fleet"])
	if err != nil {
		return nil, err
	}
	return append(scores, out), nil
}

// run feeds the samples through a rule and returns its results.
func run(name, query string, samples []sample) ([]window.Result, error) {
	rule, err := sql.Compile(name, query)
	if err != nil {
		return nil, err
	}
	e, err := window.New(rule.Plan, window.Options{Lateness: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	var out []window.Result
	for _, s := range samples {
		res, _ := e.Process(window.Event{Time: s.Time, Received: s.Time, Device: s.Device, Type: s.Type,
			Fields: s.Values, Seq: s.seq})
		out = append(out, res...)
	}
	return append(out, e.Flush()...), nil
}

type key struct {
	device string
	at     int64
}

func labelled(s sample, kinds ...string) *fleet.Window {
	for i, w := range s.Anomalies {
		if w.Field == "temp" && slices.Contains(kinds, w.Kind) {
			return &s.Anomalies[i]
		}
	}
	return nil
}

// scoreSpike counts points: a flagged point is right if it is a labelled spike or dip.
func scoreSpike(samples []sample, conf float64) (Score, error) {
	s := Score{Detector: fmt.Sprintf("spike(temp, %g, 60)", conf), Query: fmt.Sprintf(SpikeQuery, conf), Unit: "points"}
	res, err := run("spike", s.Query, samples)
	if err != nil {
		return s, err
	}
	flagged := map[key]bool{}
	for _, r := range res {
		if r.Values["a"] == true {
			flagged[key{r.Group["device"].(string), r.WindowStart.UnixNano()}] = true
		}
	}
	for _, x := range samples {
		if x.Type != "spiky" {
			continue
		}
		s.Events++
		s.count(labelled(x, fleet.Spike) != nil, flagged[key{x.Device, x.Time.UnixNano()}])
	}
	s.Results = len(res)
	s.finish()
	return s, nil
}

// scoreChange counts alarms: runs of flagged points of a device (a new alarm after a minute
// without flags). An alarm is right if it starts during a labelled drift, stuck value or level
// shift, or within the detector's history (120 points) after it, while the history still
// holds the change (the end of a shift or of a stuck value is a change too). An anomaly is
// found if a flag falls between its start and 30 points (the recent part) after its end.
func scoreChange(samples []sample, conf float64) (Score, error) {
	s := Score{Detector: fmt.Sprintf("changepoint(temp, %g, 120)", conf), Query: fmt.Sprintf(ChangeQuery, conf), Unit: "alarms"}
	res, err := run("change", s.Query, samples)
	if err != nil {
		return s, err
	}
	flags := map[string][]time.Time{}
	for _, r := range res {
		if r.Values["a"] == true {
			d := r.Group["device"].(string)
			flags[d] = append(flags[d], r.WindowStart)
		}
	}
	type truth struct {
		device     string
		start, end time.Time
	}
	var truths []truth
	seen := map[truth]bool{}
	for _, x := range samples {
		if x.Type != "drifty" {
			continue
		}
		s.Events++
		if w := labelled(x, fleet.Drift, fleet.Stuck, fleet.Spike); w != nil {
			start := x.Time.Add(-x.Offset)
			tr := truth{x.Device, start.Add(w.From), start.Add(w.To)}
			if !seen[tr] {
				seen[tr] = true
				truths = append(truths, tr)
			}
		}
	}
	s.Labelled = len(truths)
	const history, recent = 120 * time.Second, 30 * time.Second
	within := func(d string, t time.Time, after time.Duration) bool {
		for _, tr := range truths {
			if tr.device == d && !t.Before(tr.start) && t.Before(tr.end.Add(after)) {
				return true
			}
		}
		return false
	}
	for d, fs := range flags {
		slices.SortFunc(fs, func(a, b time.Time) int { return a.Compare(b) })
		for i, f := range fs {
			if i > 0 && f.Sub(fs[i-1]) <= time.Minute {
				continue // same alarm
			}
			s.Flagged++
			if within(d, f, history) {
				s.TP++
			} else {
				s.FP++
			}
		}
	}
	var delays []time.Duration
	found := 0
	for _, tr := range truths {
		for _, f := range flags[tr.device] {
			if !f.Before(tr.start) && f.Before(tr.end.Add(recent)) {
				found++
				delays = append(delays, f.Sub(tr.start))
				break
			}
		}
	}
	if len(delays) > 0 {
		slices.Sort(delays)
		s.MedianDelay = delays[len(delays)/2]
	}
	// Precision is over alarms, recall over labelled anomalies.
	s.FN = len(truths) - found
	s.Results = len(res)
	s.finish()
	s.Recall = float64(found) / float64(max(len(truths), 1))
	return s, nil
}

// scoreOutliers counts device-minutes: a device is an outlier in a window if one of its
// anomalies covers the whole minute; minutes it covers in part are left out of the count.
func scoreOutliers(samples []sample) (Score, error) {
	s := Score{Detector: "OUTLIERS(t, v) EXPECT 0.02", Query: OutlierQuery, Unit: "device-minutes"}
	res, err := run("outliers", OutlierQuery, samples)
	if err != nil {
		return s, err
	}
	type span struct{ from, to time.Duration }
	anomalies := map[string][]span{}
	var start time.Time
	for _, x := range samples {
		if x.Type != "fleet" {
			continue
		}
		s.Events++
		start = x.Time.Add(-x.Offset)
		for _, w := range x.Anomalies {
			sp := span{w.From, w.To}
			if !slices.Contains(anomalies[x.Device], sp) {
				anomalies[x.Device] = append(anomalies[x.Device], sp)
			}
		}
	}
	for _, r := range res {
		d := r.Group["device"].(string)
		from, to := r.WindowStart.Sub(start), r.WindowEnd.Sub(start)
		full, part := false, false
		for _, sp := range anomalies[d] {
			if sp.from <= from && sp.to >= to {
				full = true
			} else if sp.from < to && sp.to > from {
				part = true
			}
		}
		if part && !full {
			continue
		}
		s.count(full, r.Values["outlier"] == true)
	}
	s.Results = len(res)
	s.finish()
	return s, nil
}

// Table formats scores for the README.
func Table(scores []Score) string {
	var b strings.Builder
	b.WriteString("| detector | counted | labelled | flagged | TP | FP | FN | precision | recall |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range scores {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %.3f | %.3f |\n", s.Detector, s.Unit, s.Labelled, s.Flagged, s.TP, s.FP, s.FN, s.Precision, s.Recall)
	}
	return b.String()
}
