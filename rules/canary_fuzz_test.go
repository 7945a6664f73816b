package rules

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/streams/window"
)

// FuzzCanaryDefinition feeds canary definitions (the body of POST /api/v1/canaries) to the
// validation and query generation: nothing panics, every refusal names a field of the
// definition, and a definition that validates always compiles — quotes, keywords or odd
// characters in device IDs, types, tag values and field names cannot break the generated query.
func FuzzCanaryDefinition(f *testing.F) {
	for _, s := range []string{
		`{"name":"c","canary_group":{"tags":["fw:2.1"]},"control_group":{"tags":["fw:2.0"]},"metrics":[{"field":"latency"}]}`,
		`{"name":"c","canary_group":{"devices":["a'b","c\"d"]},"control_group":{"type":"x' OR 1=1 --"},"metrics":[{"field":"env.rh","method":"mann-whitney"}],"interval":"30s"}`,
		`{"name":"c","canary_group":{"type":"gw","tags":["site:o'slo","fw:2.1"]},"control_group":{"tags":["fw:SELECT"]},"metrics":[{"field":"select","better":"higher","tolerance":0}],"threshold":1}`,
		`{"name":"c","canary_group":{"tags":["fw:2.1"]},"control_group":{"tags":["fw:2.1"]},"metrics":[{"field":"x"}]}`,
		`{"name":"c","canary_group":{},"control_group":{"devices":[""]},"metrics":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cs CanarySpec
		if json.Unmarshal(data, &cs) != nil {
			return
		}
		spec := cs.ruleSpec()
		_, err := compile(&spec)
		if err == nil {
			return
		}
		var ie *InvalidError
		if !errors.As(err, &ie) {
			t.Fatalf("not an *InvalidError: %v", err)
		}
		if ie.Field == "" || ie.Field == "sql" {
			t.Fatalf("a validated canary made a query that does not compile: %v\nquery: %s", err, spec.SQL)
		}
	})
}

// TestCanaryWhereMatchesQuery: the filter a canary runs is the generated query's WHERE, for
// random devices against selectors by list, type and tags.
func TestCanaryWhereMatchesQuery(t *testing.T) {
	d := CanaryDef{Canary: Selector{Devices: []string{"a", "b'x", "c"}}, Control: Selector{Type: "gw", Tags: []string{"fw:2.0", "site:o'slo"}},
		Config: canaryConfigForTest()}
	spec := Spec{Name: "w", Canary: &d}
	c, err := compile(&spec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sql.Compile("w", spec.SQL)
	if err != nil {
		t.Fatal(err)
	}
	pick := func(rng *rand.Rand, xs ...string) string { return xs[rng.IntN(len(xs))] }
	rng := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		ev := &window.Event{Device: pick(rng, "a", "b'x", "c", "d", ""), Type: pick(rng, "gw", "sensor", ""), Tags: map[string]string{}}
		if v := pick(rng, "2.0", "2.1", ""); v != "" {
			ev.Tags["fw"] = v
		}
		if v := pick(rng, "o'slo", "bergen", ""); v != "" {
			ev.Tags["site"] = v
		}
		if got, want := c.plan.Where(ev), r.Plan.Where(ev); got != want {
			t.Fatalf("event %+v: canary filter %v, query WHERE %v", ev, got, want)
		}
	}
}

func canaryConfigForTest() canary.Config {
	c := canary.Config{Metrics: []canary.Metric{{Field: "x"}}}
	_ = c.Normalize()
	return c
}
