package sql

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/tributary-iot/tributary/streams/window"
)

// Rule is a compiled query: the engine's plan and what the hub needs to
// feed it.
type Rule struct {
	Name   string
	Query  *Query
	Source Source
	Plan   *window.Plan
}

// Source is a rule's input.
type Source struct {
	// Topic is the MQTT-style topic filter of FROM, e.g.
	// "devices/+/telemetry" or "rules/hot_rooms".
	Topic string
	// Rule is set when Topic is exactly rules/<name>: the rule whose results
	// this rule reads.
	Rule string
}

var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidRuleName reports whether name can name a rule: like a device ID, 1 to
// 64 letters, digits, '-' and '_', starting with a letter or digit, so that
// it fits in topics (rules/<name>, rules/<name>/late), NATS subjects and
// KV keys.
func ValidRuleName(name string) bool { return ruleNameRE.MatchString(name) }

// Compile parses and checks a query and compiles it into a plan for the
// window engine. Errors in the query are *ParseError, with the position and
// what is wrong; an invalid name is ErrInvalidRuleName.
func Compile(name, src string) (*Rule, error) {
	if !ValidRuleName(name) {
		return nil, fmt.Errorf("%w %q: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", ErrInvalidRuleName, name)
	}
	q, err := Parse(src)
	if err != nil {
		return nil, err
	}
	return CompileQuery(name, q)
}

// CompileQuery checks and compiles a parsed query.
func CompileQuery(name string, q *Query) (*Rule, error) {
	if !ValidRuleName(name) {
		return nil, fmt.Errorf("%w %q: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", ErrInvalidRuleName, name)
	}
	c := &compiler{q: q, src: q.src, aggIndex: map[string]int{}}
	src, err := c.source(name)
	if err != nil {
		return nil, err
	}
	plan := &window.Plan{Rule: name}
	if q.GroupBy.Window == nil {
		pos := q.GroupBy.Pos
		if pos < 0 {
			pos = len(c.src)
		}
		return nil, c.errorf(pos, "missing window: GROUP BY needs one of %s", windowList)
	}
	plan.Window = q.GroupBy.Window.Spec
	for _, id := range q.GroupBy.Keys {
		f, err := c.field(id)
		if err != nil {
			return nil, err
		}
		for _, k := range c.keys {
			if k.name == f.name {
				return nil, c.errorf(id.P, "group key %s appears twice", f.name)
			}
		}
		c.keys = append(c.keys, f)
		plan.GroupBy = append(plan.GroupBy, window.GroupKey{Name: f.name, Eval: f.get})
	}
	if q.Where != nil {
		f, _, err := compileExpr(c, q.Where, eventScope{where: "WHERE"})
		if err != nil {
			return nil, err
		}
		plan.Where = func(ev *window.Event) bool { return isTrue(f(ev)) }
	}
	aliases := map[string]rowFn{}
	for _, it := range q.Select {
		f, _, err := compileExpr(c, it.Expr, rowScope{clause: "SELECT"})
		if err != nil {
			return nil, err
		}
		name := it.Alias
		if name == "" {
			name = defaultName(it.Expr)
		}
		if _, dup := aliases[name]; dup {
			return nil, c.errorf(it.Pos, "duplicate column name %q in SELECT; rename one with AS", name)
		}
		aliases[name] = f
		plan.Columns = append(plan.Columns, window.Column{Name: name, Eval: f})
	}
	if q.Outliers != nil {
		fl, err := c.outliers(plan)
		if err != nil {
			return nil, err
		}
		plan.Fleet = fl
	}
	if q.Having != nil {
		f, _, err := compileExpr(c, q.Having, rowScope{clause: "HAVING", aliases: aliases})
		if err != nil {
			return nil, err
		}
		plan.Having = func(r *window.Row) bool { return isTrue(f(r)) }
	}
	plan.Aggregates = c.aggs
	sum := sha256.Sum256([]byte(q.String()))
	plan.Fingerprint = hex.EncodeToString(sum[:16])
	if err := plan.Validate(); err != nil { // a bug if it fails: report it, don't panic
		return nil, c.errorf(0, "%v", err)
	}
	return &Rule{Name: name, Query: q, Source: src, Plan: plan}, nil
}

// defaultName names a column without alias: a column by its name, anything
// else by its canonical text, e.g. "avg(temperature)".
func defaultName(e Expr) string {
	if id, ok := e.(*Ident); ok {
		return id.Name()
	}
	return e.String()
}

type (
	eventFn = func(*window.Event) window.Value
	rowFn   = func(*window.Row) window.Value
)

type compiler struct {
	q        *Query
	src      string
	keys     []field
	aggs     []window.AggregateCall
	aggIndex map[string]int // canonical call text → index in aggs
}

func (c *compiler) errorf(pos int, format string, args ...any) error {
	return errorAt(c.src, pos, format, args...)
}

// source checks FROM.
func (c *compiler) source(rule string) (Source, error) {
	topic, pos := c.q.From.Topic, c.q.From.Pos
	s := Source{Topic: topic}
	if topic == "" {
		return s, c.errorf(pos, "empty topic filter in FROM")
	}
	levels := strings.Split(topic, "/")
	for i, l := range levels {
		switch {
		case strings.ContainsRune(l, 0):
			return s, c.errorf(pos, "topic filter %q contains a NUL character", topic)
		case l == "#" && i != len(levels)-1:
			return s, c.errorf(pos, "in topic filter %q, '#' must be the last level", topic)
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return s, c.errorf(pos, "in topic filter %q, wildcards '+' and '#' must fill a whole level", topic)
		}
	}
	switch {
	case levels[0] == "devices":
	case levels[0] == "rules":
		if len(levels) == 2 && ValidRuleName(levels[1]) {
			s.Rule = levels[1]
			if s.Rule == rule {
				return s, c.errorf(pos, "rule %s cannot read its own results", rule)
			}
		}
	default:
		return s, c.errorf(pos, "FROM %s: a rule reads device messages ('devices/+/telemetry') or another rule's results ('rules/<name>')", quoteString(topic))
	}
	return s, nil
}

// field is a column of the input event.
type field struct {
	name string // canonical: "device", "type", "tags.site", "temperature", "payload.device"
	get  eventFn
}

// field resolves a name in the event: device, type, tags.<key>,
// payload.<field> or a payload field. device, type, tags and payload are
// matched in any case; tag keys and payload fields are case-sensitive.
func (c *compiler) field(id *Ident) (field, error) {
	first := strings.ToLower(id.Parts[0])
	switch {
	case first == "device" && len(id.Parts) == 1:
		return field{"device", func(ev *window.Event) window.Value { return nonEmpty(ev.Device) }}, nil
	case first == "type" && len(id.Parts) == 1:
		return field{"type", func(ev *window.Event) window.Value { return nonEmpty(ev.Type) }}, nil
	case first == "tags":
		if len(id.Parts) == 1 {
			return field{}, c.errorf(id.P, "tags needs a key, like tags.site")
		}
		key := strings.Join(id.Parts[1:], ".")
		return field{"tags." + key, func(ev *window.Event) window.Value {
			if v, ok := ev.Tags[key]; ok {
				return window.StringValue(v)
			}
			return window.Null
		}}, nil
	case first == "payload":
		if len(id.Parts) == 1 {
			return field{}, c.errorf(id.P, "payload needs a field, like payload.temperature")
		}
		return payloadField(id.Parts[1:]), nil
	}
	return payloadField(id.Parts), nil
}

func nonEmpty(s string) window.Value {
	if s == "" {
		return window.Null
	}
	return window.StringValue(s)
}

// payloadField reads a payload field: first the flattened name ("env.rh"),
// then the nested path (Fields["env"]["rh"]).
func payloadField(path []string) field {
	full := strings.Join(path, ".")
	name := full
	switch first := strings.ToLower(path[0]); {
	case first == "tags" || first == "payload" || (len(path) == 1 && (first == "device" || first == "type")):
		name = "payload." + full // would otherwise mean something else
	}
	if len(path) == 1 {
		return field{name, func(ev *window.Event) window.Value {
			v, ok := ev.Fields[full]
			if !ok {
				return window.Null
			}
			return window.ValueOf(v)
		}}
	}
	return field{name, func(ev *window.Event) window.Value {
		if v, ok := ev.Fields[full]; ok {
			return window.ValueOf(v)
		}
		var cur any = ev.Fields
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				return window.Null
			}
			if cur, ok = m[p]; !ok {
				return window.Null
			}
		}
		return window.ValueOf(cur)
	}}
}

// scope resolves names and calls for one kind of context: events (WHERE and
// aggregate arguments) or closed windows (SELECT and HAVING).
type scope[C any] interface {
	ident(c *compiler, id *Ident) (func(C) window.Value, error)
	// call handles the calls special to the scope; handled is false for
	// scalar functions.
	call(c *compiler, call *Call) (f func(C) window.Value, handled bool, err error)
}

type eventScope struct {
	where string // for messages: "WHERE" or "the argument of avg"
}

func (s eventScope) ident(c *compiler, id *Ident) (eventFn, error) {
	f, err := c.field(id)
	return f.get, err
}

func (s eventScope) call(c *compiler, call *Call) (eventFn, bool, error) {
	if _, ok := window.LookupAggregate(call.Name); ok {
		if strings.HasPrefix(s.where, "the argument") {
			return nil, true, c.errorf(call.P, "aggregate function %s cannot be used inside another aggregate (in %s)", call.Name, s.where)
		}
		return nil, true, c.errorf(call.P, "aggregate function %s is not allowed in %s: filter results with HAVING", call.Name, s.where)
	}
	if call.Name == "window_start" || call.Name == "window_end" {
		return nil, true, c.errorf(call.P, "%s() is only allowed in SELECT and HAVING", call.Name)
	}
	return nil, false, nil
}

type rowScope struct {
	clause  string           // "SELECT" or "HAVING"
	aliases map[string]rowFn // HAVING: SELECT's columns
}

func (s rowScope) ident(c *compiler, id *Ident) (rowFn, error) {
	if f, ok := s.aliases[id.Name()]; ok {
		return f, nil
	}
	if f := c.fleetName(id); f != nil {
		return f, nil
	}
	f, err := c.field(id)
	if err != nil {
		return nil, err
	}
	for i, k := range c.keys {
		if k.name == f.name {
			return func(r *window.Row) window.Value { return r.Group[i] }, nil
		}
	}
	if s.clause == "HAVING" {
		have := make([]string, 0, len(s.aliases)+len(c.keys))
		for a := range s.aliases {
			have = append(have, a)
		}
		for _, k := range c.keys {
			if _, ok := s.aliases[k.name]; !ok {
				have = append(have, k.name)
			}
		}
		slices.Sort(have)
		return nil, c.errorf(id.P, "unknown column %s in HAVING: not a SELECT column or GROUP BY key (have %s)", id.Name(), strings.Join(have, ", "))
	}
	return nil, c.errorf(id.P, "column %s must be in GROUP BY or inside an aggregate function, like avg(%s)", id.Name(), id.Name())
}

func (s rowScope) call(c *compiler, call *Call) (rowFn, bool, error) {
	switch call.Name {
	case "window_start", "window_end":
		if len(call.Args) > 0 || call.Star {
			return nil, true, c.errorf(call.P, "%s() takes no arguments", call.Name)
		}
		if call.Name == "window_start" {
			return func(r *window.Row) window.Value { return window.TimeValue(r.Start) }, true, nil
		}
		return func(r *window.Row) window.Value { return window.TimeValue(r.End) }, true, nil
	}
	def, ok := window.LookupAggregate(call.Name)
	if !ok {
		return nil, false, nil
	}
	if def.NewSeries != nil {
		f, err := c.seriesCall(def, call)
		return f, true, err
	}
	i, err := c.aggregate(def, call)
	if err != nil {
		return nil, true, err
	}
	return func(r *window.Row) window.Value { return r.Aggregates[i] }, true, nil
}

// aggregate adds an aggregate call to the plan, once per distinct call, and
// returns its index.
func (c *compiler) aggregate(def window.AggregateFunc, call *Call) (int, error) {
	bare := *call
	bare.Field = "" // spike(x, c, n).score and .anomaly are one call
	key := bare.String()
	if i, ok := c.aggIndex[key]; ok {
		return i, nil
	}
	usage := call.Name + "(x"
	for range def.Params {
		usage += ", p"
	}
	usage += ")"
	if def.Star {
		usage += " or " + call.Name + "(*)"
	}
	if call.Star && !def.Star {
		return 0, c.errorf(call.P, "%s(*) is not allowed: use %s", call.Name, usage)
	}
	nargs := len(call.Args)
	if call.Star {
		nargs = 1
	}
	if nargs != 1+def.Params {
		return 0, c.errorf(call.P, "%s takes %d argument(s), got %d: use %s", call.Name, 1+def.Params, nargs, usage)
	}
	var arg eventFn
	if !call.Star {
		f, _, err := compileExpr(c, call.Args[0], eventScope{where: "the argument of " + call.Name})
		if err != nil {
			return 0, err
		}
		arg = f
	}
	var params []float64
	for _, a := range call.Args[min(1, len(call.Args)):] {
		f, isConst, err := compileExpr(c, a, eventScope{where: "the argument of " + call.Name})
		if err != nil {
			return 0, err
		}
		if !isConst {
			return 0, c.errorf(a.Pos(), "%s: parameter %s must be a constant number", call.Name, a)
		}
		x, ok := f(nil).Number()
		if !ok {
			return 0, c.errorf(a.Pos(), "%s: parameter %s must be a constant number", call.Name, a)
		}
		params = append(params, x)
	}
	ac := window.AggregateCall{Name: key, Arg: arg}
	var err error
	if def.NewSeries != nil {
		ac.Series, err = def.NewSeries(params)
		ac.Fields = len(def.Fields)
	} else {
		ac.New, err = def.New(params)
	}
	if err != nil {
		return 0, c.errorf(call.P, "%v", err)
	}
	c.aggs = append(c.aggs, ac)
	c.aggIndex[key] = len(c.aggs) - 1
	return len(c.aggs) - 1, nil
}

// compileExpr compiles e for scope s into a function. isConst reports that
// the result does not depend on the input; such expressions are evaluated
// once, here.
func compileExpr[C any](c *compiler, e Expr, s scope[C]) (f func(C) window.Value, isConst bool, err error) {
	f, isConst, err = compileNode(c, e, s)
	if err == nil && isConst {
		var zero C
		v := f(zero)
		f = func(C) window.Value { return v }
	}
	return f, isConst, err
}

func compileNode[C any](c *compiler, e Expr, s scope[C]) (func(C) window.Value, bool, error) {
	switch e := e.(type) {
	case *Literal:
		v := e.Value
		return func(C) window.Value { return v }, true, nil
	case *Ident:
		f, err := s.ident(c, e)
		return f, false, err
	case *Unary:
		x, isConst, err := compileExpr(c, e.X, s)
		if err != nil {
			return nil, false, err
		}
		switch e.Op {
		case "NOT":
			return func(ev C) window.Value {
				switch truth(x(ev)) {
				case lTrue:
					return window.BoolValue(false)
				case lFalse:
					return window.BoolValue(true)
				}
				return window.Null
			}, isConst, nil
		case "-":
			return func(ev C) window.Value {
				if n, ok := x(ev).Number(); ok {
					return window.NumberValue(-n)
				}
				return window.Null
			}, isConst, nil
		}
		return func(ev C) window.Value {
			if n, ok := x(ev).Number(); ok {
				return window.NumberValue(n)
			}
			return window.Null
		}, isConst, nil
	case *Binary:
		l, lc, err := compileExpr(c, e.L, s)
		if err != nil {
			return nil, false, err
		}
		r, rc, err := compileExpr(c, e.R, s)
		if err != nil {
			return nil, false, err
		}
		isConst := lc && rc
		switch e.Op {
		case "AND":
			return func(ev C) window.Value {
				a := truth(l(ev))
				if a == lFalse {
					return window.BoolValue(false)
				}
				b := truth(r(ev))
				if b == lFalse {
					return window.BoolValue(false)
				}
				if a == lTrue && b == lTrue {
					return window.BoolValue(true)
				}
				return window.Null
			}, isConst, nil
		case "OR":
			return func(ev C) window.Value {
				a := truth(l(ev))
				if a == lTrue {
					return window.BoolValue(true)
				}
				b := truth(r(ev))
				if b == lTrue {
					return window.BoolValue(true)
				}
				if a == lFalse && b == lFalse {
					return window.BoolValue(false)
				}
				return window.Null
			}, isConst, nil
		case "+", "-", "*", "/", "%":
			op := arithmetic(e.Op)
			return func(ev C) window.Value { return op(l(ev), r(ev)) }, isConst, nil
		}
		op := comparison(e.Op)
		return func(ev C) window.Value { return op(l(ev), r(ev)) }, isConst, nil
	case *In:
		x, isConst, err := compileExpr(c, e.X, s)
		if err != nil {
			return nil, false, err
		}
		list := make([]func(C) window.Value, len(e.List))
		for i, item := range e.List {
			f, ic, err := compileExpr(c, item, s)
			if err != nil {
				return nil, false, err
			}
			list[i], isConst = f, isConst && ic
		}
		eq, not := comparison("="), e.Not
		return func(ev C) window.Value {
			v := x(ev)
			res := lFalse
			for _, f := range list {
				switch truth(eq(v, f(ev))) {
				case lTrue:
					res = lTrue
				case lNull:
					res = lNull
				}
				if res == lTrue {
					break
				}
			}
			if not && res != lNull {
				res = 1 - res
			}
			return logicValue(res)
		}, isConst, nil
	case *IsNull:
		x, isConst, err := compileExpr(c, e.X, s)
		if err != nil {
			return nil, false, err
		}
		not := e.Not
		return func(ev C) window.Value { return window.BoolValue(x(ev).IsNull() != not) }, isConst, nil
	case *Call:
		if e.Field != "" {
			if def, ok := window.LookupAggregate(e.Name); !ok || def.NewSeries == nil {
				return nil, false, c.errorf(e.P, "%s returns a single value, not a record: remove .%s (fields are for %s)", e.Name, e.Field, recordFuncList())
			}
		}
		if f, handled, err := s.call(c, e); handled || err != nil {
			return f, false, err
		}
		return compileScalarCall(c, e, s)
	}
	return nil, false, c.errorf(e.Pos(), "unsupported expression %s", e)
}

func compileScalarCall[C any](c *compiler, e *Call, s scope[C]) (func(C) window.Value, bool, error) {
	if _, ok := windowFuncs[strings.ToUpper(e.Name)]; ok {
		return nil, false, c.errorf(e.P, "window function %s is only allowed in GROUP BY", strings.ToUpper(e.Name))
	}
	sf, ok := scalarFuncs[e.Name]
	if !ok {
		msg := fmt.Sprintf("unknown function %s", e.Name)
		if s := suggest(e.Name); s != "" {
			msg += fmt.Sprintf("; did you mean %s?", s)
		}
		return nil, false, c.errorf(e.P, "%s", msg)
	}
	if e.Star || len(e.Args) < sf.minArgs || len(e.Args) > sf.maxArgs {
		want := fmt.Sprint(sf.minArgs)
		if sf.maxArgs != sf.minArgs {
			want += " or " + fmt.Sprint(sf.maxArgs)
		}
		return nil, false, c.errorf(e.P, "%s takes %s argument(s)", e.Name, want)
	}
	args := make([]func(C) window.Value, len(e.Args))
	isConst := true
	for i, a := range e.Args {
		f, ic, err := compileExpr(c, a, s)
		if err != nil {
			return nil, false, err
		}
		args[i], isConst = f, isConst && ic
	}
	fn := sf.fn
	return func(ev C) window.Value {
		vals := make([]window.Value, len(args))
		for i, a := range args {
			vals[i] = a(ev)
		}
		return fn(vals)
	}, isConst, nil
}

// suggest returns the known function name closest to name, if it is close.
func suggest(name string) string {
	var names []string
	for _, f := range window.AggregateFuncs() {
		names = append(names, f.Name)
	}
	for n := range scalarFuncs {
		names = append(names, n)
	}
	names = append(names, "window_start", "window_end")
	slices.Sort(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(name, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
