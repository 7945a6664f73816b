package sql

import (
	"cmp"
	"math"
	"strings"

	"github.com/tributary-iot/tributary/streams/window"
)

// Expression semantics, SQL's three-valued logic over dynamically typed
// payloads:
//
//   - A missing field is NULL. Comparisons and arithmetic with NULL give
//     NULL; so do comparisons between different kinds ('5' = 5) and
//     arithmetic on anything but numbers. Division or modulo by zero is
//     NULL.
//   - AND, OR and NOT follow Kleene logic: FALSE AND NULL is FALSE, TRUE OR
//     NULL is TRUE, NOT NULL is NULL; operands that are not booleans count
//     as NULL.
//   - WHERE keeps an event and HAVING a result only when the condition is
//     TRUE. So an event that lacks a field used in a comparison does not
//     match, unless another OR branch is TRUE or IS NULL asks for it.
//   - x IN (a, b) is x = a OR x = b; x IS NULL is never NULL.
//   - Strings compare byte-wise, booleans FALSE < TRUE, times in time order.

type logic uint8

const (
	lFalse logic = iota
	lTrue
	lNull
)

func truth(v window.Value) logic {
	if b, ok := v.Bool(); ok {
		if b {
			return lTrue
		}
		return lFalse
	}
	return lNull
}

func logicValue(l logic) window.Value {
	switch l {
	case lTrue:
		return window.BoolValue(true)
	case lFalse:
		return window.BoolValue(false)
	}
	return window.Null
}

func isTrue(v window.Value) bool { b, ok := v.Bool(); return ok && b }

// compareValues returns the order of a and b and whether they are
// comparable: both non-NULL, of one kind and not NaN.
func compareValues(a, b window.Value) (int, bool) {
	if a.Kind() != b.Kind() {
		return 0, false
	}
	switch a.Kind() {
	case window.KindNumber:
		x, _ := a.Number()
		y, _ := b.Number()
		if x != x || y != y {
			return 0, false
		}
		return cmp.Compare(x, y), true
	case window.KindString:
		x, _ := a.Str()
		y, _ := b.Str()
		return strings.Compare(x, y), true
	case window.KindBool:
		x, _ := a.Bool()
		y, _ := b.Bool()
		return cmp.Compare(b2i(x), b2i(y)), true
	case window.KindTime:
		x, _ := a.Time()
		y, _ := b.Time()
		return x.Compare(y), true
	}
	return 0, false
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// comparison returns the function for a comparison operator.
func comparison(op string) func(a, b window.Value) window.Value {
	var test func(int) bool
	switch op {
	case "=":
		test = func(c int) bool { return c == 0 }
	case "!=":
		test = func(c int) bool { return c != 0 }
	case "<":
		test = func(c int) bool { return c < 0 }
	case "<=":
		test = func(c int) bool { return c <= 0 }
	case ">":
		test = func(c int) bool { return c > 0 }
	default: // ">="
		test = func(c int) bool { return c >= 0 }
	}
	return func(a, b window.Value) window.Value {
		c, ok := compareValues(a, b)
		if !ok {
			if a.Kind() == window.KindNumber && b.Kind() == window.KindNumber {
				return window.BoolValue(op == "!=") // NaN: IEEE semantics
			}
			return window.Null
		}
		return window.BoolValue(test(c))
	}
}

// arithmetic returns the function for +, -, *, / or %.
func arithmetic(op string) func(a, b window.Value) window.Value {
	var f func(x, y float64) (float64, bool)
	switch op {
	case "+":
		f = func(x, y float64) (float64, bool) { return x + y, true }
	case "-":
		f = func(x, y float64) (float64, bool) { return x - y, true }
	case "*":
		f = func(x, y float64) (float64, bool) { return x * y, true }
	case "/":
		f = func(x, y float64) (float64, bool) { return x / y, y != 0 }
	default: // "%"
		f = func(x, y float64) (float64, bool) { return math.Mod(x, y), y != 0 }
	}
	return func(a, b window.Value) window.Value {
		x, ok1 := a.Number()
		y, ok2 := b.Number()
		if !ok1 || !ok2 {
			return window.Null
		}
		r, ok := f(x, y)
		if !ok {
			return window.Null
		}
		return window.NumberValue(r)
	}
}

// scalarFunc is a function of values, such as abs(x).
type scalarFunc struct {
	minArgs, maxArgs int
	fn               func(args []window.Value) window.Value
	doc              string
}

// scalarFuncs are the built-in non-aggregate functions. Aggregates live in
// the window package's registry (window.RegisterAggregate).
var scalarFuncs = map[string]scalarFunc{
	"abs":   {1, 1, num1(math.Abs), "absolute value"},
	"floor": {1, 1, num1(math.Floor), "largest integer not above x"},
	"ceil":  {1, 1, num1(math.Ceil), "smallest integer not below x"},
	"sqrt":  {1, 1, num1(math.Sqrt), "square root"},
	"round": {1, 2, round, "round(x) to an integer, round(x, n) to n decimals, halves away from zero"},
}

func num1(f func(float64) float64) func([]window.Value) window.Value {
	return func(args []window.Value) window.Value {
		x, ok := args[0].Number()
		if !ok {
			return window.Null
		}
		return window.NumberValue(f(x))
	}
}

func round(args []window.Value) window.Value {
	x, ok := args[0].Number()
	if !ok {
		return window.Null
	}
	if len(args) == 1 {
		return window.NumberValue(math.Round(x))
	}
	n, ok := args[1].Number()
	if !ok || n != math.Trunc(n) || n < -15 || n > 15 {
		return window.Null
	}
	p := math.Pow(10, n)
	return window.NumberValue(math.Round(x*p) / p)
}
