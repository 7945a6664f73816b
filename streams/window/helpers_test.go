package window_test

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/streams/window"
)

// base is the time tests count from: offsets like "1m30s" are after it.
var base = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func at(offset string) time.Time {
	neg := strings.HasPrefix(offset, "-")
	d, err := time.ParseDuration(strings.TrimPrefix(offset, "-"))
	if err != nil {
		panic(err)
	}
	if neg {
		d = -d
	}
	return base.Add(d)
}

// rel formats t as an offset from base, e.g. "1m30s".
func rel(t time.Time) string { return t.Sub(base).String() }

func plan(t testing.TB, query string) *window.Plan {
	t.Helper()
	r, err := sql.Compile("r1", query)
	if err != nil {
		t.Fatalf("compile %q: %v", query, err)
	}
	return r.Plan
}

func engine(t testing.TB, query string, opts window.Options) *window.Engine {
	t.Helper()
	e, err := window.New(plan(t, query), opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// ev builds a telemetry event of device dev at offset with field v.
func ev(dev, offset string, v float64) window.Event {
	return window.Event{Time: at(offset), Device: dev, Type: "thermostat", Fields: map[string]any{"v": v}}
}

// format renders a result compactly: its window relative to base and its
// values in name order, e.g. "[0s,1m0s) device=a n=2 s=3".
func format(r window.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s,%s)", rel(r.WindowStart), rel(r.WindowEnd))
	names := make([]string, 0, len(r.Values))
	for k := range r.Values {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v := r.Values[k]
		switch x := v.(type) {
		case float64:
			v = strconv.FormatFloat(math.Round(x*1e4)/1e4, 'f', -1, 64)
		case time.Time:
			v = rel(x)
		}
		fmt.Fprintf(&b, " %s=%v", k, v)
	}
	return b.String()
}

func formatAll(rs []window.Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = format(r)
	}
	return out
}

// sameResults compares two result lists as sets keyed by ID, numbers to a
// relative tolerance (floating-point sums depend on the order of addition).
func sameResults(a, b []window.Result) error {
	if len(a) != len(b) {
		return fmt.Errorf("got %d results, want %d:\n%v\n%v", len(a), len(b), formatAll(a), formatAll(b))
	}
	byID := func(rs []window.Result) []window.Result {
		rs = slices.Clone(rs)
		slices.SortFunc(rs, func(x, y window.Result) int { return strings.Compare(x.ID, y.ID) })
		return rs
	}
	a, b = byID(a), byID(b)
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.GroupKey != y.GroupKey || !x.WindowStart.Equal(y.WindowStart) || !x.WindowEnd.Equal(y.WindowEnd) || len(x.Values) != len(y.Values) {
			return fmt.Errorf("result %d: got %s %s, want %s %s", i, x.ID, format(x), y.ID, format(y))
		}
		for k, xv := range x.Values {
			yv, ok := y.Values[k]
			if !ok || !closeEnough(xv, yv) {
				return fmt.Errorf("result %s column %s: got %v, want %v", x.ID, k, xv, yv)
			}
		}
	}
	return nil
}

func closeEnough(a, b any) bool {
	x, ok1 := a.(float64)
	y, ok2 := b.(float64)
	if !ok1 || !ok2 {
		return fmt.Sprint(a) == fmt.Sprint(b)
	}
	return x == y || math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y))
}

// eq fails the test unless got equals want (reflect.DeepEqual).
func eq[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}

func eqResults(t testing.TB, what string, got []window.Result, want []string) {
	t.Helper()
	g := formatAll(got)
	if len(g) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(g, want) {
		t.Fatalf("%s:\ngot  %q\nwant %q", what, g, want)
	}
}
