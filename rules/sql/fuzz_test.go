package sql

import (
	"errors"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

// FuzzParse checks that no input makes the parser, the compiler or a
// compiled plan panic, that errors carry a position inside the input, and
// that the canonical form of a query parses back to itself and compiles
// exactly when the query does. Seeds are in testdata/fuzz/FuzzParse.
//
//	go test ./rules/sql -run '^$' -fuzz FuzzParse -fuzztime 1m
func FuzzParse(f *testing.F) {
	f.Add(issueExample)
	f.Add("SELECT tags.site, percentile(v, 95) AS p95, window_start() AS ws FROM 'devices/+/telemetry' WHERE v IN (1, 2) OR NOT v IS NULL GROUP BY tags.site, HOPPING(5m, 1m)")
	f.Add("SELECT count(*) AS n FROM 'rules/hot' GROUP BY SESSION(30s) HAVING n > 2 -- comment")
	f.Add("SELECT device, spike(v, 0.99, 5).score AS s FROM 'devices/#' GROUP BY device, tags.site, TUMBLING(1s) OUTLIERS(s) BY tags.site EXPECT 0.1 HAVING outlier")
	f.Add("SELECT \"a\"\"b\" AS x, -(-1 + 2) * 3 % 4 AS y FROM 'devices/#' GROUP BY \"a\"\"b\", COUNTWINDOW(3);")
	f.Fuzz(fuzzOne)
}

// fuzzOne is one FuzzParse input.
func fuzzOne(t *testing.T, src string) {
	q, err := Parse(src)
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("Parse(%q): error %v is not a *ParseError", src, err)
		}
		if pe.Pos < 0 || pe.Pos > len(src) || pe.Line < 1 || pe.Col < 1 {
			t.Fatalf("Parse(%q): bad position in %+v", src, pe)
		}
		return
	}
	canon := q.String()
	q2, err := Parse(canon)
	if err != nil {
		t.Fatalf("canonical form %q of %q does not parse: %v", canon, src, err)
	}
	if again := q2.String(); again != canon {
		t.Fatalf("canonical form is not stable:\n%q\n%q", canon, again)
	}
	r, err := CompileQuery("fuzz", q)
	_, err2 := CompileQuery("fuzz", q2)
	if (err == nil) != (err2 == nil) {
		t.Fatalf("query %q compiles: %v, its canonical form %q: %v", src, err, canon, err2)
	}
	if err != nil {
		return
	}
	e, err := window.New(r.Plan, window.Options{Lateness: time.Second})
	if err != nil {
		t.Fatalf("compiled plan of %q rejected: %v", src, err)
	}
	t0 := time.Unix(1700000000, 0)
	for i, v := range []any{1.5, "x", true, nil, map[string]any{"b": 2.0}} {
		e.Process(window.Event{
			Time: t0.Add(time.Duration(i) * time.Second), Device: "d", Type: "t",
			Tags:   map[string]string{"site": "s"},
			Fields: map[string]any{"v": v, "a": v, "temperature": v},
		})
	}
	e.Flush()
}
