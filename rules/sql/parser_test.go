package sql

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

const issueExample = `SELECT device, avg(temperature) AS avg_t, max(temperature) AS max_t, count(*) AS n
FROM 'devices/+/telemetry'
WHERE type = 'thermostat' AND temperature > -50
GROUP BY device, TUMBLING(1m)
HAVING avg_t > 28`

func TestParseCanonical(t *testing.T) {
	cases := []struct{ in, want string }{
		{issueExample, "SELECT device, avg(temperature) AS avg_t, max(temperature) AS max_t, count(*) AS n FROM 'devices/+/telemetry' " +
			"WHERE type = 'thermostat' AND temperature > -50 GROUP BY device, TUMBLING(1m) HAVING avg_t > 28"},
		{"select Device, COUNT(*) n from 'devices/#' group by device, tumblingwindow(60s);",
			"SELECT Device, count(*) AS n FROM 'devices/#' GROUP BY device, TUMBLING(1m)"},
		{"SELECT count(*) AS n FROM 'rules/hot' GROUP BY HOPPING(5m, 1m)",
			"SELECT count(*) AS n FROM 'rules/hot' GROUP BY HOPPING(5m, 1m)"},
		{"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY tags.site, SLIDING(1h30m)",
			"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY tags.site, SLIDING(1h30m)"},
		{"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY SESSION(500ms), device",
			"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, SESSION(500ms)"},
		{"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY COUNTWINDOW(10)",
			"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY COUNTWINDOW(10)"},
		{"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1d), TYPE",
			"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TYPE, TUMBLING(1d)"},
		{"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1.5h)",
			"SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1h30m)"},
		// Precedence and parentheses.
		{"SELECT count(*) AS n FROM 'd' WHERE a OR b AND NOT c = 1 GROUP BY TUMBLING(1s)",
			"SELECT count(*) AS n FROM 'd' WHERE a OR b AND NOT c = 1 GROUP BY TUMBLING(1s)"},
		{"SELECT count(*) AS n FROM 'd' WHERE (a OR b) AND (c) GROUP BY TUMBLING(1s)",
			"SELECT count(*) AS n FROM 'd' WHERE (a OR b) AND c GROUP BY TUMBLING(1s)"},
		{"SELECT (1 + 2) * 3 - (4 - 5) AS x, 1 - 2 - 3 AS y, 1 - (2 - 3) AS z, - -1 AS w, -(1+2) AS v FROM 'd' GROUP BY TUMBLING(1s)",
			"SELECT (1 + 2) * 3 - (4 - 5) AS x, 1 - 2 - 3 AS y, 1 - (2 - 3) AS z, - -1 AS w, -(1 + 2) AS v FROM 'd' GROUP BY TUMBLING(1s)"},
		{"SELECT count(*) AS n FROM 'd' WHERE a <> 1 AND b == 2 AND c != 3 GROUP BY TUMBLING(1s)",
			"SELECT count(*) AS n FROM 'd' WHERE a != 1 AND b = 2 AND c != 3 GROUP BY TUMBLING(1s)"},
		{"SELECT count(*) AS n FROM 'd' WHERE x IN (1, 'a', TRUE) AND y NOT IN (NULL) AND z IS NOT NULL AND w IS NULL GROUP BY TUMBLING(1s)",
			"SELECT count(*) AS n FROM 'd' WHERE x IN (1, 'a', TRUE) AND y NOT IN (NULL) AND z IS NOT NULL AND w IS NULL GROUP BY TUMBLING(1s)"},
		{"SELECT count(*) AS n FROM 'd' WHERE NOT NOT (a = b) = FALSE GROUP BY TUMBLING(1s)",
			"SELECT count(*) AS n FROM 'd' WHERE NOT NOT (a = b) = FALSE GROUP BY TUMBLING(1s)"},
		// Names: dotted, quoted, keywords after a dot, strings with quotes.
		{`SELECT "select" AS "from", payload.from, a.b.c, "odd name" AS x FROM 'it''s' GROUP BY "select", payload.from, a.b.c, "odd name", TUMBLING(1s)`,
			`SELECT "select" AS "from", payload.from, a.b.c, "odd name" AS x FROM 'it''s' GROUP BY "select", payload.from, a.b.c, "odd name", TUMBLING(1s)`},
		{"SELECT percentile(t, 99.5) AS p, round(avg(t), 2) AS r -- trailing comment\nFROM /* block */ 'd' GROUP BY TUMBLING(1s)",
			"SELECT percentile(t, 99.5) AS p, round(avg(t), 2) AS r FROM 'd' GROUP BY TUMBLING(1s)"},
		{"SELECT 1e3 AS a, .5 AS b, 2.50 AS c FROM 'd' GROUP BY TUMBLING(1s)",
			"SELECT 1000 AS a, 0.5 AS b, 2.5 AS c FROM 'd' GROUP BY TUMBLING(1s)"},
		{"SELECT count(*) AS n FROM 'd' GROUP BY TUMBLING(1500us)",
			"SELECT count(*) AS n FROM 'd' GROUP BY TUMBLING(1ms500us)"},
	}
	for _, c := range cases {
		q, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got := q.String(); got != c.want {
			t.Errorf("Parse(%q).String():\ngot  %s\nwant %s", c.in, got, c.want)
			continue
		}
		q2, err := Parse(c.want)
		if err != nil || q2.String() != c.want {
			t.Errorf("canonical form does not round-trip: %q: %v", c.want, err)
		}
	}
}

func TestParseTree(t *testing.T) {
	q, err := Parse(issueExample)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Select) != 4 || q.Select[1].Alias != "avg_t" || q.Select[3].Expr.String() != "count(*)" {
		t.Fatalf("select: got %+v", q.Select)
	}
	if c, ok := q.Select[1].Expr.(*Call); !ok || c.Name != "avg" || len(c.Args) != 1 || c.P != 15 {
		t.Fatalf("select[1]: got %#v", q.Select[1].Expr)
	}
	if q.From.Topic != "devices/+/telemetry" {
		t.Fatalf("from: got %q", q.From.Topic)
	}
	and, ok := q.Where.(*Binary)
	if !ok || and.Op != "AND" {
		t.Fatalf("where: got %#v", q.Where)
	}
	if gt := and.R.(*Binary); gt.Op != ">" || gt.R.(*Unary).Op != "-" {
		t.Fatalf("where right: got %s", and.R)
	}
	if len(q.GroupBy.Keys) != 1 || q.GroupBy.Keys[0].Name() != "device" {
		t.Fatalf("group keys: got %v", q.GroupBy.Keys)
	}
	if w := q.GroupBy.Window.Spec; w != (window.WindowSpec{Kind: window.Tumbling, Size: time.Minute}) {
		t.Fatalf("window: got %+v", w)
	}
	if q.Having.String() != "avg_t > 28" {
		t.Fatalf("having: got %s", q.Having)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "line 1, col 1: expected SELECT, found end of input"},
		{"SELEC x", "line 1, col 1: expected SELECT, found 'SELEC'"},
		{"SELECT device, avg(t) AS a FROM 'd' GROUP BY device, TUMBLING(1m FROM",
			"line 1, col 66: expected ')' after window size, found 'FROM'"},
		{"SELECT * FROM 'd'", "line 1, col 8: SELECT * is not supported: name the columns and aggregates"},
		{"SELECT a FROM d", "line 1, col 15: expected a quoted topic filter after FROM, like 'devices/+/telemetry', found 'd'"},
		{"SELECT a b c FROM 'd'", "line 1, col 12: expected ',' or FROM after select item, found 'c'"},
		{"SELECT a,\n  FROM 'd'", "line 2, col 3: expected an expression, found 'FROM'"},
		{"SELECT a FROM 'd' GROUP device", "line 1, col 25: expected BY after GROUP, found 'device'"},
		{"SELECT a FROM 'd' GROUP BY TUMBLING(1)", "line 1, col 37: expected window size as a duration like 1m, 30s or 500ms, found '1'"},
		{"SELECT a FROM 'd' GROUP BY TUMBLING(1x)", `line 1, col 38: unknown duration unit "x" in "1x": use ns, us, ms, s, m, h or d`},
		{"SELECT a FROM 'd' GROUP BY TUMBLING(1m30)", `line 1, col 39: missing unit after "30" in duration "1m30"`},
		{"SELECT a FROM 'd' GROUP BY TUMBLING(0s)", "line 1, col 37: window size must be positive, got 0s"},
		{"SELECT a FROM 'd' GROUP BY HOPPING(1m)", "line 1, col 38: expected ',' after window size (HOPPING takes size and hop), found ')'"},
		{"SELECT a FROM 'd' GROUP BY HOPPING(1m, 2m)", "line 1, col 28: HOPPING: hop must be positive and at most the size 1m0s, got 2m0s"},
		{"SELECT a FROM 'd' GROUP BY HOPPING(1d, 1s)", "line 1, col 28: HOPPING: size/hop must be at most 1000, got 24h0m0s/1s"},
		{"SELECT a FROM 'd' GROUP BY COUNTWINDOW(2.5)", "line 1, col 40: expected a whole number of events between 1 and 2147483647, found '2.5'"},
		{"SELECT a FROM 'd' GROUP BY SESSION(5m) HAVING", "line 1, col 46: expected an expression, found end of input"},
		{"SELECT a FROM 'd' GROUP BY TUMBLING(1m), SLIDING(1m)", "line 1, col 42: a query has one window; TUMBLING(1m) is already given"},
		{"SELECT a FROM 'd' GROUP BY foo(1m)", "line 1, col 28: expected a group key or a window function TUMBLING(size), HOPPING(size, hop), SLIDING(size), SESSION(gap) or COUNTWINDOW(n), found function 'foo'"},
		{"SELECT a FROM 'd' GROUP BY 1", "line 1, col 28: expected a group key or a window function TUMBLING(size), HOPPING(size, hop), SLIDING(size), SESSION(gap) or COUNTWINDOW(n), found '1'"},
		{"SELECT a FROM 'd' WHERE x = 5m", "line 1, col 29: a duration (5m) is only allowed in a window function in GROUP BY"},
		{"SELECT a FROM 'd' WHERE x = 'abc", "line 1, col 29: unterminated string: missing closing '"},
		{"SELECT a FROM 'd' WHERE x = \"\"", "line 1, col 29: empty quoted identifier"},
		{"SELECT a FROM 'd' WHERE x ? 1", "line 1, col 27: unexpected character '?'"},
		{"SELECT a FROM 'd' WHERE (x = 1", "line 1, col 31: expected ')' to close '(', found end of input"},
		{"SELECT a FROM 'd' WHERE x IS 1", "line 1, col 30: expected NULL after IS, found '1'"},
		{"SELECT a FROM 'd' WHERE x IN 1", "line 1, col 30: expected '(' after IN, found '1'"},
		{"SELECT a FROM 'd' WHERE x < y < z", "line 1, col 31: expected GROUP BY, HAVING or end of query, found '<'"},
		{"SELECT a FROM 'd' GROUP BY TUMBLING(1m) ORDER BY a", "line 1, col 41: expected ',', OUTLIERS, HAVING or end of query, found 'ORDER'"},
		{"SELECT a FROM 'd' WHERE tags. = 1", "line 1, col 31: expected a name after '.', found '='"},
		{"SELECT a FROM 'd' /* open", "line 1, col 19: unterminated comment"},
		{"SELECT a FROM 'd' WHERE x = 1e999", `line 1, col 29: invalid number "1e999"`},
		{"SELECT a FROM 'd'\nWHERE ünïcode = 'ß' AND €", "line 2, col 25: unexpected character '€'"},
		{"SELECT f(a, FROM 'd'", "line 1, col 13: expected an expression, found 'FROM'"},
		{"SELECT a AS FROM 'd'", "line 1, col 13: expected a column name after AS, found 'FROM'"},
	}
	for _, c := range cases {
		_, err := Parse(c.in)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q): got %v, want a *ParseError", c.in, err)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("Parse(%q):\ngot  %s\nwant %s", c.in, err, c.want)
		}
		if pe.Pos < 0 || pe.Pos > len(c.in) {
			t.Errorf("Parse(%q): position %d out of range", c.in, pe.Pos)
		}
	}
}

func TestParseDepthLimit(t *testing.T) {
	deep := "SELECT count(*) AS n FROM 'd' WHERE " + strings.Repeat("(", 1000) + "x" + strings.Repeat(")", 1000) + " GROUP BY TUMBLING(1s)"
	if _, err := Parse(deep); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("got %v, want nesting error", err)
	}
	neg := "SELECT count(*) AS n FROM 'd' WHERE x = " + strings.Repeat("- ", 1000) + "1 GROUP BY TUMBLING(1s)"
	if _, err := Parse(neg); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("got %v, want nesting error", err)
	}
	ok := "SELECT count(*) AS n FROM 'd' WHERE " + strings.Repeat("(", 50) + "x" + strings.Repeat(")", 50) + " GROUP BY TUMBLING(1s)"
	if _, err := Parse(ok); err != nil {
		t.Fatal(err)
	}
}
