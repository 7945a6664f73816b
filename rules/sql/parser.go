package sql

import (
	"math"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

// MaxDepth bounds expression nesting, so that hostile input cannot exhaust
// the stack.
const MaxDepth = 200

// Parse parses a query. It checks syntax only; Compile also checks meaning.
// Errors are *ParseError.
func Parse(src string) (*Query, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{src: src, toks: toks}
	q, err := p.query()
	if err != nil {
		return nil, err
	}
	q.src = src
	return q, nil
}

type parser struct {
	src   string
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) advance() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) keyword(kw string) bool {
	if p.peek().is(tKeyword, kw) {
		p.i++
		return true
	}
	return false
}

func (p *parser) op(op string) bool {
	if p.peek().is(tOp, op) {
		p.i++
		return true
	}
	return false
}

// errExpected reports what was expected at the current token.
func (p *parser) errExpected(what string) error {
	t := p.peek()
	return errorAt(p.src, t.pos, "expected %s, found %s", what, t.describe())
}

func (p *parser) expectOp(op, context string) error {
	if !p.op(op) {
		return p.errExpected("'" + op + "' " + context)
	}
	return nil
}

func (p *parser) query() (*Query, error) {
	q := &Query{GroupBy: GroupBy{Pos: -1}}
	if !p.keyword("SELECT") {
		return nil, p.errExpected("SELECT")
	}
	if p.peek().is(tOp, "*") {
		return nil, errorAt(p.src, p.peek().pos, "SELECT * is not supported: name the columns and aggregates")
	}
	for {
		it, err := p.selectItem()
		if err != nil {
			return nil, err
		}
		q.Select = append(q.Select, it)
		if !p.op(",") {
			break
		}
	}
	if !p.keyword("FROM") {
		return nil, p.errExpected("',' or FROM after select item")
	}
	t := p.peek()
	if t.kind != tString {
		return nil, p.errExpected("a quoted topic filter after FROM, like 'devices/+/telemetry'")
	}
	p.advance()
	q.From = From{Topic: t.val, Pos: t.pos}
	if p.keyword("WHERE") {
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		q.Where = e
	}
	if t := p.peek(); t.is(tKeyword, "GROUP") {
		p.advance()
		q.GroupBy.Pos = t.pos
		if !p.keyword("BY") {
			return nil, p.errExpected("BY after GROUP")
		}
		if err := p.groupBy(&q.GroupBy); err != nil {
			return nil, err
		}
		if t := p.peek(); t.kind == tIdent && strings.EqualFold(t.val, "OUTLIERS") && p.toks[p.i+1].is(tOp, "(") {
			o, err := p.outliers()
			if err != nil {
				return nil, err
			}
			q.Outliers = o
		}
	}
	if p.keyword("HAVING") {
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		q.Having = e
	}
	p.op(";")
	if t := p.peek(); t.kind != tEOF {
		next := "end of query"
		switch {
		case q.Having != nil:
		case q.Outliers != nil:
			next = "EXPECT, HAVING or end of query"
		case q.GroupBy.Pos >= 0:
			next = "',', OUTLIERS, HAVING or end of query"
		case q.Where != nil:
			next = "GROUP BY, HAVING or end of query"
		default:
			next = "WHERE, GROUP BY, HAVING or end of query"
		}
		return nil, p.errExpected(next)
	}
	return q, nil
}

func (p *parser) selectItem() (SelectItem, error) {
	pos := p.peek().pos
	e, err := p.expr()
	if err != nil {
		return SelectItem{}, err
	}
	it := SelectItem{Expr: e, Pos: pos}
	if p.keyword("AS") {
		name, ok := p.name()
		if !ok {
			return it, p.errExpected("a column name after AS")
		}
		it.Alias = name
	} else if t := p.peek(); t.kind == tIdent || t.kind == tQIdent {
		it.Alias, _ = p.name()
	}
	return it, nil
}

// name reads an identifier or quoted identifier.
func (p *parser) name() (string, bool) {
	t := p.peek()
	if t.kind == tIdent || t.kind == tQIdent {
		p.advance()
		return t.val, true
	}
	return "", false
}

// windowFuncs maps window function names (upper case) to kinds.
var windowFuncs = map[string]window.WindowKind{
	"TUMBLING": window.Tumbling, "TUMBLINGWINDOW": window.Tumbling,
	"HOPPING": window.Hopping, "HOPPINGWINDOW": window.Hopping,
	"SLIDING": window.Sliding, "SLIDINGWINDOW": window.Sliding,
	"SESSION": window.Session, "SESSIONWINDOW": window.Session,
	"COUNTWINDOW": window.CountWindow,
}

const windowList = "TUMBLING(size), HOPPING(size, hop), SLIDING(size), SESSION(gap) or COUNTWINDOW(n)"

func (p *parser) groupBy(g *GroupBy) error {
	for {
		t := p.peek()
		if t.kind != tIdent && t.kind != tQIdent {
			return p.errExpected("a group key or a window function " + windowList)
		}
		if t.kind == tIdent && p.toks[p.i+1].is(tOp, "(") {
			kind, ok := windowFuncs[strings.ToUpper(t.val)]
			if !ok {
				return errorAt(p.src, t.pos, "expected a group key or a window function %s, found function '%s'", windowList, t.val)
			}
			if g.Window != nil {
				return errorAt(p.src, t.pos, "a query has one window; %s is already given", g.Window.Spec)
			}
			w, err := p.windowCall(kind)
			if err != nil {
				return err
			}
			g.Window = w
		} else {
			id, err := p.ident()
			if err != nil {
				return err
			}
			g.Keys = append(g.Keys, id)
		}
		if !p.op(",") {
			return nil
		}
	}
}

func (p *parser) windowCall(kind window.WindowKind) (*WindowCall, error) {
	t := p.advance() // name
	p.advance()      // (
	w := &WindowCall{Spec: window.WindowSpec{Kind: kind}, Pos: t.pos}
	switch kind {
	case window.Tumbling, window.Sliding:
		d, err := p.duration("window size")
		if err != nil {
			return nil, err
		}
		w.Spec.Size = d
		if err := p.expectOp(")", "after window size"); err != nil {
			return nil, err
		}
	case window.Hopping:
		d, err := p.duration("window size")
		if err != nil {
			return nil, err
		}
		w.Spec.Size = d
		if err := p.expectOp(",", "after window size (HOPPING takes size and hop)"); err != nil {
			return nil, err
		}
		if w.Spec.Hop, err = p.duration("hop"); err != nil {
			return nil, err
		}
		if err := p.expectOp(")", "after hop"); err != nil {
			return nil, err
		}
	case window.Session:
		d, err := p.duration("session gap")
		if err != nil {
			return nil, err
		}
		w.Spec.Gap = d
		if err := p.expectOp(")", "after session gap"); err != nil {
			return nil, err
		}
	case window.CountWindow:
		n := p.peek()
		if n.kind != tNumber || n.num != math.Trunc(n.num) || n.num < 1 || n.num > math.MaxInt32 {
			return nil, p.errExpected("a whole number of events between 1 and 2147483647")
		}
		p.advance()
		w.Spec.Count = int(n.num)
		if err := p.expectOp(")", "after count"); err != nil {
			return nil, err
		}
	}
	if err := w.Spec.Validate(); err != nil {
		return nil, errorAt(p.src, t.pos, "%s", strings.TrimPrefix(err.Error(), "window "))
	}
	if w.Spec.Size > window.MaxDuration || w.Spec.Hop > window.MaxDuration || w.Spec.Gap > window.MaxDuration {
		return nil, errorAt(p.src, t.pos, "window durations must be at most %s", window.FormatDuration(window.MaxDuration))
	}
	return w, nil
}

func (p *parser) duration(what string) (time.Duration, error) {
	t := p.peek()
	if t.kind != tDuration {
		return 0, p.errExpected(what + " as a duration like 1m, 30s or 500ms")
	}
	if t.dur <= 0 {
		return 0, errorAt(p.src, t.pos, "%s must be positive, got %s", what, t.val)
	}
	p.advance()
	return t.dur, nil
}

// ident reads a dotted name: name {. name}. After a dot, keywords are names.
func (p *parser) ident() (*Ident, error) {
	t := p.peek()
	name, ok := p.name()
	if !ok {
		return nil, p.errExpected("a name")
	}
	id := &Ident{Parts: []string{name}, P: t.pos}
	for p.peek().is(tOp, ".") {
		p.advance()
		n := p.peek()
		switch n.kind {
		case tIdent, tQIdent:
		case tKeyword:
			n.val = p.src[n.pos : n.pos+len(n.val)] // as written
		default:
			return nil, p.errExpected("a name after '.'")
		}
		p.advance()
		id.Parts = append(id.Parts, n.val)
	}
	return id, nil
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxDepth {
		return errorAt(p.src, p.peek().pos, "expression nested too deeply (more than %d levels)", MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

// expr parses an expression:
//
//	or  := and {OR and}
//	and := not {AND not}
//	not := NOT not | cmp
//	cmp := add [op add | [NOT] IN (list) | IS [NOT] NULL]
//	add := mul {(+|-) mul}
//	mul := unary {(*|/|%) unary}
//	unary := (-|+) unary | primary
func (p *parser) expr() (Expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	return p.or()
}

func (p *parser) or() (Expr, error) {
	l, err := p.and()
	for err == nil && p.keyword("OR") {
		var r Expr
		if r, err = p.and(); err == nil {
			l = &Binary{Op: "OR", L: l, R: r}
		}
	}
	return l, err
}

func (p *parser) and() (Expr, error) {
	l, err := p.not()
	for err == nil && p.keyword("AND") {
		var r Expr
		if r, err = p.not(); err == nil {
			l = &Binary{Op: "AND", L: l, R: r}
		}
	}
	return l, err
}

func (p *parser) not() (Expr, error) {
	if t := p.peek(); t.is(tKeyword, "NOT") {
		p.advance()
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		return &Unary{Op: "NOT", X: x, P: t.pos}, nil
	}
	return p.cmp()
}

func (p *parser) cmp() (Expr, error) {
	l, err := p.add()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == tOp && binaryPrec[t.val] == precCmp:
		p.advance()
		r, err := p.add()
		if err != nil {
			return nil, err
		}
		return &Binary{Op: t.val, L: l, R: r}, nil
	case t.is(tKeyword, "IS"):
		p.advance()
		not := p.keyword("NOT")
		if !p.keyword("NULL") {
			return nil, p.errExpected("NULL after IS")
		}
		return &IsNull{X: l, Not: not}, nil
	case t.is(tKeyword, "IN"), t.is(tKeyword, "NOT") && p.toks[p.i+1].is(tKeyword, "IN"):
		not := p.keyword("NOT")
		p.advance() // IN
		if err := p.expectOp("(", "after IN"); err != nil {
			return nil, err
		}
		in := &In{X: l, Not: not}
		for {
			x, err := p.expr()
			if err != nil {
				return nil, err
			}
			in.List = append(in.List, x)
			if !p.op(",") {
				break
			}
		}
		if err := p.expectOp(")", "after IN list"); err != nil {
			return nil, err
		}
		return in, nil
	}
	return l, nil
}

func (p *parser) add() (Expr, error) {
	l, err := p.mul()
	for err == nil && (p.peek().is(tOp, "+") || p.peek().is(tOp, "-")) {
		op := p.advance().val
		var r Expr
		if r, err = p.mul(); err == nil {
			l = &Binary{Op: op, L: l, R: r}
		}
	}
	return l, err
}

func (p *parser) mul() (Expr, error) {
	l, err := p.unary()
	for err == nil && (p.peek().is(tOp, "*") || p.peek().is(tOp, "/") || p.peek().is(tOp, "%")) {
		op := p.advance().val
		var r Expr
		if r, err = p.unary(); err == nil {
			l = &Binary{Op: op, L: l, R: r}
		}
	}
	return l, err
}

func (p *parser) unary() (Expr, error) {
	if t := p.peek(); t.is(tOp, "-") || t.is(tOp, "+") {
		p.advance()
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &Unary{Op: t.val, X: x, P: t.pos}, nil
	}
	return p.primary()
}

func (p *parser) primary() (Expr, error) {
	t := p.peek()
	switch t.kind {
	case tNumber:
		p.advance()
		return &Literal{Value: window.NumberValue(t.num), P: t.pos}, nil
	case tString:
		p.advance()
		return &Literal{Value: window.StringValue(t.val), P: t.pos}, nil
	case tDuration:
		return nil, errorAt(p.src, t.pos, "a duration (%s) is only allowed in a window function in GROUP BY", t.val)
	case tKeyword:
		switch t.val {
		case "TRUE", "FALSE":
			p.advance()
			return &Literal{Value: window.BoolValue(t.val == "TRUE"), P: t.pos}, nil
		case "NULL":
			p.advance()
			return &Literal{P: t.pos}, nil
		}
	case tOp:
		if t.val == "(" {
			p.advance()
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			if err := p.expectOp(")", "to close '('"); err != nil {
				return nil, err
			}
			return e, nil
		}
	case tIdent:
		if p.toks[p.i+1].is(tOp, "(") {
			c, err := p.call()
			if err != nil || !p.peek().is(tOp, ".") {
				return c, err
			}
			p.advance() // .
			n := p.peek()
			if n.kind != tIdent && n.kind != tQIdent {
				return nil, p.errExpected("a field name after '.', like .score")
			}
			p.advance()
			c.(*Call).Field = strings.ToLower(n.val)
			return c, nil
		}
		return p.ident()
	case tQIdent:
		return p.ident()
	}
	return nil, p.errExpected("an expression")
}

func (p *parser) call() (Expr, error) {
	t := p.advance() // name
	p.advance()      // (
	c := &Call{Name: strings.ToLower(t.val), P: t.pos}
	if p.op("*") {
		c.Star = true
		if err := p.expectOp(")", "after '*'"); err != nil {
			return nil, err
		}
		return c, nil
	}
	if p.op(")") {
		return c, nil
	}
	for {
		if err := p.enter(); err != nil {
			return nil, err
		}
		a, err := p.expr()
		p.leave()
		if err != nil {
			return nil, err
		}
		c.Args = append(c.Args, a)
		if !p.op(",") {
			break
		}
	}
	if err := p.expectOp(")", "after arguments of "+t.val); err != nil {
		return nil, err
	}
	return c, nil
}

// outliers parses OUTLIERS(column {, column}) [BY key {, key}] [EXPECT share].
func (p *parser) outliers() (*Outliers, error) {
	t := p.advance() // OUTLIERS
	p.advance()      // (
	o := &Outliers{Pos: t.pos}
	for {
		id, err := p.ident()
		if err != nil {
			return nil, p.errExpected("a SELECT column name in OUTLIERS(...)")
		}
		o.Fields = append(o.Fields, id)
		if !p.op(",") {
			break
		}
	}
	if err := p.expectOp(")", "after OUTLIERS columns"); err != nil {
		return nil, err
	}
	if p.keyword("BY") {
		for {
			id, err := p.ident()
			if err != nil {
				return nil, p.errExpected("a GROUP BY key after OUTLIERS(...) BY")
			}
			o.By = append(o.By, id)
			if !p.op(",") {
				break
			}
		}
	}
	if t := p.peek(); t.kind == tIdent && strings.EqualFold(t.val, "EXPECT") {
		p.advance()
		n := p.peek()
		if n.kind != tNumber {
			return nil, p.errExpected("the expected share of outliers after EXPECT, like 0.01")
		}
		p.advance()
		if n.num == 0 {
			return nil, errorAt(p.src, n.pos, "EXPECT must be above 0 and at most 0.25, got 0")
		}
		o.Expect, o.ExpectPos = n.num, n.pos
	}
	return o, nil
}
