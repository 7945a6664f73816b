package window_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

func TestWindowSpec(t *testing.T) {
	cases := []struct {
		spec window.WindowSpec
		str  string
		err  string
	}{
		{window.WindowSpec{Kind: window.Tumbling, Size: time.Minute}, "TUMBLING(1m)", ""},
		{window.WindowSpec{Kind: window.Sliding, Size: 90 * time.Second}, "SLIDING(1m30s)", ""},
		{window.WindowSpec{Kind: window.Hopping, Size: 36 * time.Hour, Hop: time.Hour}, "HOPPING(1d12h, 1h)", ""},
		{window.WindowSpec{Kind: window.Session, Gap: 1500 * time.Microsecond}, "SESSION(1ms500us)", ""},
		{window.WindowSpec{Kind: window.CountWindow, Count: 5}, "COUNTWINDOW(5)", ""},
		{window.WindowSpec{Kind: window.Tumbling}, "TUMBLING(0s)", "size must be positive"},
		{window.WindowSpec{Kind: window.Hopping, Hop: time.Second}, "HOPPING(0s, 1s)", "size must be positive"},
		{window.WindowSpec{Kind: window.Hopping, Size: time.Second, Hop: time.Minute}, "HOPPING(1s, 1m)", "hop must be positive and at most the size"},
		{window.WindowSpec{Kind: window.Hopping, Size: 1001, Hop: 1}, "HOPPING(1us1ns, 1ns)", "size/hop must be at most 1000"},
		{window.WindowSpec{Kind: window.Session}, "SESSION(0s)", "gap must be positive"},
		{window.WindowSpec{Kind: window.CountWindow}, "COUNTWINDOW(0)", "count must be positive"},
		{window.WindowSpec{}, "WindowKind(0)", "unknown kind"},
	}
	for _, c := range cases {
		if got := c.spec.String(); got != c.str {
			t.Errorf("String: got %s, want %s", got, c.str)
		}
		err := c.spec.Validate()
		if (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: Validate: got %v, want %q", c.str, err, c.err)
		}
	}
	if got := window.FormatDuration(-time.Minute); got != "-1m" {
		t.Errorf("FormatDuration: got %s", got)
	}
}

func TestPlanValidate(t *testing.T) {
	good := func() *window.Plan { return plan(t, sumCols+"GROUP BY device, TUMBLING(1m)") }
	cases := []struct {
		name   string
		change func(p *window.Plan)
		err    string
	}{
		{"no rule", func(p *window.Plan) { p.Rule = "" }, "Rule is empty"},
		{"bad window", func(p *window.Plan) { p.Window.Size = 0 }, "size must be positive"},
		{"key without eval", func(p *window.Plan) { p.GroupBy[0].Eval = nil }, "needs Name and Eval"},
		{"duplicate key", func(p *window.Plan) { p.GroupBy = append(p.GroupBy, p.GroupBy[0]) }, "duplicate group key"},
		{"aggregate without New", func(p *window.Plan) { p.Aggregates[0].New = nil }, "needs New"},
		{"no columns", func(p *window.Plan) { p.Columns = nil }, "no output columns"},
		{"duplicate column", func(p *window.Plan) { p.Columns = append(p.Columns, p.Columns[0]) }, "duplicate column"},
		{"column without eval", func(p *window.Plan) { p.Columns[0].Eval = nil }, "needs Name and Eval"},
	}
	for _, c := range cases {
		p := good()
		c.change(p)
		if _, err := window.New(p, window.Options{}); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.err)
		}
	}
	if _, err := window.New(nil, window.Options{}); err == nil {
		t.Error("nil plan: no error")
	}
	if _, err := window.New(good(), window.Options{Lateness: -time.Second}); err == nil || !strings.Contains(err.Error(), "Lateness") {
		t.Errorf("negative lateness: got %v", err)
	}
	p := good()
	p.Window.Size = window.MaxDuration + 1
	if _, err := window.New(p, window.Options{}); err == nil {
		t.Error("huge window: no error")
	}
	e, err := window.New(good(), window.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Plan().Rule != "r1" || !e.Watermark().IsZero() {
		t.Error("Plan or Watermark before events")
	}
	e.Process(ev("a", "5s", 1))
	if !e.Watermark().Equal(at("5s")) {
		t.Errorf("Watermark: got %v", e.Watermark())
	}
	if window.Late.String() != "late" || window.Disposition(9).String() != "disposition(9)" || window.Session.String() != "SESSION" {
		t.Error("String methods")
	}
}
