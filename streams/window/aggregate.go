package window

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Aggregator is the state of one aggregate in one window of one group.
//
// Implementations must be deterministic: the result may depend on the order of
// Add calls (floating-point sums do, in the last bits) but on nothing else.
// Numeric aggregates ignore values that are not numbers; all ignore NULL.
type Aggregator interface {
	// Add folds in one event's argument. ts is the event time in Unix
	// nanoseconds and seq its input sequence, for order-aware aggregates
	// (first, last); ties in ts are broken by seq.
	Add(v Value, ts int64, seq uint64)
	// Merge folds in other, which was made by the same constructor; used when
	// an event bridges two sessions. other is not used afterwards.
	Merge(other Aggregator)
	// Result returns the aggregate's value; NULL when it saw no values (count
	// returns 0). It may be called more than once.
	Result() Value
	// AppendState appends the state in a form ReadState restores exactly.
	AppendState(b []byte) []byte
	// ReadState restores the state from the front of b and returns the rest.
	ReadState(b []byte) ([]byte, error)
}

// AggregateFunc describes an aggregate function that rules can call. The
// registry of these is the single place where functions are added: the SQL
// compiler looks names up here, and the engine only ever sees the
// constructors.
type AggregateFunc struct {
	// Name is the function name, lower case.
	Name string
	// Star allows f(*), which is called with TRUE for every event.
	Star bool
	// Params is how many constant numeric parameters follow the value
	// argument, e.g. 1 for percentile(field, p).
	Params int
	// New validates the parameters and returns a constructor for empty states.
	New func(params []float64) (func() Aggregator, error)
	// Doc is one line for users, e.g. "sample standard deviation".
	Doc string
	// NewSeries, instead of New, makes a series function: its state is per group and lasts
	// across windows, and it returns a record of Fields (see SeriesState). It validates the
	// parameters and returns a constructor for a group's empty state.
	NewSeries func(params []float64) (func() SeriesState, error)
	// Fields name a series function's record fields, e.g. "score", "anomaly".
	Fields []string
}

var registry = struct {
	sync.RWMutex
	funcs map[string]AggregateFunc
}{funcs: map[string]AggregateFunc{}}

func init() {
	for _, f := range append(builtinAggregates, seriesAggregates...) {
		if err := RegisterAggregate(f); err != nil {
			panic(err)
		}
	}
}

// RegisterAggregate adds an aggregate function. Names are case-insensitive and
// must be new. Register during initialisation, before compiling rules that
// use the function.
func RegisterAggregate(f AggregateFunc) error {
	name := strings.ToLower(f.Name)
	if name == "" || (f.New == nil) == (f.NewSeries == nil) || f.Params < 0 || (f.NewSeries != nil && len(f.Fields) == 0) {
		return fmt.Errorf("register aggregate %q: needs Name and New or NewSeries (with Fields)", f.Name)
	}
	f.Name = name
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.funcs[name]; ok {
		return fmt.Errorf("register aggregate %q: already registered", name)
	}
	registry.funcs[name] = f
	return nil
}

// LookupAggregate returns the aggregate function called name (any case).
func LookupAggregate(name string) (AggregateFunc, bool) {
	registry.RLock()
	defer registry.RUnlock()
	f, ok := registry.funcs[strings.ToLower(name)]
	return f, ok
}

// AggregateFuncs returns the registered aggregate functions sorted by name.
func AggregateFuncs() []AggregateFunc {
	registry.RLock()
	defer registry.RUnlock()
	fs := make([]AggregateFunc, 0, len(registry.funcs))
	for _, f := range registry.funcs {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs
}

func noParams(newAgg func() Aggregator) func([]float64) (func() Aggregator, error) {
	return func([]float64) (func() Aggregator, error) { return newAgg, nil }
}

var builtinAggregates = []AggregateFunc{
	{Name: "count", Star: true, New: noParams(func() Aggregator { return new(countAgg) }),
		Doc: "number of non-NULL values; count(*) counts events"},
	{Name: "sum", New: noParams(func() Aggregator { return new(sumAgg) }),
		Doc: "sum of the numbers"},
	{Name: "avg", New: noParams(func() Aggregator { return new(avgAgg) }),
		Doc: "arithmetic mean of the numbers"},
	{Name: "min", New: noParams(func() Aggregator { return &extremeAgg{max: false} }),
		Doc: "smallest number"},
	{Name: "max", New: noParams(func() Aggregator { return &extremeAgg{max: true} }),
		Doc: "largest number"},
	{Name: "first", New: noParams(func() Aggregator { return &edgeAgg{last: false} }),
		Doc: "the non-NULL value with the earliest event time (ties: lowest sequence)"},
	{Name: "last", New: noParams(func() Aggregator { return &edgeAgg{last: true} }),
		Doc: "the non-NULL value with the latest event time (ties: highest sequence)"},
	{Name: "stddev", New: noParams(func() Aggregator { return new(stddevAgg) }),
		Doc: "sample standard deviation (Welford); NULL for fewer than two numbers"},
	{Name: "percentile", Params: 1, New: newPercentile,
		Doc: "percentile(x, p), 0 <= p <= 100, linear interpolation between closest ranks; keeps every value of the window"},
}

// countAgg counts non-NULL values.
type countAgg struct{ n int64 }

func (a *countAgg) Add(v Value, _ int64, _ uint64) {
	if v.kind != KindNull {
		a.n++
	}
}
func (a *countAgg) Merge(o Aggregator)          { a.n += o.(*countAgg).n }
func (a *countAgg) Result() Value               { return NumberValue(float64(a.n)) }
func (a *countAgg) AppendState(b []byte) []byte { return appendUvarint(b, uint64(a.n)) }
func (a *countAgg) ReadState(b []byte) ([]byte, error) {
	n, b, err := readUvarint(b)
	a.n = int64(n)
	return b, err
}

// sumAgg sums numbers.
type sumAgg struct {
	sum float64
	n   int64
}

func (a *sumAgg) Add(v Value, _ int64, _ uint64) {
	if v.kind == KindNumber {
		a.sum += v.num
		a.n++
	}
}
func (a *sumAgg) Merge(o Aggregator) {
	x := o.(*sumAgg)
	a.sum += x.sum
	a.n += x.n
}
func (a *sumAgg) Result() Value {
	if a.n == 0 {
		return Null
	}
	return NumberValue(a.sum)
}
func (a *sumAgg) AppendState(b []byte) []byte {
	return appendUvarint(appendF64(b, a.sum), uint64(a.n))
}
func (a *sumAgg) ReadState(b []byte) ([]byte, error) {
	var n uint64
	var err error
	a.sum, b, err = readF64(b)
	if err == nil {
		n, b, err = readUvarint(b)
		a.n = int64(n)
	}
	return b, err
}

// avgAgg is the mean of numbers.
type avgAgg struct{ sumAgg }

func (a *avgAgg) Merge(o Aggregator) { a.sumAgg.Merge(&o.(*avgAgg).sumAgg) }
func (a *avgAgg) Result() Value {
	if a.n == 0 {
		return Null
	}
	return NumberValue(a.sum / float64(a.n))
}

// extremeAgg is min or max of numbers.
type extremeAgg struct {
	max bool
	set bool
	v   float64
}

func (a *extremeAgg) Add(v Value, _ int64, _ uint64) {
	if v.kind != KindNumber || v.num != v.num { // NaN never wins
		return
	}
	if !a.set || (a.max && v.num > a.v) || (!a.max && v.num < a.v) {
		a.v, a.set = v.num, true
	}
}
func (a *extremeAgg) Merge(o Aggregator) {
	x := o.(*extremeAgg)
	if x.set {
		a.Add(NumberValue(x.v), 0, 0)
	}
}
func (a *extremeAgg) Result() Value {
	if !a.set {
		return Null
	}
	return NumberValue(a.v)
}
func (a *extremeAgg) AppendState(b []byte) []byte {
	if !a.set {
		return append(b, 0)
	}
	return appendF64(append(b, 1), a.v)
}
func (a *extremeAgg) ReadState(b []byte) ([]byte, error) {
	flag, b, err := readByte(b)
	if err != nil || flag == 0 {
		return b, err
	}
	a.set = true
	a.v, b, err = readF64(b)
	return b, err
}

// edgeAgg is first or last by (event time, sequence).
type edgeAgg struct {
	last bool
	set  bool
	ts   int64
	seq  uint64
	v    Value
}

func (a *edgeAgg) Add(v Value, ts int64, seq uint64) {
	if v.kind == KindNull {
		return
	}
	if !a.set {
		a.set, a.ts, a.seq, a.v = true, ts, seq, v
		return
	}
	if a.last {
		if ts > a.ts || (ts == a.ts && seq >= a.seq) {
			a.ts, a.seq, a.v = ts, seq, v
		}
	} else if ts < a.ts || (ts == a.ts && seq < a.seq) {
		a.ts, a.seq, a.v = ts, seq, v
	}
}
func (a *edgeAgg) Merge(o Aggregator) {
	x := o.(*edgeAgg)
	if x.set {
		a.Add(x.v, x.ts, x.seq)
	}
}
func (a *edgeAgg) Result() Value { return a.v }
func (a *edgeAgg) AppendState(b []byte) []byte {
	if !a.set {
		return append(b, 0)
	}
	b = append(b, 1)
	b = appendU64(b, uint64(a.ts))
	b = appendUvarint(b, a.seq)
	return appendValue(b, a.v)
}
func (a *edgeAgg) ReadState(b []byte) ([]byte, error) {
	flag, b, err := readByte(b)
	if err != nil || flag == 0 {
		return b, err
	}
	a.set = true
	var ts uint64
	if ts, b, err = readU64(b); err != nil {
		return b, err
	}
	a.ts = int64(ts)
	if a.seq, b, err = readUvarint(b); err != nil {
		return b, err
	}
	a.v, b, err = readValue(b)
	return b, err
}

// stddevAgg is the sample standard deviation by Welford's online algorithm,
// merged with Chan et al.'s parallel formula.
type stddevAgg struct {
	n        int64
	mean, m2 float64
}

func (a *stddevAgg) Add(v Value, _ int64, _ uint64) {
	if v.kind != KindNumber {
		return
	}
	a.n++
	d := v.num - a.mean
	a.mean += d / float64(a.n)
	a.m2 += d * (v.num - a.mean)
}
func (a *stddevAgg) Merge(o Aggregator) {
	x := o.(*stddevAgg)
	switch {
	case x.n == 0:
		return
	case a.n == 0:
		*a = *x
		return
	}
	n := a.n + x.n
	d := x.mean - a.mean
	a.mean += d * float64(x.n) / float64(n)
	a.m2 += x.m2 + d*d*float64(a.n)*float64(x.n)/float64(n)
	a.n = n
}
func (a *stddevAgg) Result() Value {
	if a.n < 2 {
		return Null
	}
	return NumberValue(math.Sqrt(a.m2 / float64(a.n-1)))
}
func (a *stddevAgg) AppendState(b []byte) []byte {
	b = appendUvarint(b, uint64(a.n))
	return appendF64(appendF64(b, a.mean), a.m2)
}
func (a *stddevAgg) ReadState(b []byte) ([]byte, error) {
	n, b, err := readUvarint(b)
	if err != nil {
		return b, err
	}
	a.n = int64(n)
	if a.mean, b, err = readF64(b); err != nil {
		return b, err
	}
	a.m2, b, err = readF64(b)
	return b, err
}

// percentileAgg keeps every number of the window (8 bytes each) and
// interpolates linearly between the closest ranks, like numpy's default.
type percentileAgg struct {
	p      float64 // 0..100
	values []float64
	sorted bool
}

func newPercentile(params []float64) (func() Aggregator, error) {
	p := params[0]
	if !(p >= 0 && p <= 100) {
		return nil, fmt.Errorf("percentile: p must be between 0 and 100, got %g", p)
	}
	return func() Aggregator { return &percentileAgg{p: p} }, nil
}

func (a *percentileAgg) Add(v Value, _ int64, _ uint64) {
	if v.kind == KindNumber && v.num == v.num {
		a.values = append(a.values, v.num)
		a.sorted = false
	}
}
func (a *percentileAgg) Merge(o Aggregator) {
	a.values = append(a.values, o.(*percentileAgg).values...)
	a.sorted = false
}
func (a *percentileAgg) Result() Value {
	n := len(a.values)
	if n == 0 {
		return Null
	}
	if !a.sorted {
		slices.Sort(a.values)
		a.sorted = true
	}
	rank := a.p / 100 * float64(n-1)
	lo := int(math.Floor(rank))
	if lo >= n-1 {
		return NumberValue(a.values[n-1])
	}
	frac := rank - float64(lo)
	return NumberValue(a.values[lo] + frac*(a.values[lo+1]-a.values[lo]))
}
func (a *percentileAgg) AppendState(b []byte) []byte {
	b = appendUvarint(b, uint64(len(a.values)))
	for _, v := range a.values {
		b = appendF64(b, v)
	}
	return b
}
func (a *percentileAgg) ReadState(b []byte) ([]byte, error) {
	n, b, err := readUvarint(b)
	if err != nil {
		return b, err
	}
	if n > uint64(len(b))/8 {
		return b, errCorrupt
	}
	a.values = make([]float64, n)
	for i := range a.values {
		a.values[i], b, _ = readF64(b)
	}
	a.sorted = false
	return b, nil
}
