package rules

import (
	"encoding/json"
	"errors"
	"testing"
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
