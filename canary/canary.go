// Package canary scores a canary group of devices against a control group: per interval,
// for each metric, is the canary higher, lower or the same as the control, and is that
// worse? It is pure (no I/O, no clocks): the rules runtime (rules/canary*.go) feeds it the
// per-device aggregates of each closed event-time window.
//
// Per interval and metric, each group is a set of units, one per device that sent the metric,
// holding the device's mean and its number of readings. Two methods compare them:
//
//   - "ratio" (ratio of means): the relative difference d = (canary mean − control mean) /
//     |control mean| of the means over all readings. high when d > tolerance, low when
//     d < −tolerance, else same.
//   - "mann-whitney": the Mann–Whitney U rank test over the devices' means (normal
//     approximation with tie and continuity correction, two-sided). high or low when
//     p < significance and |d| > tolerance (in the direction of d), else same. Devices, not
//     readings, are the units: readings of one device are correlated, and a device that sends
//     more often should not weigh more.
//
// A metric is worse when it moved against its direction: high for "lower is better", low for
// "higher is better". The interval's score is the share of metrics with data where the canary
// is not worse, and it passes when score >= threshold. The cumulative verdict is the mean score
// of the last N conclusive intervals against the same threshold.
package canary

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Directions: which way is better for a metric.
const (
	LowerIsBetter  = "lower"
	HigherIsBetter = "higher"
)

// Methods.
const (
	MethodRatio       = "ratio"
	MethodMannWhitney = "mann-whitney"
)

// Class is how the canary compares with the control for one metric in one interval.
type Class string

// Classes.
const (
	High   Class = "high"
	Low    Class = "low"
	Same   Class = "same"
	NoData Class = "nodata" // a group has no reading of the metric in the interval
)

// Statuses of an interval and of the verdict.
const (
	StatusPass         = "pass"
	StatusFail         = "fail"
	StatusInconclusive = "inconclusive" // no metric had data in both groups
)

// Defaults.
const (
	DefaultTolerance    = 0.05
	DefaultSignificance = 0.05
	DefaultThreshold    = 0.9
	DefaultIntervals    = 5
	DefaultMinDevices   = 5
	DefaultMinSamples   = 30
	MaxMetrics          = 32
	MaxIntervals        = 1000
)

// Metric is one telemetry field compared between the groups.
type Metric struct {
	// Field is the telemetry field, e.g. "latency" or "env.rh" (flattened name).
	Field string `json:"field"`
	// Better is "lower" (default: lower is better, e.g. latency, errors) or "higher".
	Better string `json:"better,omitempty"`
	// Method is "ratio" (default) or "mann-whitney".
	Method string `json:"method,omitempty"`
	// Tolerance is the relative difference of means that still counts as the same, as a
	// fraction: 0.05 is 5% (default 0.05; 0 to 10).
	Tolerance *float64 `json:"tolerance,omitempty"`
	// Significance is the Mann–Whitney test's level (default 0.05; above 0, below 1).
	Significance float64 `json:"significance,omitempty"`
}

// Config is the scoring part of a canary definition.
type Config struct {
	Metrics []Metric `json:"metrics"`
	// Threshold is the score an interval, and the verdict, needs to pass (default 0.9; 0 to 1).
	Threshold *float64 `json:"threshold,omitempty"`
	// Intervals is how many of the latest conclusive intervals the verdict averages (default 5).
	Intervals int `json:"intervals,omitempty"`
	// MinDevices and MinSamples are the group sizes below which a result carries a warning
	// (defaults 5 devices, 30 readings per metric).
	MinDevices int `json:"min_devices,omitempty"`
	MinSamples int `json:"min_samples,omitempty"`
}

// InvalidError is a problem with a definition, naming the field.
type InvalidError struct {
	Field string
	Msg   string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Msg }

func invalidf(field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ValidField reports whether s is usable as a metric field: letters, digits, '_', '-' and
// '.', starting with a letter or '_', at most 128 bytes.
func ValidField(s string) bool {
	if s == "" || len(s) > 128 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case (c >= '0' && c <= '9' || c == '-' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Normalize validates c and fills in every default. Errors are *InvalidError.
func (c *Config) Normalize() error {
	if len(c.Metrics) == 0 {
		return invalidf("metrics", "missing: give at least one metric, e.g. {\"field\": \"latency\", \"better\": \"lower\"}")
	}
	if len(c.Metrics) > MaxMetrics {
		return invalidf("metrics", "at most %d metrics, got %d", MaxMetrics, len(c.Metrics))
	}
	seen := map[string]bool{}
	for i := range c.Metrics {
		m := &c.Metrics[i]
		f := fmt.Sprintf("metrics[%d]", i)
		if !ValidField(m.Field) {
			return invalidf(f+".field", "%q: want a telemetry field name (letters, digits, '_', '-', '.')", m.Field)
		}
		if seen[m.Field] {
			return invalidf(f+".field", "%q is listed twice", m.Field)
		}
		seen[m.Field] = true
		switch m.Better {
		case "":
			m.Better = LowerIsBetter
		case LowerIsBetter, HigherIsBetter:
		default:
			return invalidf(f+".better", "want %q or %q, got %q", LowerIsBetter, HigherIsBetter, m.Better)
		}
		switch m.Method {
		case "":
			m.Method = MethodRatio
		case MethodRatio, MethodMannWhitney:
		default:
			return invalidf(f+".method", "unknown method %q: want %q or %q", m.Method, MethodRatio, MethodMannWhitney)
		}
		if m.Tolerance == nil {
			t := DefaultTolerance
			m.Tolerance = &t
		} else if t := *m.Tolerance; !(t >= 0 && t <= 10) {
			return invalidf(f+".tolerance", "want a fraction from 0 to 10 (0.05 is 5%%), got %g", t)
		}
		switch {
		case m.Significance == 0 && m.Method == MethodMannWhitney:
			m.Significance = DefaultSignificance
		case m.Significance == 0:
		case m.Method != MethodMannWhitney:
			return invalidf(f+".significance", "only used by method %q", MethodMannWhitney)
		case !(m.Significance > 0 && m.Significance < 1):
			return invalidf(f+".significance", "want a level above 0 and below 1, e.g. 0.05, got %g", m.Significance)
		}
	}
	if c.Threshold == nil {
		t := DefaultThreshold
		c.Threshold = &t
	} else if t := *c.Threshold; !(t >= 0 && t <= 1) {
		return invalidf("threshold", "want a share from 0 to 1, e.g. 0.9, got %g", t)
	}
	switch {
	case c.Intervals == 0:
		c.Intervals = DefaultIntervals
	case c.Intervals < 0 || c.Intervals > MaxIntervals:
		return invalidf("intervals", "want 1 to %d, got %d", MaxIntervals, c.Intervals)
	}
	switch {
	case c.MinDevices == 0:
		c.MinDevices = DefaultMinDevices
	case c.MinDevices < 0:
		return invalidf("min_devices", "must not be negative, got %d", c.MinDevices)
	}
	switch {
	case c.MinSamples == 0:
		c.MinSamples = DefaultMinSamples
	case c.MinSamples < 0:
		return invalidf("min_samples", "must not be negative, got %d", c.MinSamples)
	}
	return nil
}

// Unit is one device's readings of one metric in one interval.
type Unit struct {
	Mean float64
	N    int
}

// Group is one group's data in one interval.
type Group struct {
	// Devices is the number of distinct devices of the group that sent anything.
	Devices int
	// Metrics holds, in Config.Metrics order, the units of each metric.
	Metrics [][]Unit
}

// MetricResult is one metric's comparison in one interval.
type MetricResult struct {
	Field  string `json:"field"`
	Better string `json:"better"`
	Method string `json:"method"`
	Class  Class  `json:"class"`
	// Worse is true when the canary moved against the metric's direction.
	Worse bool `json:"worse"`
	// Means over all readings of each group, and (canary − control) / |control|.
	CanaryMean   *float64 `json:"canary_mean,omitempty"`
	ControlMean  *float64 `json:"control_mean,omitempty"`
	RelativeDiff *float64 `json:"relative_diff,omitempty"`
	// PValue of the Mann–Whitney test (two-sided).
	PValue *float64 `json:"p_value,omitempty"`
	// Readings and devices of each group that carried the metric.
	CanarySamples  int `json:"canary_samples"`
	ControlSamples int `json:"control_samples"`
	CanaryDevices  int `json:"canary_devices"`
	ControlDevices int `json:"control_devices"`
}

// Interval is the outcome of one interval.
type Interval struct {
	Status         string         `json:"status"`
	Pass           bool           `json:"pass"`
	Score          float64        `json:"score"`
	CanaryDevices  int            `json:"canary_devices"`
	ControlDevices int            `json:"control_devices"`
	Metrics        []MetricResult `json:"metrics"`
	Warnings       []string       `json:"warnings"`
}

// Evaluate compares the groups for one interval. cfg must be normalised.
func Evaluate(cfg *Config, canary, control Group) Interval {
	out := Interval{CanaryDevices: canary.Devices, ControlDevices: control.Devices,
		Metrics: make([]MetricResult, len(cfg.Metrics)), Warnings: []string{}}
	for _, g := range []struct {
		name    string
		devices int
	}{{"canary", canary.Devices}, {"control", control.Devices}} {
		switch {
		case g.devices == 0:
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s group: no device sent data in this interval", g.name))
		case g.devices < cfg.MinDevices:
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s group: %d devices, fewer than %d: too small for a meaningful comparison", g.name, g.devices, cfg.MinDevices))
		}
	}
	var withData, notWorse int
	for i := range cfg.Metrics {
		m := &cfg.Metrics[i]
		var cu, ku []Unit
		if i < len(canary.Metrics) {
			cu = canary.Metrics[i]
		}
		if i < len(control.Metrics) {
			ku = control.Metrics[i]
		}
		r := compare(m, cu, ku)
		for _, g := range []struct {
			name string
			n    int
		}{{"canary", r.CanarySamples}, {"control", r.ControlSamples}} {
			if g.n > 0 && g.n < cfg.MinSamples {
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s group: %d samples of %s, fewer than %d: too few for a meaningful comparison", g.name, g.n, m.Field, cfg.MinSamples))
			}
		}
		if r.Class != NoData {
			withData++
			if !r.Worse {
				notWorse++
			}
		} else if canary.Devices > 0 && control.Devices > 0 {
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: no readings in the %s group", m.Field, missingSide(r)))
		}
		out.Metrics[i] = r
	}
	if withData == 0 {
		out.Status = StatusInconclusive
		return out
	}
	out.Score = float64(notWorse) / float64(withData)
	out.Pass = out.Score >= *cfg.Threshold
	out.Status = StatusFail
	if out.Pass {
		out.Status = StatusPass
	}
	return out
}

func missingSide(r MetricResult) string {
	switch {
	case r.CanarySamples == 0 && r.ControlSamples == 0:
		return "canary and control"
	case r.CanarySamples == 0:
		return "canary"
	}
	return "control"
}

func compare(m *Metric, canary, control []Unit) MetricResult {
	r := MetricResult{Field: m.Field, Better: m.Better, Method: m.Method, Class: NoData}
	cm, cn, cd := pooled(canary)
	km, kn, kd := pooled(control)
	r.CanarySamples, r.ControlSamples, r.CanaryDevices, r.ControlDevices = cn, kn, cd, kd
	if cn == 0 || kn == 0 {
		return r
	}
	d := relDiff(cm, km)
	r.CanaryMean, r.ControlMean, r.RelativeDiff = &cm, &km, &d
	tol := *m.Tolerance
	switch m.Method {
	case MethodMannWhitney:
		p := MannWhitney(means(canary), means(control))
		r.PValue = &p
		switch {
		case p >= m.Significance:
			r.Class = Same
		case d > tol:
			r.Class = High
		case d < -tol:
			r.Class = Low
		default:
			r.Class = Same
		}
	default:
		switch {
		case d > tol:
			r.Class = High
		case d < -tol:
			r.Class = Low
		default:
			r.Class = Same
		}
	}
	r.Worse = r.Class == High && m.Better == LowerIsBetter || r.Class == Low && m.Better == HigherIsBetter
	return r
}

// pooled returns the mean over all readings, the number of readings and of units with any.
func pooled(us []Unit) (mean float64, n, units int) {
	var sum float64
	for _, u := range us {
		if u.N <= 0 || math.IsNaN(u.Mean) || math.IsInf(u.Mean, 0) {
			continue
		}
		sum += u.Mean * float64(u.N)
		n += u.N
		units++
	}
	if n == 0 {
		return 0, 0, 0
	}
	return sum / float64(n), n, units
}

func means(us []Unit) []float64 {
	out := make([]float64, 0, len(us))
	for _, u := range us {
		if u.N > 0 && !math.IsNaN(u.Mean) && !math.IsInf(u.Mean, 0) {
			out = append(out, u.Mean)
		}
	}
	return out
}

// relDiff is (a − b) / |b|; when b is 0, relative to |a| (so 0 → 5 is +100%), and 0 when both are.
func relDiff(a, b float64) float64 {
	den := math.Abs(b)
	if den == 0 {
		den = math.Abs(a)
	}
	if den == 0 {
		return 0
	}
	return (a - b) / den
}

// MannWhitney returns the two-sided p-value of the Mann–Whitney U test of a against b, by the
// normal approximation with tie correction and continuity correction. It is 1 when either
// sample is empty or every value is tied.
func MannWhitney(a, b []float64) float64 {
	n1, n2 := len(a), len(b)
	if n1 == 0 || n2 == 0 {
		return 1
	}
	// Ranks by merging the sorted samples: ties (across both) get the average of their ranks.
	sa, sb := slices.Clone(a), slices.Clone(b)
	slices.Sort(sa)
	slices.Sort(sb)
	n := float64(n1 + n2)
	var r1, ties, pos float64
	for i, j := 0, 0; i < n1 || j < n2; {
		var v float64
		switch {
		case j == n2 || i < n1 && sa[i] <= sb[j]:
			v = sa[i]
		default:
			v = sb[j]
		}
		ca, cb := 0, 0
		for i < n1 && sa[i] == v {
			i, ca = i+1, ca+1
		}
		for j < n2 && sb[j] == v {
			j, cb = j+1, cb+1
		}
		t := float64(ca + cb)
		r1 += float64(ca) * (pos + (t+1)/2)
		if t > 1 {
			ties += t*t*t - t
		}
		pos += t
	}
	u1 := r1 - float64(n1)*float64(n1+1)/2
	mu := float64(n1) * float64(n2) / 2
	variance := float64(n1) * float64(n2) / 12 * ((n + 1) - ties/(n*(n-1)))
	if variance <= 0 {
		return 1
	}
	diff := math.Abs(u1-mu) - 0.5
	if diff <= 0 {
		return 1
	}
	z := diff / math.Sqrt(variance)
	return math.Erfc(z / math.Sqrt2)
}

// Outcome is what the verdict keeps of one interval.
type Outcome struct {
	Score float64 `json:"score"`
	Pass  bool    `json:"pass"`
}

// Verdict is the cumulative judgement over the latest intervals.
type Verdict struct {
	Status string  `json:"status"`
	Score  float64 `json:"score"`
	// Intervals is how many conclusive intervals it averages; Passed of them passed.
	Intervals int `json:"intervals"`
	Passed    int `json:"passed"`
}

// Record appends an interval's outcome to history, keeping the latest cfg.Intervals
// conclusive ones; inconclusive intervals are not recorded.
func Record(cfg *Config, history []Outcome, iv Interval) []Outcome {
	if iv.Status == StatusInconclusive {
		return history
	}
	history = append(history, Outcome{Score: iv.Score, Pass: iv.Pass})
	if over := len(history) - cfg.Intervals; over > 0 {
		history = slices.Delete(history, 0, over)
	}
	return history
}

// Judge returns the verdict over history (the latest conclusive intervals, oldest first).
func Judge(cfg *Config, history []Outcome) Verdict {
	v := Verdict{Status: StatusInconclusive, Intervals: len(history)}
	if len(history) == 0 {
		return v
	}
	var sum float64
	for _, o := range history {
		sum += o.Score
		if o.Pass {
			v.Passed++
		}
	}
	v.Score = sum / float64(len(history))
	v.Status = StatusFail
	if v.Score >= *cfg.Threshold {
		v.Status = StatusPass
	}
	return v
}
