package rules

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/streams/window"
)

// emitAll handles the windows closed by one event or clock tick.
func (r *runner) emitAll(ctx context.Context, res []window.Result, recv time.Time) error {
	if r.c.canary != nil {
		return r.emitCanary(ctx, res, recv)
	}
	for i := range res {
		if err := r.emit(ctx, res[i], recv); err != nil {
			return err
		}
	}
	return nil
}

// emitCanary scores the intervals that closed. The engine closes every device's row of a
// window in the same call (the watermark is per rule), so res holds whole intervals: rows
// sorted by window end, then start.
func (r *runner) emitCanary(ctx context.Context, res []window.Result, recv time.Time) error {
	return eachInterval(res, func(rows []window.Result) error { return r.scoreInterval(ctx, rows, recv) })
}

// eachInterval calls fn with the rows of each window in res (rows sorted by window end, then
// start), in order, until fn fails.
func eachInterval(res []window.Result, fn func(rows []window.Result) error) error {
	for i := 0; i < len(res); {
		j := i + 1
		for j < len(res) && res[j].WindowStart.Equal(res[i].WindowStart) && res[j].WindowEnd.Equal(res[i].WindowEnd) {
			j++
		}
		if err := fn(res[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// canaryGroups splits an interval's per-device rows into the canary and control groups.
// Devices matching both selectors are left out of both and counted.
func canaryGroups(d *CanaryDef, rows []window.Result) (can, ctl canary.Group, overlap int) {
	can.Metrics = make([][]canary.Unit, len(d.Metrics))
	ctl.Metrics = make([][]canary.Unit, len(d.Metrics))
	inCanary, inControl := d.Canary.matcher(), d.Control.matcher()
	meanKey, nKey := make([]string, len(d.Metrics)), make([]string, len(d.Metrics))
	for i := range d.Metrics {
		meanKey[i], nKey[i] = "m"+strconv.Itoa(i)+"_mean", "m"+strconv.Itoa(i)+"_n"
	}
	seen := make(map[string]int, len(rows)) // device → 1 canary, 2 control, 3 both
	for _, row := range rows {
		inC, inK := inCanary(row.Group), inControl(row.Group)
		id, _ := row.Group["device"].(string)
		var g *canary.Group
		switch {
		case inC && inK:
			seen[id] |= 3
			continue
		case inC:
			seen[id] |= 1
			g = &can
		case inK:
			seen[id] |= 2
			g = &ctl
		default:
			continue
		}
		for i := range d.Metrics {
			mean, ok := row.Values[meanKey[i]].(float64)
			n, _ := row.Values[nKey[i]].(float64)
			if ok && n > 0 {
				g.Metrics[i] = append(g.Metrics[i], canary.Unit{Mean: mean, N: int(n)})
			}
		}
	}
	for _, s := range seen {
		switch s {
		case 1:
			can.Devices++
		case 2:
			ctl.Devices++
		default:
			overlap++
		}
	}
	return can, ctl, overlap
}

// score scores one interval's rows and returns the history with it and the verdict over that.
func (d *CanaryDef) score(hist []canary.Outcome, rows []window.Result) (canary.Interval, []canary.Outcome, canary.Verdict) {
	can, ctl, overlap := canaryGroups(d, rows)
	iv := canary.Evaluate(&d.Config, can, ctl)
	if overlap > 0 {
		iv.Warnings = append(iv.Warnings, fmt.Sprintf("%d devices match both canary_group and control_group and are left out of both", overlap))
	}
	hist = canary.Record(&d.Config, hist, iv)
	return iv, hist, canary.Judge(&d.Config, hist)
}

// scoreInterval publishes one interval's result and the alerts its verdict calls for.
func (r *runner) scoreInterval(ctx context.Context, rows []window.Result, recv time.Time) error {
	var body Result
	var iv canary.Interval
	var v canary.Verdict
	body, r.canaryHist, iv, v = r.c.canary.result(r.rule.Name, r.canaryHist, rows)
	first := rows[0]
	if err := r.send(ctx, r.own+"results", body.ID+r.c.idTail, "", first.Time, recv, &body); err != nil {
		return err
	}
	r.results++
	r.met.results.Inc()
	r.lastResult = &body
	if iv.Status == canary.StatusInconclusive {
		return nil // no new evidence: neither fire nor clear
	}
	return r.notify(ctx, body.ID, body.GroupKey, "", first.Time, recv, &body, v.Status == canary.StatusFail)
}

// result scores one interval's rows after the outcomes hist and builds the result the canary
// rule publishes; live runs and backtests both make their results here.
func (d *CanaryDef) result(rule string, hist []canary.Outcome, rows []window.Result) (Result, []canary.Outcome, canary.Interval, canary.Verdict) {
	var iv canary.Interval
	var v canary.Verdict
	iv, hist, v = d.score(hist, rows)
	first := rows[0]
	id := rule + "/" + strconv.FormatInt(first.WindowStart.UnixNano(), 10) + "-" + strconv.FormatInt(first.WindowEnd.UnixNano(), 10) + "/canary"
	values := map[string]any{
		"status": iv.Status, "pass": iv.Pass, "score": iv.Score, "threshold": *d.Threshold,
		"canary_devices": iv.CanaryDevices, "control_devices": iv.ControlDevices,
		"verdict": v.Status, "verdict_score": v.Score, "verdict_intervals": v.Intervals, "verdict_passed": v.Passed,
		"metrics": iv.Metrics, "warnings": iv.Warnings, "warning_count": len(iv.Warnings),
	}
	// Flat per-metric values, so InfluxDB (which stores scalars) gets them too.
	for _, m := range iv.Metrics {
		values[m.Field+".class"] = string(m.Class)
		if m.CanaryMean != nil {
			values[m.Field+".canary_mean"] = *m.CanaryMean
			values[m.Field+".control_mean"] = *m.ControlMean
		}
	}
	body := Result{Rule: rule, ID: id, Group: map[string]any{}, GroupKey: "[]",
		WindowStart: first.WindowStart, WindowEnd: first.WindowEnd, Values: values}
	return body, hist, iv, v
}
