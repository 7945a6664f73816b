package window

import (
	"cmp"
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/anomaly"
)

// Event is one input message as the engine sees it: the parts of the hub's
// envelope and decoded payload that rules can refer to.
type Event struct {
	// Time is the event time (the envelope's). It must lie between the
	// years 1823 and 2116 (±2^62 ns around 1970); other events are Rejected.
	Time time.Time
	// Received is when the hub received the message (the envelope's). It is
	// optional; when set it drives idle closing and the MaxFuture check, and
	// because it is stored in the stream, a replay sees the same values.
	Received time.Time
	Device   string
	Type     string
	Tags     map[string]string
	// Fields is the payload. Nested objects may be flattened to dotted names
	// or kept as map[string]any; the SQL dialect finds either.
	Fields map[string]any
	// Seq is the input sequence (the JetStream stream sequence). The engine
	// records the highest it has seen for checkpoints, breaks event-time ties
	// in first and last by it, and otherwise ignores it.
	Seq uint64
}

// Disposition says what Process did with an event.
type Disposition uint8

const (
	// Accepted events were added to their windows.
	Accepted Disposition = iota
	// Filtered events did not pass WHERE.
	Filtered
	// Late events passed WHERE but belong to a window that has already
	// closed. They are in no result: route them to rules/<name>/late.
	Late
	// Rejected events have an event time the engine cannot use: outside the
	// supported range, or more than Options.MaxFuture after Received. They
	// are in no result and do not move the watermark: route them to
	// rules/<name>/late too, with the reason.
	Rejected
)

var dispositionNames = [...]string{"accepted", "filtered", "late", "rejected"}

func (d Disposition) String() string {
	if int(d) < len(dispositionNames) {
		return dispositionNames[d]
	}
	return "disposition(" + strconv.Itoa(int(d)) + ")"
}

// Result is the output of one closed window of one group.
type Result struct {
	Rule string
	// GroupKey is the canonical form of the group's key values: a JSON
	// array in GROUP BY order, e.g. ["th-1","berlin"]; [] without keys.
	GroupKey string
	// Group maps each GROUP BY key name to its value.
	Group map[string]any
	// WindowStart and WindowEnd bound the window: [start, end) for TUMBLING,
	// HOPPING and SESSION (end = last event + gap); (start, end] for SLIDING
	// (end = the triggering event's time); [first, last] event time for
	// COUNTWINDOW.
	WindowStart, WindowEnd time.Time
	// Time is the latest event time the window covers: WindowEnd minus 1ns
	// for half-open windows, else WindowEnd. A rule reading this rule's
	// results should use it as their event time.
	Time time.Time
	// Values maps each output column to float64, string, bool, time.Time or
	// nil.
	Values map[string]any
	// ID is deterministic: rule, window bounds, a hash of GroupKey and, for
	// COUNTWINDOW and ties in SLIDING, an ordinal. Publish with it as the
	// JetStream Msg-Id so that results re-emitted after a restart are
	// dropped as duplicates.
	ID string
}

// Options are the per-rule settings of the engine.
type Options struct {
	// Lateness is how long after a window's end events may still arrive
	// for it: a window closes when the watermark reaches end + Lateness.
	Lateness time.Duration `json:"lateness" yaml:"lateness"`
	// IdleTimeout, when positive, lets the watermark advance without
	// events: once no event has been received for IdleTimeout (in processing
	// time, see Advance), event time is assumed to pass as processing time
	// does. Zero disables idle closing.
	IdleTimeout time.Duration `json:"idle_timeout" yaml:"idle_timeout"`
	// MaxFuture, when positive, rejects events whose event time is more than
	// MaxFuture after their Received time, so that one device with a wrong
	// clock cannot drag the rule's watermark ahead. Zero disables the check.
	MaxFuture time.Duration `json:"max_future" yaml:"max_future"`
}

// MaxDuration bounds window sizes and option durations (about 146 years).
const MaxDuration = time.Duration(1 << 62)

// Validate checks that durations are non-negative and at most MaxDuration.
func (o Options) Validate() error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Lateness", o.Lateness}, {"IdleTimeout", o.IdleTimeout}, {"MaxFuture", o.MaxFuture}} {
		if f.d < 0 || f.d > MaxDuration {
			return fmt.Errorf("options: %s must be between 0 and %s, got %s", f.name, MaxDuration, f.d)
		}
	}
	return nil
}

// Stats are counters and gauges of an engine.
type Stats struct {
	EventsIn       uint64 // all Process calls
	Accepted       uint64
	Filtered       uint64 // did not pass WHERE
	Late           uint64 // belonged to a closed window
	Rejected       uint64 // unusable event time
	Results        uint64 // results returned
	HavingFiltered uint64 // closed windows that did not pass HAVING
	OpenWindows    int    // windows holding state (SLIDING: events awaiting their result)
	Groups         int    // groups holding state
	Watermark      time.Time
	// LastSeq is the highest Event.Seq processed: after restoring a snapshot,
	// resume the input after it.
	LastSeq uint64
}

const (
	noTime   = math.MinInt64
	never    = math.MaxInt64
	minNanos = -(1 << 62)
	maxNanos = 1 << 62
)

// Engine runs one plan over a stream of events. It is not safe for
// concurrent use: a rule's input is one ordered stream, so give each rule
// its own engine and goroutine.
type Engine struct {
	plan *Plan
	opts Options
	fp   string // fingerprint of plan and options, checked by Restore

	kind                       WindowKind
	size, hop, gap, count      int64
	lateness, idle, maxFuture  int64
	groups                     map[string]*group
	timers                     timerHeap
	wm, maxTime, lastRecv, now int64
	lastSeq                    uint64
	st                         Stats
	open                       int

	cur     Event // the last event processed; a field so that &cur does not escape to the heap
	keyBuf  []byte
	keyVals []Value
	args    []Value
	aggVals []Value
	row     Row
	out     []Result

	series []bool // per aggregate: a series function
	// seriesTTL is how long, in event time, a group's series histories outlive its last
	// closed window before the group is dropped (see initSeries).
	seriesTTL int64
	recs      [][]Value    // series functions' records of the current row
	pending   []pendingRow // rows awaiting their fleet verdict (Plan.Fleet)
	outliers  *anomaly.Outliers
}

// group is the state of one group key.
type group struct {
	key   string  // binary key: the map key
	vals  []Value // key values in GROUP BY order
	canon string  // GroupKey, computed at the first result
	hash  string  // for IDs, computed at the first result

	wins      []*win        // open windows sorted by start (not SLIDING)
	entries   []entry       // SLIDING: events sorted by (ts, seq)
	argv      []Value       // SLIDING: the entries' aggregate arguments, len(Plan.Aggregates) per entry
	pending   int           // SLIDING: entries[pending:] have not had their result
	closedEnd int64         // SESSION: end of the last closed session
	ord       uint64        // COUNTWINDOW: ordinal of the current window
	series    []SeriesState // series functions' states, by aggregate index; nil without
	seen      int64         // series: end of the group's last closed window (see seriesTTL)

	timer int64 // watermark at which this group has work; never if none
	hidx  int   // index in the timer heap; -1 if not in it
}

// win is one open window of a group.
type win struct {
	start, end int64 // TUMBLING/HOPPING/SESSION: [start, end); COUNTWINDOW: [start, end]
	closeAt    int64 // the window closes when the watermark reaches closeAt
	n          uint64
	ord        uint64
	aggs       []Aggregator
}

// entry is one buffered event of a SLIDING group; its aggregate arguments
// are in group.argv, for locality.
type entry struct {
	ts  int64
	seq uint64
}

// New returns an engine for plan. The plan must not change afterwards.
func New(plan *Plan, opts Options) (*Engine, error) {
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	w := plan.Window
	for _, d := range []time.Duration{w.Size, w.Hop, w.Gap} {
		if d > MaxDuration {
			return nil, fmt.Errorf("plan %s: window durations must be at most %s", plan.Rule, MaxDuration)
		}
	}
	e := &Engine{
		plan:      plan,
		opts:      opts,
		kind:      w.Kind,
		size:      int64(w.Size),
		hop:       int64(w.Hop),
		gap:       int64(w.Gap),
		count:     int64(w.Count),
		lateness:  int64(opts.Lateness),
		idle:      int64(opts.IdleTimeout),
		maxFuture: int64(opts.MaxFuture),
		groups:    make(map[string]*group),
		keyVals:   make([]Value, len(plan.GroupBy)),
		args:      make([]Value, len(plan.Aggregates)),
		aggVals:   make([]Value, len(plan.Aggregates)),
	}
	if e.kind == Tumbling {
		e.hop = e.size
	}
	e.initSeries()
	e.fp = fmt.Sprintf("rule=%s;plan=%s;window=%s;keys=%d;aggs=%d;cols=%d;lateness=%d;idle=%d;future=%d",
		plan.Rule, plan.Fingerprint, w, len(plan.GroupBy), len(plan.Aggregates), len(plan.Columns),
		e.lateness, e.idle, e.maxFuture)
	e.reset()
	return e, nil
}

func (e *Engine) reset() {
	clear(e.groups)
	e.timers = e.timers[:0]
	e.wm, e.maxTime, e.lastRecv, e.now = noTime, noTime, noTime, noTime
	e.lastSeq = 0
	e.st = Stats{}
	e.open = 0
}

// Plan returns the engine's plan.
func (e *Engine) Plan() *Plan { return e.plan }

// Process feeds one event in input order and returns the results it closes,
// sorted by window end, start, group key and ID, and what it did with the
// event. Every event moves the watermark (see the package documentation),
// including filtered and late ones; rejected events do not.
func (e *Engine) Process(ev Event) ([]Result, Disposition) {
	e.st.EventsIn++
	e.lastSeq = max(e.lastSeq, ev.Seq)
	ts, okTime := nanos(ev.Time)
	if !ev.Received.IsZero() {
		if rs, ok := nanos(ev.Received); ok {
			e.tick(rs)
			e.lastRecv = max(e.lastRecv, rs)
			if okTime && e.maxFuture > 0 && ts > sadd(rs, e.maxFuture) {
				okTime = false
			}
		}
	} else if e.now > e.lastRecv {
		e.lastRecv = e.now // no receive time: it arrived after the last Advance
	}
	if !okTime {
		e.st.Rejected++
		return e.takeOut(), Rejected
	}

	e.cur = ev
	d := Accepted
	switch {
	case e.plan.Where != nil && !e.plan.Where(&e.cur):
		d = Filtered
		e.st.Filtered++
	case !e.add(&e.cur, ts):
		d = Late
		e.st.Late++
	default:
		e.st.Accepted++
	}
	e.maxTime = max(e.maxTime, ts)
	e.advanceTo(ts)
	return e.takeOut(), d
}

// Advance tells the engine that processing time is now, for idle closing:
// if IdleTimeout is set and no event has been received for at least
// IdleTimeout, the watermark moves to the latest event time plus the time
// since the last event was received, and the windows that this closes are
// returned.
//
// The processing-time clock is Event.Received (the latest seen) when events
// carry it, else the time of the Advance call preceding each event. Call
// Advance periodically (say every second) with a time that no undelivered
// event was received before, e.g. time.Now() minus the longest expected
// delay between the envelope's receive stamp and delivery to the engine.
// Then a replay, which sees no Advance calls but the same Received stamps,
// closes the same windows with the same results: a gap between two events'
// Received stamps advances the watermark in Process exactly as Advance calls
// during the gap did. Without Received, live and replay agree only when
// events are far enough apart that idle closing closes nothing an event
// still arriving would have joined.
func (e *Engine) Advance(now time.Time) []Result {
	n, ok := nanos(now)
	if !ok {
		return nil
	}
	e.now = max(e.now, n)
	e.tick(n)
	return e.takeOut()
}

// Flush closes every open window as if the input had ended, and returns the
// results. COUNTWINDOW windows that are not full are not emitted. After
// Flush every event is Late (except for COUNTWINDOW, which has no lateness).
// Use it for bounded inputs (backfills, tests), never before a snapshot that
// a live run resumes from.
func (e *Engine) Flush() []Result {
	e.advanceTo(never)
	return e.takeOut()
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	s := e.st
	s.OpenWindows = e.open
	s.Groups = len(e.groups)
	if e.wm != noTime {
		s.Watermark = time.Unix(0, e.wm).UTC()
	}
	s.LastSeq = e.lastSeq
	return s
}

// Watermark returns the current watermark, or the zero time before the first
// event.
func (e *Engine) Watermark() time.Time {
	if e.wm == noTime {
		return time.Time{}
	}
	return time.Unix(0, e.wm).UTC()
}

// tick applies idle closing for processing time p.
func (e *Engine) tick(p int64) {
	if e.idle <= 0 || e.lastRecv == noTime || e.maxTime == noTime {
		return
	}
	if quiet := p - e.lastRecv; quiet >= e.idle {
		e.advanceTo(sadd(e.maxTime, quiet))
	}
}

func (e *Engine) advanceTo(w int64) {
	if w <= e.wm {
		return
	}
	e.wm = w
	for len(e.timers) > 0 && e.timers[0].timer <= e.wm {
		g := e.timers[0]
		e.fire(g)
		if g.timer == never && g.series != nil && len(g.wins) == 0 {
			// A series history outlives the group's windows, until it expires.
			if exp := sadd(g.seen, e.seriesTTL); exp > e.wm {
				g.timer = exp
			}
		}
		if g.timer == never {
			heap.Pop(&e.timers)
			if g.empty() {
				delete(e.groups, g.key)
			}
		} else {
			heap.Fix(&e.timers, 0)
		}
	}
}

func (e *Engine) takeOut() []Result {
	e.settle()
	out := e.out
	e.out = nil
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b Result) int {
			if c := a.WindowEnd.Compare(b.WindowEnd); c != 0 {
				return c
			}
			if c := a.WindowStart.Compare(b.WindowStart); c != 0 {
				return c
			}
			if c := cmp.Compare(a.GroupKey, b.GroupKey); c != 0 {
				return c
			}
			return cmp.Compare(a.ID, b.ID)
		})
	}
	return out
}

// add assigns an event that passed WHERE to its windows. It returns false if
// the event is late.
func (e *Engine) add(ev *Event, ts int64) bool {
	b := e.keyBuf[:0]
	for i := range e.plan.GroupBy {
		v := e.plan.GroupBy[i].Eval(ev)
		e.keyVals[i] = v
		b = v.appendKey(b)
	}
	e.keyBuf = b
	for i := range e.plan.Aggregates {
		if f := e.plan.Aggregates[i].Arg; f != nil {
			e.args[i] = f(ev)
		} else {
			e.args[i] = BoolValue(true)
		}
	}
	g := e.groups[string(b)]
	switch e.kind {
	case Tumbling, Hopping:
		return e.addTimed(g, ts, ev.Seq)
	case Sliding:
		return e.addSliding(g, ts, ev.Seq)
	case Session:
		return e.addSession(g, ts, ev.Seq)
	default:
		e.addCount(g, ts, ev.Seq)
		return true
	}
}

func (e *Engine) group(g *group) *group {
	if g != nil {
		return g
	}
	g = &group{
		key:       string(e.keyBuf),
		vals:      slices.Clone(e.keyVals),
		closedEnd: noTime,
		timer:     never,
		hidx:      -1,
		series:    e.newSeries(),
	}
	e.groups[g.key] = g
	return g
}

func (e *Engine) newWin(start, end, closeAt int64) *win {
	w := &win{start: start, end: end, closeAt: closeAt, aggs: make([]Aggregator, len(e.plan.Aggregates))}
	for i := range e.plan.Aggregates {
		w.aggs[i] = e.newAggregator(i)
	}
	e.open++
	return w
}

func (w *win) add(args []Value, ts int64, seq uint64) {
	for i, a := range w.aggs {
		a.Add(args[i], ts, seq)
	}
	w.n++
}

// schedule records that g has work when the watermark reaches t.
func (e *Engine) schedule(g *group, t int64) {
	if t >= g.timer {
		return
	}
	g.timer = t
	if g.hidx < 0 {
		heap.Push(&e.timers, g)
	} else {
		heap.Fix(&e.timers, g.hidx)
	}
}

// addTimed handles TUMBLING and HOPPING: the event belongs to every window
// [k*hop, k*hop+size) containing ts, and is late if the earliest has closed.
func (e *Engine) addTimed(g *group, ts int64, seq uint64) bool {
	first := (floorDiv(ts-e.size, e.hop) + 1) * e.hop
	if sadd(sadd(first, e.size), e.lateness) <= e.wm {
		return false
	}
	g = e.group(g)
	last := floorDiv(ts, e.hop) * e.hop
	for s := first; s <= last; s += e.hop {
		// Windows are sorted by start; the one wanted is nearly always last.
		i := len(g.wins)
		for i > 0 && g.wins[i-1].start > s {
			i--
		}
		var w *win
		if i > 0 && g.wins[i-1].start == s {
			w = g.wins[i-1]
		} else {
			end := sadd(s, e.size)
			w = e.newWin(s, end, sadd(end, e.lateness))
			g.wins = slices.Insert(g.wins, i, w)
			e.schedule(g, w.closeAt)
		}
		w.add(e.args, ts, seq)
	}
	return true
}

// addSliding buffers the event; its window (ts-size, ts] closes when the
// watermark passes ts + lateness.
func (e *Engine) addSliding(g *group, ts int64, seq uint64) bool {
	if sadd(ts, e.lateness) < e.wm {
		return false
	}
	g = e.group(g)
	i := len(g.entries)
	for i > g.pending && (g.entries[i-1].ts > ts || (g.entries[i-1].ts == ts && g.entries[i-1].seq > seq)) {
		i--
	}
	g.entries = slices.Insert(g.entries, i, entry{ts: ts, seq: seq})
	g.argv = slices.Insert(g.argv, i*len(e.args), e.args...)
	e.open++
	e.schedule(g, sadd(sadd(ts, e.lateness), 1))
	return true
}

// addSession adds the event to the session it falls into, merging sessions
// it bridges. Sessions of a group are disjoint and sorted; session [s, end)
// holds events from s to end-gap.
func (e *Engine) addSession(g *group, ts int64, seq uint64) bool {
	var wins []*win
	closedEnd := int64(noTime)
	if g != nil {
		wins, closedEnd = g.wins, g.closedEnd
	}
	i, _ := slices.BinarySearchFunc(wins, ts, func(w *win, t int64) int {
		if w.end <= t {
			return -1
		}
		return 1
	})
	touches := i < len(wins) && wins[i].start-e.gap < ts
	if ts < closedEnd || (!touches && sadd(sadd(ts, e.gap), e.lateness) <= e.wm) {
		return false
	}
	g = e.group(g)
	end := sadd(ts, e.gap)
	if !touches {
		w := e.newWin(ts, end, sadd(end, e.lateness))
		g.wins = slices.Insert(g.wins, i, w)
		w.add(e.args, ts, seq)
		e.schedule(g, w.closeAt)
		return true
	}
	w := g.wins[i]
	w.add(e.args, ts, seq)
	w.start = min(w.start, ts)
	w.end = max(w.end, end)
	for i+1 < len(g.wins) && g.wins[i+1].start < w.end { // bridged: merge
		o := g.wins[i+1]
		for k, a := range w.aggs {
			a.Merge(o.aggs[k])
		}
		w.n += o.n
		w.end = max(w.end, o.end)
		g.wins = slices.Delete(g.wins, i+1, i+2)
		e.open--
	}
	w.closeAt = sadd(w.end, e.lateness)
	if i == 0 {
		e.reschedule(g, g.wins[0].closeAt)
	}
	return true
}

// reschedule sets g's timer to t, which may be later than before.
func (e *Engine) reschedule(g *group, t int64) {
	if g.timer == t {
		return
	}
	g.timer = t
	switch {
	case g.hidx >= 0 && t == never:
		heap.Remove(&e.timers, g.hidx)
	case g.hidx >= 0:
		heap.Fix(&e.timers, g.hidx)
	case t != never:
		heap.Push(&e.timers, g)
	}
}

// addCount adds the event to the group's current count window and emits it
// when full. Count windows follow input order and are never late.
func (e *Engine) addCount(g *group, ts int64, seq uint64) {
	g = e.group(g)
	if len(g.wins) == 0 {
		w := e.newWin(ts, ts, never)
		w.ord = g.ord
		g.wins = append(g.wins, w)
	}
	w := g.wins[0]
	w.add(e.args, ts, seq)
	w.start, w.end = min(w.start, ts), max(w.end, ts)
	if w.n >= uint64(e.count) {
		e.emit(g, w.aggs, w.start, w.end, w.end, w.ord, true)
		g.wins = g.wins[:0]
		g.ord++
		e.open--
		if g.series != nil {
			e.schedule(g, sadd(g.seen, e.seriesTTL)) // count windows have no other timer
		}
	}
}

// fire does g's work for the current watermark and updates g.timer.
func (e *Engine) fire(g *group) {
	switch e.kind {
	case Sliding:
		e.fireSliding(g)
		return
	case CountWindow:
		g.timer = never
		return
	}
	n := 0
	for _, w := range g.wins {
		if w.closeAt > e.wm {
			break
		}
		n++
		if e.kind == Session {
			g.closedEnd = max(g.closedEnd, w.end)
		}
		e.emit(g, w.aggs, w.start, w.end, w.end-1, 0, false)
	}
	e.open -= n
	g.wins = slices.Delete(g.wins, 0, n)
	switch {
	case len(g.wins) > 0:
		g.timer = g.wins[0].closeAt
	case e.kind == Session && g.closedEnd != noTime:
		// Keep closedEnd until no event could fall into a closed session
		// without being late anyway; then the group can go.
		g.timer = sadd(sadd(g.closedEnd, e.gap), e.lateness)
		if g.timer <= e.wm {
			g.timer = never
		}
	default:
		g.timer = never
	}
}

func (e *Engine) fireSliding(g *group) {
	for g.pending < len(g.entries) {
		x := g.entries[g.pending]
		if sadd(sadd(x.ts, e.lateness), 1) > e.wm {
			break
		}
		// The window is (x.ts-size, x.ts]: every entry in it, by time.
		lo, _ := slices.BinarySearchFunc(g.entries, x.ts-e.size, func(en entry, t int64) int {
			if en.ts <= t {
				return -1
			}
			return 1
		})
		hi := g.pending + 1
		for hi < len(g.entries) && g.entries[hi].ts == x.ts {
			hi++
		}
		aggs := make([]Aggregator, len(e.plan.Aggregates))
		for i := range aggs {
			aggs[i] = e.newAggregator(i)
		}
		k := len(aggs)
		for j := lo; j < hi; j++ {
			en, args := g.entries[j], g.argv[j*k:(j+1)*k]
			for i, a := range aggs {
				a.Add(args[i], en.ts, en.seq)
			}
		}
		// Results of events with the same time are equal windows; an ordinal
		// keeps their IDs apart.
		ord := uint64(0)
		for j := g.pending - 1; j >= 0 && g.entries[j].ts == x.ts; j-- {
			ord++
		}
		e.emit(g, aggs, x.ts-e.size, x.ts, x.ts, ord, ord > 0)
		g.pending++
		e.open--
	}
	// Drop entries no future window can contain: accepted events have
	// ts >= wm - lateness, so their windows start after wm - lateness - size.
	n := 0
	for n < g.pending && sadd(sadd(g.entries[n].ts, e.size), e.lateness) <= e.wm {
		n++
	}
	if n > 0 {
		g.entries = slices.Delete(g.entries, 0, n)
		g.argv = slices.Delete(g.argv, 0, n*len(e.args))
		g.pending -= n
	}
	g.timer = never
	if g.pending < len(g.entries) {
		g.timer = sadd(sadd(g.entries[g.pending].ts, e.lateness), 1)
	}
	if len(g.entries) > 0 {
		g.timer = min(g.timer, sadd(sadd(g.entries[0].ts, e.size), e.lateness))
	}
}

func (g *group) empty() bool {
	return len(g.wins) == 0 && len(g.entries) == 0 && g.timer == never
}

// emit turns a closed window into a Result, unless HAVING rejects it.
func (e *Engine) emit(g *group, aggs []Aggregator, start, end, last int64, ord uint64, withOrd bool) {
	if g.series != nil {
		g.seen = max(g.seen, end)
	}
	for i, a := range aggs {
		if e.series[i] {
			g.series[i].Window(a.(*pointsAgg).values(), e.recs[i])
			e.aggVals[i] = e.recs[i][0]
			continue
		}
		e.aggVals[i] = a.Result()
	}
	e.row = Row{Group: g.vals, Aggregates: e.aggVals, Records: e.recs, Start: unixTime(start), End: unixTime(end)}
	if e.plan.Fleet != nil {
		e.hold(g, start, end, last)
		return
	}
	e.finish(g, start, end, last, ord, withOrd)
}

// finish applies HAVING to e.row and turns it into a Result.
func (e *Engine) finish(g *group, start, end, last int64, ord uint64, withOrd bool) {
	if e.plan.Having != nil && !e.plan.Having(&e.row) {
		e.st.HavingFiltered++
		return
	}
	values := make(map[string]any, len(e.plan.Columns)+len(FleetColumns))
	for _, c := range e.plan.Columns {
		values[c.Name] = c.Eval(&e.row).Any()
	}
	if e.plan.Fleet != nil {
		e.row.Fleet.addValues(values)
	}
	keys := make(map[string]any, len(g.vals))
	for i, k := range e.plan.GroupBy {
		keys[k.Name] = g.vals[i].Any()
	}
	if g.canon == "" {
		b := []byte{'['}
		for i, v := range g.vals {
			if i > 0 {
				b = append(b, ',')
			}
			b = v.appendCanonical(b)
		}
		g.canon = string(append(b, ']'))
		sum := sha256.Sum256([]byte(g.canon))
		g.hash = hex.EncodeToString(sum[:12])
	}
	id := make([]byte, 0, len(e.plan.Rule)+64)
	id = append(id, e.plan.Rule...)
	id = append(id, '/')
	id = strconv.AppendInt(id, start, 10)
	id = append(id, '-')
	id = strconv.AppendInt(id, end, 10)
	id = append(id, '/')
	id = append(id, g.hash...)
	if withOrd {
		id = append(id, '/')
		id = strconv.AppendUint(id, ord, 10)
	}
	e.st.Results++
	e.out = append(e.out, Result{
		Rule:        e.plan.Rule,
		GroupKey:    g.canon,
		Group:       keys,
		WindowStart: e.row.Start,
		WindowEnd:   e.row.End,
		Time:        time.Unix(0, last).UTC(),
		Values:      values,
		ID:          string(id),
	})
	e.row = Row{}
}

// nanos converts t to Unix nanoseconds if it is in the supported range.
func nanos(t time.Time) (int64, bool) {
	if s := t.Unix(); s < minNanos/int64(time.Second) || s > maxNanos/int64(time.Second) {
		return 0, false
	}
	return t.UnixNano(), true
}

// sadd adds without overflowing: results saturate at the int64 limits.
func sadd(a, b int64) int64 {
	c := a + b
	if (c > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return c
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// timerHeap orders groups by (timer, key): a total order, so groups whose
// windows close together are handled in the same order in every run.
type timerHeap []*group

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].timer != h[j].timer {
		return h[i].timer < h[j].timer
	}
	return h[i].key < h[j].key
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}
func (h *timerHeap) Push(x any) {
	g := x.(*group)
	g.hidx = len(*h)
	*h = append(*h, g)
}
func (h *timerHeap) Pop() any {
	old := *h
	g := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	g.hidx = -1
	return g
}
