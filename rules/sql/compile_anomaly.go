package sql

import (
	"slices"
	"strings"

	"github.com/tributary-iot/tributary/anomaly"
	"github.com/tributary-iot/tributary/streams/window"
)

// Anomaly functions and fleet outliers: the record functions of the window package's
// registry (spike, changepoint) and the OUTLIERS clause.

// recordFuncList names the functions that return records, for messages.
func recordFuncList() string {
	var names []string
	for _, f := range window.AggregateFuncs() {
		if f.NewSeries != nil {
			names = append(names, f.Name)
		}
	}
	return strings.Join(names, ", ")
}

// seriesCall compiles f(x, ...).field of a series function.
func (c *compiler) seriesCall(def window.AggregateFunc, call *Call) (rowFn, error) {
	usage := call.Name + "(x, confidence, n)." + strings.Join(def.Fields, " or .")
	if call.Field == "" {
		return nil, c.errorf(call.P, "%s returns a record: use %s", call.Name, usage)
	}
	j := slices.Index(def.Fields, call.Field)
	if j < 0 {
		return nil, c.errorf(call.P, "%s has no field %q: use %s", call.Name, call.Field, usage)
	}
	switch k := c.q.GroupBy.Window.Spec.Kind; k {
	case window.Hopping, window.Sliding:
		return nil, c.errorf(call.P, "%s keeps a history across windows and needs windows that do not overlap: use TUMBLING, SESSION or COUNTWINDOW, not %s", call.Name, k)
	}
	if call.Star || len(call.Args) != 1+def.Params {
		n := len(call.Args)
		if call.Star {
			n = 1
		}
		return nil, c.errorf(call.P, "%s takes %d arguments, got %d: use %s", call.Name, 1+def.Params, n, usage)
	}
	i, err := c.aggregate(def, call)
	if err != nil {
		return nil, err
	}
	return func(r *window.Row) window.Value { return r.Records[i][j] }, nil
}

// fleetName resolves outlier, outlier_score and outlier_peers in queries with OUTLIERS.
func (c *compiler) fleetName(id *Ident) rowFn {
	if c.q.Outliers == nil || len(id.Parts) != 1 {
		return nil
	}
	switch strings.ToLower(id.Parts[0]) {
	case "outlier":
		return func(r *window.Row) window.Value { return r.Fleet.Outlier }
	case "outlier_score":
		return func(r *window.Row) window.Value { return r.Fleet.Score }
	case "outlier_peers":
		return func(r *window.Row) window.Value { return window.NumberValue(float64(r.Fleet.Peers)) }
	}
	return nil
}

// outliers checks the OUTLIERS clause against the plan's columns and keys.
func (c *compiler) outliers(plan *window.Plan) (*window.Fleet, error) {
	o := c.q.Outliers
	if k := plan.Window.Kind; k != window.Tumbling && k != window.Hopping {
		return nil, c.errorf(o.Pos, "OUTLIERS compares the groups of each window and needs TUMBLING or HOPPING windows, not %s", k)
	}
	for i, it := range c.q.Select {
		if name := plan.Columns[i].Name; slices.Contains(window.FleetColumns, name) {
			return nil, c.errorf(it.Pos, "column %s is added by OUTLIERS; name this column otherwise (AS ...)", name)
		}
	}
	fl := &window.Fleet{Expect: anomaly.DefaultExpect}
	for _, id := range o.Fields {
		name := id.Name()
		i := slices.IndexFunc(plan.Columns, func(col window.Column) bool { return col.Name == name })
		if i < 0 {
			cols := make([]string, len(plan.Columns))
			for k, col := range plan.Columns {
				cols[k] = col.Name
			}
			return nil, c.errorf(id.P, "OUTLIERS(%s): not a SELECT column (have %s); name an aggregate with AS, like avg(temperature) AS t", name, strings.Join(cols, ", "))
		}
		if slices.Contains(fl.Fields, i) {
			return nil, c.errorf(id.P, "OUTLIERS: column %s appears twice", name)
		}
		e := c.q.Select[i].Expr
		if k := staticKind(e); k != window.KindNull && k != window.KindNumber {
			return nil, c.errorf(id.P, "OUTLIERS(%s): column %s is a %s (%s); OUTLIERS compares numbers, like avg(temperature)", name, name, k, e)
		}
		if usesFleet(e) {
			return nil, c.errorf(id.P, "OUTLIERS(%s): column %s uses the outlier verdict itself", name, name)
		}
		fl.Fields = append(fl.Fields, i)
	}
	for _, id := range o.By {
		f, err := c.field(id)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(c.keys, func(k field) bool { return k.name == f.name })
		if i < 0 {
			return nil, c.errorf(id.P, "OUTLIERS ... BY %s: peers are grouped by GROUP BY keys; add %s to GROUP BY", f.name, f.name)
		}
		if slices.Contains(fl.Peers, i) {
			return nil, c.errorf(id.P, "OUTLIERS ... BY: key %s appears twice", f.name)
		}
		fl.Peers = append(fl.Peers, i)
	}
	if len(fl.Peers) == len(c.keys) {
		pos := o.Pos
		if len(o.By) > 0 {
			pos = o.By[0].P
		}
		return nil, c.errorf(pos, "OUTLIERS: every group would be alone among its peers; group by a key (like device) that is not in BY")
	}
	if o.Expect != 0 {
		if err := anomaly.CheckExpect(o.Expect); err != nil {
			return nil, c.errorf(o.ExpectPos, "EXPECT: %v", err)
		}
		fl.Expect = o.Expect
	}
	return fl, nil
}

// numericAggregates are the built-in aggregates that always return numbers (or NULL).
var numericAggregates = map[string]bool{"count": true, "sum": true, "avg": true, "min": true, "max": true, "stddev": true, "percentile": true}

// staticKind is the kind a SELECT expression always has, or KindNull when it depends on the
// input (first, last, a payload field used as group key).
func staticKind(e Expr) window.Kind {
	switch e := e.(type) {
	case *Literal:
		return e.Value.Kind()
	case *Ident:
		switch strings.ToLower(e.Parts[0]) {
		case "device", "type":
			if len(e.Parts) == 1 {
				return window.KindString
			}
		case "tags":
			return window.KindString
		case "outlier":
			return window.KindBool
		case "outlier_score", "outlier_peers":
			return window.KindNumber
		}
	case *Call:
		switch {
		case e.Field == "score":
			return window.KindNumber
		case e.Field == "anomaly":
			return window.KindBool
		case e.Name == "window_start" || e.Name == "window_end":
			return window.KindTime
		case numericAggregates[e.Name]:
			return window.KindNumber
		}
		if _, ok := scalarFuncs[e.Name]; ok {
			return window.KindNumber
		}
	case *Unary:
		if e.Op == "NOT" {
			return window.KindBool
		}
		return window.KindNumber
	case *Binary:
		if p := e.prec(); p == precAdd || p == precMul {
			return window.KindNumber
		}
		return window.KindBool
	case *In, *IsNull:
		return window.KindBool
	}
	return window.KindNull
}

// usesFleet reports whether e refers to the outlier verdict.
func usesFleet(e Expr) bool {
	switch e := e.(type) {
	case *Ident:
		if len(e.Parts) == 1 {
			switch strings.ToLower(e.Parts[0]) {
			case "outlier", "outlier_score", "outlier_peers":
				return true
			}
		}
	case *Unary:
		return usesFleet(e.X)
	case *Binary:
		return usesFleet(e.L) || usesFleet(e.R)
	case *In:
		if usesFleet(e.X) {
			return true
		}
		return slices.ContainsFunc(e.List, usesFleet)
	case *IsNull:
		return usesFleet(e.X)
	case *Call:
		return slices.ContainsFunc(e.Args, usesFleet)
	}
	return false
}
