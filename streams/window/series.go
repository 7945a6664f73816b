package window

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tributary-iot/tributary/anomaly"
)

// Series functions are aggregates whose state outlives a window: per group, they keep a
// trailing history of the group's values across its windows, such as spike(x, c, n), the
// spike/dip detector. They return a record of Fields (spike(x, 0.99, 60).score), each
// window's value being computed from the window's points and the group's history.
//
// How the engine runs them, so that results stay deterministic and independent of arrival
// order within the lateness:
//
//   - During a window, the function's argument is collected per event, like percentile.
//   - When the window closes, its points are sorted by event time (ties by input sequence)
//     and handed to the group's SeriesState, which scores them against the history, adds
//     them to it and returns the window's record. Windows of a group close in time order, so
//     the history sees the group's points in event-time order.
//   - Windows must not overlap (TUMBLING, SESSION, COUNTWINDOW): HOPPING and SLIDING windows
//     share events, which would enter the history twice.
//   - A group's series state is part of the engine's snapshot, and is kept also when the
//     group has no open window (about 8 bytes per history point per group and function),
//     until the watermark passes the end of the group's last window by the series TTL:
//     the longest history of the plan's series functions times the window's size (TUMBLING)
//     or gap (SESSION), and at least 24 hours. Then the group is dropped, and a device that
//     comes back starts a fresh history. Expiry follows event time only, so replays expire
//     the same groups at the same points.

// SeriesState is the per-group state of a series function.
type SeriesState interface {
	// Window scores the numbers of one closed window, in event-time order (possibly none),
	// adds them to the history and writes the window's record (one Value per field of the
	// function) to out.
	Window(points []float64, out []Value)
	// AppendState appends the state in a form ReadState restores exactly.
	AppendState(b []byte) []byte
	// ReadState restores the state from the front of b and returns the rest.
	ReadState(b []byte) ([]byte, error)
}

// pointsAgg collects a window's numbers with their time and sequence, for a series function.
type pointsAgg struct {
	pts    []point
	sorted bool
	vals   []float64
}

type point struct {
	ts  int64
	seq uint64
	v   float64
}

func (a *pointsAgg) Add(v Value, ts int64, seq uint64) {
	if v.kind == KindNumber && finiteNum(v.num) {
		a.pts = append(a.pts, point{ts, seq, v.num})
		a.sorted = false
	}
}
func (a *pointsAgg) Merge(o Aggregator) {
	a.pts = append(a.pts, o.(*pointsAgg).pts...)
	a.sorted = false
}

// Result is not used for series functions (the engine calls values); NULL.
func (a *pointsAgg) Result() Value { return Null }

// values returns the numbers in (event time, sequence) order.
func (a *pointsAgg) values() []float64 {
	if !a.sorted {
		slices.SortFunc(a.pts, func(x, y point) int {
			if c := cmp.Compare(x.ts, y.ts); c != 0 {
				return c
			}
			return cmp.Compare(x.seq, y.seq)
		})
		a.sorted = true
	}
	a.vals = a.vals[:0]
	for _, p := range a.pts {
		a.vals = append(a.vals, p.v)
	}
	return a.vals
}
func (a *pointsAgg) AppendState(b []byte) []byte {
	b = appendUvarint(b, uint64(len(a.pts)))
	for _, p := range a.pts {
		b = appendI64(b, p.ts)
		b = appendUvarint(b, p.seq)
		b = appendF64(b, p.v)
	}
	return b
}
func (a *pointsAgg) ReadState(b []byte) ([]byte, error) {
	n, b, err := readUvarint(b)
	if err != nil || n > uint64(len(b))/9 {
		return b, errCorrupt
	}
	a.pts = make([]point, 0, n)
	for range n {
		var p point
		if p.ts, b, err = readI64(b); err != nil {
			return b, err
		}
		if p.seq, b, err = readUvarint(b); err != nil {
			return b, err
		}
		if p.v, b, err = readF64(b); err != nil {
			return b, err
		}
		a.pts = append(a.pts, p)
	}
	a.sorted = false
	return b, nil
}

func finiteNum(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// The anomaly functions. Each window's record is the score of its most extreme point
// (largest |score|, signed) and whether any point was anomalous; NULL and FALSE for a
// window without numbers.
var seriesAggregates = []AggregateFunc{
	{Name: "spike", Params: 2, Fields: []string{"score", "anomaly"}, NewSeries: newSpikeSeries,
		Doc: "spike(x, confidence, n).score / .anomaly: robust z-score of each point against the group's last n points (rolling median and MAD); the window reports its most extreme point"},
	{Name: "changepoint", Params: 2, Fields: []string{"score", "anomaly"}, NewSeries: newChangePointSeries,
		Doc: "changepoint(x, confidence, n).score / .anomaly: lasting change of level or spread within the group's last n points; the window reports its most extreme point"},
}

func seriesParams(name string, params []float64, minN int) (conf float64, n int, err error) {
	conf = params[0]
	if err := anomaly.CheckConfidence(conf); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	h := params[1]
	if h != math.Trunc(h) || h < float64(minN) || h > anomaly.MaxHistory {
		return 0, 0, fmt.Errorf("%s: history must be a whole number of points from %d to %d, got %g", name, minN, anomaly.MaxHistory, h)
	}
	return conf, int(h), nil
}

// detector is what the anomaly package's per-series detectors have in common.
type detector interface {
	Add(x float64) (score float64, anomaly bool)
	AppendState(b []byte) []byte
	ReadState(b []byte) ([]byte, error)
}

type detectorSeries struct {
	d detector
	n int // history length in points
}

// historyLen is the number of points the series remembers (see seriesTTL).
func (s detectorSeries) historyLen() int { return s.n }

func (s detectorSeries) Window(points []float64, out []Value) {
	var best float64
	any, flagged := false, false
	for _, x := range points {
		score, a := s.d.Add(x)
		if !any || math.Abs(score) > math.Abs(best) {
			best, any = score, true
		}
		flagged = flagged || a
	}
	out[0], out[1] = Null, BoolValue(flagged)
	if any {
		out[0] = NumberValue(best)
	}
}
func (s detectorSeries) AppendState(b []byte) []byte        { return s.d.AppendState(b) }
func (s detectorSeries) ReadState(b []byte) ([]byte, error) { return s.d.ReadState(b) }

var (
	newSpikeSeries       = detectorFunc("spike", 3, func(c float64, n int) (detector, error) { return anomaly.NewSpike(c, n) })
	newChangePointSeries = detectorFunc("changepoint", 8, func(c float64, n int) (detector, error) {
		return anomaly.NewChangePoint(c, n)
	})
)

// detectorFunc makes a series function's constructor from a detector's, checking the
// parameters (confidence, history of at least minN points) when the rule is compiled.
func detectorFunc(name string, minN int, newDet func(conf float64, n int) (detector, error)) func([]float64) (func() SeriesState, error) {
	return func(params []float64) (func() SeriesState, error) {
		conf, n, err := seriesParams(name, params, minN)
		if err != nil {
			return nil, err
		}
		if _, err := newDet(conf, n); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return func() SeriesState {
			d, _ := newDet(conf, n) // checked above
			return detectorSeries{d, n}
		}, nil
	}
}

// minSeriesTTL is the least time a silent group's series history is kept.
const minSeriesTTL = int64(24 * time.Hour)

func (e *Engine) initSeries() {
	e.series = make([]bool, len(e.plan.Aggregates))
	longest := 0
	for i, a := range e.plan.Aggregates {
		if a.Series != nil {
			e.series[i] = true
			if e.recs == nil {
				e.recs = make([][]Value, len(e.plan.Aggregates))
			}
			e.recs[i] = make([]Value, a.Fields)
			if h, ok := a.Series().(interface{ historyLen() int }); ok {
				longest = max(longest, h.historyLen())
			}
		}
	}
	// A history of n points spans at least n windows of a device that reports in every one;
	// a group silent for that long (and a day) has nothing left worth comparing with.
	width := e.size
	if e.kind == Session {
		width = e.gap
	}
	e.seriesTTL = max(minSeriesTTL, smul(int64(longest), width))
}

// smul is a*b for non-negative a and b, saturating at never.
func smul(a, b int64) int64 {
	if a != 0 && b > never/a {
		return never
	}
	return a * b
}

// newAggregator returns an empty window state for aggregate i.
func (e *Engine) newAggregator(i int) Aggregator {
	if e.series[i] {
		return new(pointsAgg)
	}
	return e.plan.Aggregates[i].New()
}

// newSeries returns a new group's series states, or nil if the plan has none.
func (e *Engine) newSeries() []SeriesState {
	if e.recs == nil {
		return nil
	}
	s := make([]SeriesState, len(e.plan.Aggregates))
	for i, a := range e.plan.Aggregates {
		if a.Series != nil {
			s[i] = a.Series()
		}
	}
	return s
}

func (e *Engine) appendSeries(b []byte, g *group) []byte {
	if g.series != nil {
		b = appendI64(b, g.seen)
	}
	for _, s := range g.series {
		if s != nil {
			b = s.AppendState(b)
		}
	}
	return b
}

// readSeries restores g's series states; a version 1 snapshot has no g.seen, which is then
// the snapshot's watermark (the group's history is kept a full TTL from the restore).
func (e *Engine) readSeries(b []byte, g *group, version byte, wm int64) ([]byte, error) {
	g.series = e.newSeries()
	if g.series != nil {
		if version < 2 {
			g.seen = wm
		} else {
			var err error
			if g.seen, b, err = readI64(b); err != nil {
				return b, errCorrupt
			}
		}
	}
	for _, s := range g.series {
		if s != nil {
			var err error
			if b, err = s.ReadState(b); err != nil {
				return b, errCorrupt
			}
		}
	}
	return b, nil
}

func unixTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }
