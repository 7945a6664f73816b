package sql

import (
	"strings"

	"github.com/tributary-iot/tributary/streams/window"
)

// Query is a parsed rule:
//
//	SELECT items FROM 'topic filter' [WHERE cond] GROUP BY keys, window [HAVING cond]
type Query struct {
	Select  []SelectItem
	From    From
	Where   Expr // nil if absent
	GroupBy GroupBy
	// Outliers is the OUTLIERS clause after GROUP BY; nil if absent.
	Outliers *Outliers
	Having   Expr // nil if absent

	src string // the text, for error positions
}

// SelectItem is one output column: an expression and its alias (empty when
// none was written).
type SelectItem struct {
	Expr  Expr
	Alias string
	Pos   int
}

// From is the rule's input: an MQTT-style topic filter over device messages
// ("devices/+/telemetry") or another rule's results ("rules/<name>").
type From struct {
	Topic string
	Pos   int
}

// GroupBy is the GROUP BY clause: keys and exactly one window.
type GroupBy struct {
	Keys   []*Ident
	Window *WindowCall // nil if absent (a semantic error)
	Pos    int         // of GROUP, or -1 if absent
}

// Outliers is the fleet-outlier clause: OUTLIERS(column {, column}) [BY key {, key}]
// [EXPECT share]. Fields name SELECT columns, By GROUP BY keys.
type Outliers struct {
	Fields    []*Ident
	By        []*Ident
	Expect    float64 // 0 when not given
	ExpectPos int
	Pos       int
}

// String is the clause in canonical form.
func (o *Outliers) String() string {
	var b strings.Builder
	b.WriteString("OUTLIERS(")
	for i, f := range o.Fields {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(f.String())
	}
	b.WriteString(")")
	for i, k := range o.By {
		if i == 0 {
			b.WriteString(" BY ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(k.String())
	}
	if o.Expect != 0 {
		b.WriteString(" EXPECT ")
		b.WriteString(window.NumberValue(o.Expect).String())
	}
	return b.String()
}

// WindowCall is the window function in GROUP BY, e.g. TUMBLING(1m).
type WindowCall struct {
	Spec window.WindowSpec
	Pos  int
}

// Expr is an expression node.
type Expr interface {
	// Pos is the byte offset of the expression's first token.
	Pos() int
	// String is the expression in canonical form: parsing it gives an equal
	// tree.
	String() string
	prec() int
}

// Precedence levels, loosest first.
const (
	precOr = iota + 1
	precAnd
	precNot
	precCmp
	precAdd
	precMul
	precUnary
	precPrimary
)

// Literal is a number, string, TRUE, FALSE or NULL.
type Literal struct {
	Value window.Value
	P     int
}

// Ident is a column reference: device, type, tags.site, temperature, a.b.
type Ident struct {
	Parts []string
	P     int
}

// Unary is -x, +x or NOT x.
type Unary struct {
	Op string // "-", "+" or "NOT"
	X  Expr
	P  int
}

// Binary is x op y for OR, AND, =, !=, <, <=, >, >=, +, -, *, /, %.
type Binary struct {
	Op   string
	L, R Expr
}

// In is x [NOT] IN (list).
type In struct {
	X    Expr
	List []Expr
	Not  bool
}

// IsNull is x IS [NOT] NULL.
type IsNull struct {
	X   Expr
	Not bool
}

// Call is a function call; Name is lower case. Star is f(*). Field selects a field of a
// function that returns a record, e.g. spike(t, 0.99, 60).score; it is lower case.
type Call struct {
	Name  string
	Args  []Expr
	Star  bool
	Field string
	P     int
}

func (e *Literal) Pos() int { return e.P }
func (e *Ident) Pos() int   { return e.P }
func (e *Unary) Pos() int   { return e.P }
func (e *Binary) Pos() int  { return e.L.Pos() }
func (e *In) Pos() int      { return e.X.Pos() }
func (e *IsNull) Pos() int  { return e.X.Pos() }
func (e *Call) Pos() int    { return e.P }

func (e *Literal) prec() int { return precPrimary }
func (e *Ident) prec() int   { return precPrimary }
func (e *Call) prec() int    { return precPrimary }
func (e *In) prec() int      { return precCmp }
func (e *IsNull) prec() int  { return precCmp }
func (e *Unary) prec() int {
	if e.Op == "NOT" {
		return precNot
	}
	return precUnary
}
func (e *Binary) prec() int { return binaryPrec[e.Op] }

var binaryPrec = map[string]int{
	"OR": precOr, "AND": precAnd,
	"=": precCmp, "!=": precCmp, "<": precCmp, "<=": precCmp, ">": precCmp, ">=": precCmp,
	"+": precAdd, "-": precAdd, "*": precMul, "/": precMul, "%": precMul,
}

// Name is the dotted name as written, e.g. "tags.site".
func (e *Ident) Name() string { return strings.Join(e.Parts, ".") }

func (e *Literal) String() string {
	if s, ok := e.Value.Str(); ok {
		return quoteString(s)
	}
	if e.Value.Kind() == window.KindNumber {
		return e.Value.String()
	}
	if b, ok := e.Value.Bool(); ok {
		if b {
			return "TRUE"
		}
		return "FALSE"
	}
	return "NULL"
}

func (e *Ident) String() string {
	parts := make([]string, len(e.Parts))
	for i, p := range e.Parts {
		// After a dot any word is a name, keywords included.
		parts[i] = quoteIdent(p, i > 0)
	}
	return strings.Join(parts, ".")
}

func (e *Unary) String() string {
	x := wrap(e.X, e.prec(), false)
	if e.Op == "NOT" {
		return "NOT " + x
	}
	// Keep "- -1" from reading as a comment "--1".
	if strings.HasPrefix(x, "-") || strings.HasPrefix(x, "+") {
		return e.Op + " " + x
	}
	return e.Op + x
}

func (e *Binary) String() string {
	p := e.prec()
	// Comparisons do not chain; the others are left-associative.
	return wrap(e.L, p, p == precCmp) + " " + e.Op + " " + wrap(e.R, p, true)
}

func (e *In) String() string {
	items := make([]string, len(e.List))
	for i, x := range e.List {
		items[i] = x.String()
	}
	op := " IN ("
	if e.Not {
		op = " NOT IN ("
	}
	return wrap(e.X, precCmp, true) + op + strings.Join(items, ", ") + ")"
}

func (e *IsNull) String() string {
	if e.Not {
		return wrap(e.X, precCmp, true) + " IS NOT NULL"
	}
	return wrap(e.X, precCmp, true) + " IS NULL"
}

func (e *Call) String() string {
	field := ""
	if e.Field != "" {
		field = "." + quoteIdent(e.Field, true)
	}
	if e.Star {
		return e.Name + "(*)" + field
	}
	args := make([]string, len(e.Args))
	for i, a := range e.Args {
		args[i] = a.String()
	}
	return quoteIdent(e.Name, false) + "(" + strings.Join(args, ", ") + ")" + field
}

// wrap formats x as an operand of an operator of precedence p, in
// parentheses when needed; strict also wraps operands of equal precedence.
func wrap(x Expr, p int, strict bool) string {
	if xp := x.prec(); xp < p || (strict && xp == p) {
		return "(" + x.String() + ")"
	}
	return x.String()
}

func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// quoteIdent returns name as written in a query: bare when it lexes as an
// identifier (and, unless afterDot, is not a keyword), else in double quotes.
func quoteIdent(name string, afterDot bool) string {
	bare := name != ""
	for i, r := range name {
		if (i == 0 && !isIdentStart(r)) || !isIdentPart(r) {
			bare = false
			break
		}
	}
	if bare && (afterDot || !keywords[strings.ToUpper(name)]) {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// String returns the query in canonical form: keywords in upper case, one
// space between tokens, minimal parentheses. Parsing it gives an equal query.
func (q *Query) String() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, it := range q.Select {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(it.Expr.String())
		if it.Alias != "" {
			b.WriteString(" AS ")
			b.WriteString(quoteIdent(it.Alias, false))
		}
	}
	b.WriteString(" FROM ")
	b.WriteString(quoteString(q.From.Topic))
	if q.Where != nil {
		b.WriteString(" WHERE ")
		b.WriteString(q.Where.String())
	}
	if len(q.GroupBy.Keys) > 0 || q.GroupBy.Window != nil {
		b.WriteString(" GROUP BY ")
		for i, k := range q.GroupBy.Keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(k.String())
		}
		if q.GroupBy.Window != nil {
			if len(q.GroupBy.Keys) > 0 {
				b.WriteString(", ")
			}
			b.WriteString(q.GroupBy.Window.Spec.String())
		}
	}
	if q.Outliers != nil {
		b.WriteString(" ")
		b.WriteString(q.Outliers.String())
	}
	if q.Having != nil {
		b.WriteString(" HAVING ")
		b.WriteString(q.Having.String())
	}
	return b.String()
}
