package window_test

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

func newAgg(t *testing.T, name string, params ...float64) func() window.Aggregator {
	t.Helper()
	f, ok := window.LookupAggregate(name)
	if !ok {
		t.Fatalf("no aggregate %s", name)
	}
	mk, err := f.New(params)
	if err != nil {
		t.Fatal(err)
	}
	return mk
}

type sample struct {
	v   window.Value
	ts  int64
	seq uint64
}

func num(f float64) window.Value { return window.NumberValue(f) }

func TestAggregates(t *testing.T) {
	mixed := []sample{
		{num(4), 30, 1}, {window.StringValue("x"), 10, 2}, {num(1), 20, 3}, {window.Null, 5, 4},
		{num(7), 40, 5}, {window.BoolValue(true), 50, 6}, {num(math.NaN()), 60, 7}, {num(2), 20, 8},
	}
	cases := []struct {
		name   string
		params []float64
		in     []sample
		want   window.Value
	}{
		{"count", nil, mixed, num(7)},
		{"count", nil, nil, num(0)},
		{"sum", nil, []sample{{num(4), 0, 0}, {window.StringValue("5"), 0, 0}, {num(1.5), 0, 0}}, num(5.5)},
		{"sum", nil, []sample{{window.StringValue("5"), 0, 0}}, window.Null},
		{"avg", nil, []sample{{num(4), 0, 0}, {num(1), 0, 0}, {window.Null, 0, 0}}, num(2.5)},
		{"avg", nil, nil, window.Null},
		{"min", nil, mixed, num(1)},
		{"max", nil, mixed, num(7)},
		{"max", nil, []sample{{window.StringValue("z"), 0, 0}}, window.Null},
		{"first", nil, mixed, window.StringValue("x")},                     // ts 10; the NULL at ts 5 does not count
		{"last", nil, mixed, num(math.NaN())},                              // ts 60
		{"first", nil, []sample{{num(1), 20, 9}, {num(2), 20, 3}}, num(2)}, // tie: lowest seq
		{"last", nil, []sample{{num(1), 20, 9}, {num(2), 20, 3}}, num(1)},  // tie: highest seq
		{"last", nil, []sample{{num(1), 20, 0}, {num(2), 20, 0}}, num(2)},  // no seqs: the later call
		{"first", nil, []sample{{num(1), 20, 0}, {num(2), 20, 0}}, num(1)},
		{"first", nil, nil, window.Null},
		{"stddev", nil, []sample{{num(2), 0, 0}, {num(4), 0, 0}, {num(4), 0, 0}, {num(4), 0, 0}, {num(5), 0, 0}, {num(5), 0, 0}, {num(7), 0, 0}, {num(9), 0, 0}}, num(math.Sqrt(32.0 / 7))},
		{"stddev", nil, []sample{{num(2), 0, 0}}, window.Null},
		{"percentile", []float64{50}, []sample{{num(3), 0, 0}, {num(1), 0, 0}, {num(2), 0, 0}, {num(4), 0, 0}}, num(2.5)},
		{"percentile", []float64{0}, []sample{{num(3), 0, 0}, {num(1), 0, 0}}, num(1)},
		{"percentile", []float64{100}, []sample{{num(3), 0, 0}, {num(1), 0, 0}}, num(3)},
		{"percentile", []float64{90}, []sample{{num(10), 0, 0}, {num(20), 0, 0}, {num(30), 0, 0}, {num(40), 0, 0}, {num(50), 0, 0}}, num(46)},
		{"percentile", []float64{90}, nil, window.Null},
	}
	for _, c := range cases {
		mk := newAgg(t, c.name, c.params...)
		a := mk()
		for _, s := range c.in {
			a.Add(s.v, s.ts, s.seq)
		}
		if got := a.Result(); !closeValue(got, c.want) {
			t.Errorf("%s%v over %d values: got %s, want %s", c.name, c.params, len(c.in), got, c.want)
		}

		// Any split, merged, gives the same result.
		for k := 0; k <= len(c.in); k++ {
			x, y := mk(), mk()
			for _, s := range c.in[:k] {
				x.Add(s.v, s.ts, s.seq)
			}
			for _, s := range c.in[k:] {
				y.Add(s.v, s.ts, s.seq)
			}
			x.Merge(y)
			if got := x.Result(); !closeValue(got, c.want) {
				t.Errorf("%s%v split at %d and merged: got %s, want %s", c.name, c.params, k, got, c.want)
			}
		}

		// The state survives encoding exactly.
		half := mk()
		for _, s := range c.in[:len(c.in)/2] {
			half.Add(s.v, s.ts, s.seq)
		}
		state := half.AppendState([]byte{0xAA})
		restored := mk()
		rest, err := restored.ReadState(state[1:])
		if err != nil || len(rest) != 0 {
			t.Errorf("%s: ReadState: %v, %d bytes left", c.name, err, len(rest))
			continue
		}
		if !bytes.Equal(restored.AppendState(nil), state[1:]) {
			t.Errorf("%s: state does not round-trip", c.name)
		}
		for _, s := range c.in[len(c.in)/2:] {
			restored.Add(s.v, s.ts, s.seq)
		}
		if got := restored.Result(); !closeValue(got, c.want) {
			t.Errorf("%s%v restored mid-way: got %s, want %s", c.name, c.params, got, c.want)
		}
		for i := range len(state) - 1 { // every strict prefix is an error
			if _, err := mk().ReadState(state[1 : 1+i]); err == nil {
				t.Errorf("%s: state truncated to %d of %d bytes decodes", c.name, i, len(state)-1)
			}
		}
	}
}

func closeValue(a, b window.Value) bool {
	x, ok1 := a.Number()
	y, ok2 := b.Number()
	if ok1 && ok2 {
		return x == y || math.Abs(x-y) < 1e-12*math.Max(1, math.Abs(y)) || (x != x && y != y)
	}
	return a.Equal(b)
}

func TestPercentileParams(t *testing.T) {
	f, _ := window.LookupAggregate("PERCENTILE")
	for _, p := range []float64{-1, 100.5, math.NaN()} {
		if _, err := f.New([]float64{p}); err == nil {
			t.Errorf("percentile p=%v: no error", p)
		}
	}
}

// spread is an aggregate registered from outside, as the anomaly functions
// will be: the SQL dialect finds it with no change.
type spread struct{ lo, hi, n float64 }

func (a *spread) Add(v window.Value, _ int64, _ uint64) {
	if x, ok := v.Number(); ok {
		if a.n == 0 || x < a.lo {
			a.lo = x
		}
		if a.n == 0 || x > a.hi {
			a.hi = x
		}
		a.n++
	}
}
func (a *spread) Merge(o window.Aggregator) {
	b := o.(*spread)
	if b.n > 0 {
		a.Add(window.NumberValue(b.lo), 0, 0)
		a.Add(window.NumberValue(b.hi), 0, 0)
		a.n += b.n - 2
	}
}
func (a *spread) Result() window.Value {
	if a.n == 0 {
		return window.Null
	}
	return window.NumberValue(a.hi - a.lo)
}
func (a *spread) AppendState(b []byte) []byte {
	for _, f := range []float64{a.lo, a.hi, a.n} {
		b = append(b, byte(math.Float64bits(f)>>56)) // coarse but enough for a test
	}
	return b
}
func (a *spread) ReadState(b []byte) ([]byte, error) { return b[3:], nil }

func TestRegisterAggregate(t *testing.T) {
	if _, ok := window.LookupAggregate("test_spread"); !ok {
		err := window.RegisterAggregate(window.AggregateFunc{
			Name: "Test_Spread",
			New: func([]float64) (func() window.Aggregator, error) {
				return func() window.Aggregator { return new(spread) }, nil
			},
			Doc: "max - min",
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := window.RegisterAggregate(window.AggregateFunc{Name: "avg", New: func([]float64) (func() window.Aggregator, error) { return nil, nil }}); err == nil {
		t.Error("registering avg again: no error")
	}
	if err := window.RegisterAggregate(window.AggregateFunc{Name: "x"}); err == nil {
		t.Error("registering without New: no error")
	}
	found := false
	for _, f := range window.AggregateFuncs() {
		found = found || f.Name == "test_spread"
	}
	if !found {
		t.Error("AggregateFuncs does not list test_spread")
	}
	e := engine(t, "SELECT device, test_spread(v) AS sp FROM 'devices/#' GROUP BY device, TUMBLING(1m)", window.Options{})
	for i, v := range []float64{3, 9, 4} {
		e.Process(ev("a", (time.Duration(i) * time.Second).String(), v))
	}
	eqResults(t, "results", e.Flush(), []string{"[0s,1m0s) device=a sp=6"})
}
