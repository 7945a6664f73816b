package window

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/tributary-iot/tributary/anomaly"
)

// Fleet makes a plan compare the groups of each window with their peers (the SQL dialect's
// OUTLIERS clause): every group's vector of Fields is judged against the vectors of the
// groups in the same window with equal Peers keys, by anomaly.Outliers. The verdict is in
// Row.Fleet for HAVING and the columns, and in the result's values under the FleetColumns
// names.
//
// It needs TUMBLING or HOPPING windows, whose windows of equal bounds close together: the
// engine holds back the rows of windows that close in one Process, Advance or Flush call,
// judges each (window bounds, peer group) batch, then applies HAVING. A group whose events
// were all late, or that had no event in the window, is not a member. Because nothing is
// held across calls, snapshots are unaffected.
type Fleet struct {
	// Fields are indices into Plan.Columns: the numbers compared. Their Eval must not read
	// Row.Fleet.
	Fields []int
	// Peers are indices into Plan.GroupBy forming the peer group; none makes every group of
	// the window a peer.
	Peers []int
	// Expect is the expected share of outliers, in (0, anomaly.MaxExpect].
	Expect float64
}

// FleetVerdict is a group's verdict in one window.
type FleetVerdict struct {
	Outlier Value // TRUE or FALSE; NULL when there is no verdict (see Warning)
	Score   Value // robust distance from the peers in standard deviations; NULL without verdict
	Peers   int   // members of the peer group in this window (including this one)
	Warning string
}

// FleetColumns are the values a plan with Fleet adds to every result: the verdict, its score,
// the number of peers compared and a warning when there is no verdict.
var FleetColumns = []string{"outlier", "outlier_score", "outlier_peers", "outlier_warning"}

func (f *Fleet) validate(p *Plan) error {
	if p.Window.Kind != Tumbling && p.Window.Kind != Hopping {
		return fmt.Errorf("plan %s: fleet outliers need TUMBLING or HOPPING windows, got %s", p.Rule, p.Window.Kind)
	}
	if len(f.Fields) == 0 {
		return fmt.Errorf("plan %s: fleet outliers need at least one field", p.Rule)
	}
	for _, i := range f.Fields {
		if i < 0 || i >= len(p.Columns) {
			return fmt.Errorf("plan %s: fleet field %d is not a column", p.Rule, i)
		}
	}
	for _, i := range f.Peers {
		if i < 0 || i >= len(p.GroupBy) {
			return fmt.Errorf("plan %s: fleet peer key %d is not a group key", p.Rule, i)
		}
	}
	for _, c := range p.Columns {
		if slices.Contains(FleetColumns, c.Name) {
			return fmt.Errorf("plan %s: column %q is added by fleet outliers; name it otherwise", p.Rule, c.Name)
		}
	}
	return anomaly.CheckExpect(f.Expect)
}

// pendingRow is a closed window held back for its fleet verdict.
type pendingRow struct {
	g                *group
	aggs             []Value
	recs             [][]Value
	start, end, last int64
	vec              []float64
	peer             string
	verdict          FleetVerdict
}

// hold keeps the current row until the fleet verdicts of its window are known.
func (e *Engine) hold(g *group, start, end, last int64) {
	p := pendingRow{g: g, aggs: slices.Clone(e.row.Aggregates), start: start, end: end, last: last}
	if e.row.Records != nil {
		p.recs = make([][]Value, len(e.row.Records))
		for i, r := range e.row.Records {
			p.recs[i] = slices.Clone(r)
		}
	}
	e.row.Aggregates, e.row.Records = p.aggs, p.recs
	f := e.plan.Fleet
	p.vec = make([]float64, len(f.Fields))
	for k, i := range f.Fields {
		x, ok := e.plan.Columns[i].Eval(&e.row).Number()
		if !ok {
			x = nan
		}
		p.vec[k] = x
	}
	var key []byte
	for _, i := range f.Peers {
		key = g.vals[i].appendKey(key)
	}
	p.peer = string(key)
	e.pending = append(e.pending, p)
	e.row = Row{}
}

// settle judges the held rows, batch by batch (window bounds, peer group), and emits them.
func (e *Engine) settle() {
	if len(e.pending) == 0 {
		return
	}
	if e.outliers == nil {
		e.outliers, _ = anomaly.NewOutliers(e.plan.Fleet.Expect) // validated with the plan
	}
	rows := e.pending
	slices.SortStableFunc(rows, func(a, b pendingRow) int {
		if c := cmp.Compare(a.end, b.end); c != 0 {
			return c
		}
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return cmp.Compare(a.peer, b.peer)
	})
	var vecs [][]float64
	var verdicts []anomaly.Verdict
	for lo := 0; lo < len(rows); {
		hi := lo + 1
		for hi < len(rows) && rows[hi].end == rows[lo].end && rows[hi].start == rows[lo].start && rows[hi].peer == rows[lo].peer {
			hi++
		}
		batch := rows[lo:hi]
		vecs = vecs[:0]
		for i := range batch {
			vecs = append(vecs, batch[i].vec)
		}
		verdicts = slices.Grow(verdicts[:0], len(batch))[:len(batch)]
		warning := e.outliers.Judge(vecs, verdicts)
		for i := range batch {
			v := FleetVerdict{Peers: len(batch), Warning: warning}
			switch {
			case verdicts[i].Valid:
				v.Outlier, v.Score = BoolValue(verdicts[i].Outlier), NumberValue(verdicts[i].Score)
			case warning == "":
				v.Warning = "no number for every OUTLIERS field"
			}
			batch[i].verdict = v
		}
		lo = hi
	}
	for i := range rows {
		p := &rows[i]
		e.row = Row{Group: p.g.vals, Aggregates: p.aggs, Records: p.recs,
			Start: unixTime(p.start), End: unixTime(p.end), Fleet: p.verdict}
		e.finish(p.g, p.start, p.end, p.last, 0, false)
	}
	clear(rows)
	e.pending = rows[:0]
}

func (v FleetVerdict) addValues(values map[string]any) {
	values[FleetColumns[0]] = v.Outlier.Any()
	values[FleetColumns[1]] = v.Score.Any()
	values[FleetColumns[2]] = float64(v.Peers)
	var w any
	if v.Warning != "" {
		w = v.Warning
	}
	values[FleetColumns[3]] = w
}

var nan = math.NaN()
