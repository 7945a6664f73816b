package window

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// WindowKind selects how events are grouped into windows.
type WindowKind uint8

// The window kinds. See the package documentation for their exact bounds.
const (
	Tumbling    WindowKind = iota + 1 // fixed size, no overlap: [k*size, (k+1)*size)
	Hopping                           // fixed size, starting every hop: [k*hop, k*hop+size)
	Sliding                           // one window per event over the trailing size: (t-size, t]
	Session                           // events closer than gap to each other
	CountWindow                       // every Count events of a group, in input order
)

var windowKindNames = [...]string{"", "TUMBLING", "HOPPING", "SLIDING", "SESSION", "COUNTWINDOW"}

func (k WindowKind) String() string {
	if k > 0 && int(k) < len(windowKindNames) {
		return windowKindNames[k]
	}
	return "WindowKind(" + strconv.Itoa(int(k)) + ")"
}

// MaxHopsPerEvent bounds Size/Hop for hopping windows: an event belongs to
// that many windows, and each is updated per event.
const MaxHopsPerEvent = 1000

// WindowSpec is the window of a rule: the window function in GROUP BY.
type WindowSpec struct {
	Kind  WindowKind
	Size  time.Duration // Tumbling, Hopping, Sliding
	Hop   time.Duration // Hopping: distance between window starts, 0 < Hop <= Size
	Gap   time.Duration // Session: a silence of at least Gap ends a session
	Count int           // CountWindow: events per window
}

// Validate checks that the fields needed by Kind are set and in range.
func (w WindowSpec) Validate() error {
	switch w.Kind {
	case Tumbling, Sliding:
		if w.Size <= 0 {
			return fmt.Errorf("window %s: size must be positive, got %s", w.Kind, w.Size)
		}
	case Hopping:
		if w.Size <= 0 {
			return fmt.Errorf("window HOPPING: size must be positive, got %s", w.Size)
		}
		if w.Hop <= 0 || w.Hop > w.Size {
			return fmt.Errorf("window HOPPING: hop must be positive and at most the size %s, got %s", w.Size, w.Hop)
		}
		if (w.Size+w.Hop-1)/w.Hop > MaxHopsPerEvent {
			return fmt.Errorf("window HOPPING: size/hop must be at most %d, got %s/%s", MaxHopsPerEvent, w.Size, w.Hop)
		}
	case Session:
		if w.Gap <= 0 {
			return fmt.Errorf("window SESSION: gap must be positive, got %s", w.Gap)
		}
	case CountWindow:
		if w.Count <= 0 {
			return fmt.Errorf("window COUNTWINDOW: count must be positive, got %d", w.Count)
		}
	default:
		return fmt.Errorf("window: unknown kind %d", w.Kind)
	}
	return nil
}

// String returns the window in the SQL dialect's form, e.g. "HOPPING(5m, 1m)".
func (w WindowSpec) String() string {
	switch w.Kind {
	case Tumbling, Sliding:
		return fmt.Sprintf("%s(%s)", w.Kind, FormatDuration(w.Size))
	case Hopping:
		return fmt.Sprintf("HOPPING(%s, %s)", FormatDuration(w.Size), FormatDuration(w.Hop))
	case Session:
		return fmt.Sprintf("SESSION(%s)", FormatDuration(w.Gap))
	case CountWindow:
		return fmt.Sprintf("COUNTWINDOW(%d)", w.Count)
	}
	return w.Kind.String()
}

// FormatDuration formats d in the dialect's units (d, h, m, s, ms, us, ns),
// largest first, e.g. 90*time.Second → "1m30s", 36*time.Hour → "1d12h".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b []byte
	if d < 0 {
		b = append(b, '-')
		if d == -1<<63 {
			return "-9223372036854775808ns"
		}
		d = -d
	}
	units := []struct {
		name string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}, {"us", time.Microsecond}, {"ns", 1}}
	for _, u := range units {
		if n := d / u.d; n > 0 {
			b = strconv.AppendInt(b, int64(n), 10)
			b = append(b, u.name...)
			d -= n * u.d
		}
	}
	return string(b)
}

// Plan is what the engine runs: a compiled rule. The SQL dialect in
// rules/sql compiles to a Plan; Go code can build one directly. All functions
// must be pure and deterministic: the engine's results are a function of its
// input only if they are.
type Plan struct {
	// Rule names the rule; it prefixes result IDs.
	Rule string
	// Window is the rule's window.
	Window WindowSpec
	// Where keeps the events for which it returns true; nil keeps all.
	Where func(*Event) bool
	// GroupBy are the group keys besides the window; none makes one group.
	GroupBy []GroupKey
	// Aggregates are computed per group and window; Row.Aggregates holds
	// their results in this order.
	Aggregates []AggregateCall
	// Columns are the output: Result.Values[Name] = Eval(row).
	Columns []Column
	// Having keeps the results for which it returns true; nil keeps all.
	Having func(*Row) bool
	// Fleet, when set, judges each window's groups against their peers before HAVING.
	Fleet *Fleet
	// Fingerprint identifies the plan's meaning (e.g. a hash of its
	// normalised SQL). Restore refuses snapshots of another fingerprint.
	Fingerprint string
}

// GroupKey is one GROUP BY key.
type GroupKey struct {
	Name string             // as written, e.g. "device", "tags.site"; the key in Result.Group
	Eval func(*Event) Value // the key's value for an event; NULL is a value like any other
}

// AggregateCall is one aggregate in a plan, such as avg(temperature).
type AggregateCall struct {
	Name string             // canonical text, e.g. "avg(temperature)", for messages
	Arg  func(*Event) Value // the argument per event; nil for f(*), which gets TRUE
	New  func() Aggregator  // a fresh, empty state; nil for a series function
	// Series, for a series function, makes a group's empty state; Fields is the length of
	// its record. The engine collects the window's numbers itself.
	Series func() SeriesState
	Fields int
}

// Column is one output column.
type Column struct {
	Name string
	Eval func(*Row) Value
}

// Row is what output columns and HAVING see of a closed window.
type Row struct {
	Group      []Value // in Plan.GroupBy order
	Aggregates []Value // in Plan.Aggregates order; a series function's first field
	// Records holds, at a series function's index, its record (nil elsewhere).
	Records    [][]Value
	Start, End time.Time
	// Fleet is the group's verdict against its peers, for plans with Fleet.
	Fleet FleetVerdict
}

// Validate checks the plan's structure.
func (p *Plan) Validate() error {
	if p == nil {
		return errors.New("plan: nil")
	}
	if p.Rule == "" {
		return errors.New("plan: Rule is empty")
	}
	if err := p.Window.Validate(); err != nil {
		return fmt.Errorf("plan %s: %w", p.Rule, err)
	}
	names := make(map[string]bool)
	for i, k := range p.GroupBy {
		if k.Name == "" || k.Eval == nil {
			return fmt.Errorf("plan %s: GroupBy[%d] needs Name and Eval", p.Rule, i)
		}
		if names[k.Name] {
			return fmt.Errorf("plan %s: duplicate group key %q", p.Rule, k.Name)
		}
		names[k.Name] = true
	}
	for i, a := range p.Aggregates {
		switch {
		case (a.New == nil) == (a.Series == nil):
			return fmt.Errorf("plan %s: Aggregates[%d] (%s) needs New or Series", p.Rule, i, a.Name)
		case a.Series != nil && a.Fields < 1:
			return fmt.Errorf("plan %s: Aggregates[%d] (%s) needs Fields", p.Rule, i, a.Name)
		case a.Series != nil && (p.Window.Kind == Hopping || p.Window.Kind == Sliding):
			return fmt.Errorf("plan %s: %s keeps a history across windows and needs windows that do not overlap (TUMBLING, SESSION or COUNTWINDOW), not %s", p.Rule, a.Name, p.Window.Kind)
		}
	}
	if p.Fleet != nil {
		if err := p.Fleet.validate(p); err != nil {
			return err
		}
	}
	if len(p.Columns) == 0 {
		return fmt.Errorf("plan %s: no output columns", p.Rule)
	}
	names = make(map[string]bool)
	for i, c := range p.Columns {
		if c.Name == "" || c.Eval == nil {
			return fmt.Errorf("plan %s: Columns[%d] needs Name and Eval", p.Rule, i)
		}
		if names[c.Name] {
			return fmt.Errorf("plan %s: duplicate column %q", p.Rule, c.Name)
		}
		names[c.Name] = true
	}
	return nil
}
