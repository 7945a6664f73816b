package devices

import (
	"encoding/json"
	"testing"
)

func obj(s string) map[string]any {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		panic(err)
	}
	return m
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestDelta(t *testing.T) {
	tests := []struct{ desired, reported, want string }{
		{`{}`, `{"a":1}`, `{}`},
		{`{"a":1}`, `{}`, `{"a":1}`},
		{`{"a":1}`, `{"a":1}`, `{}`},
		{`{"a":1}`, `{"a":2}`, `{"a":1}`},
		{`{"a":"1"}`, `{"a":1}`, `{"a":"1"}`},
		{`{"a":null}`, `{}`, `{"a":null}`},
		{`{"a":null}`, `{"a":null}`, `{}`},
		{`{"n":{"x":1,"y":2}}`, `{"n":{"x":1,"y":3,"z":4}}`, `{"n":{"y":2}}`},
		{`{"n":{"x":1}}`, `{"n":{"x":1}}`, `{}`},
		{`{"n":{"x":1}}`, `{"n":5}`, `{"n":{"x":1}}`},
		{`{"n":{"m":{"k":true}}}`, `{"n":{"m":{"k":false}}}`, `{"n":{"m":{"k":true}}}`},
		{`{"l":[1,2]}`, `{"l":[1,2]}`, `{}`},
		{`{"l":[1,2]}`, `{"l":[2,1]}`, `{"l":[1,2]}`},
	}
	for _, tt := range tests {
		if got := js(Delta(obj(tt.desired), obj(tt.reported))); got != tt.want {
			t.Errorf("Delta(%s, %s) = %s; want %s", tt.desired, tt.reported, got, tt.want)
		}
	}
}

func TestMergePatch(t *testing.T) {
	tests := []struct{ doc, patch, want string }{
		{`{}`, `{"a":1}`, `{"a":1}`},
		{`{"a":1,"b":2}`, `{"a":null}`, `{"b":2}`},
		{`{"n":{"x":1,"y":2}}`, `{"n":{"y":null,"z":3}}`, `{"n":{"x":1,"z":3}}`},
		{`{"n":5}`, `{"n":{"x":1}}`, `{"n":{"x":1}}`},
		{`{"l":[1]}`, `{"l":[2,3]}`, `{"l":[2,3]}`},
	}
	for _, tt := range tests {
		doc := obj(tt.doc)
		before := js(doc)
		got := js(mergePatch(cloneObject(doc), obj(tt.patch)))
		if got != tt.want {
			t.Errorf("mergePatch(%s, %s) = %s; want %s", tt.doc, tt.patch, got, tt.want)
		}
		if js(doc) != before {
			t.Errorf("mergePatch changed its input %s to %s", before, js(doc))
		}
	}
}

func TestContainsFold(t *testing.T) {
	for _, tt := range []struct {
		s, sub string
		want   bool
	}{
		{"Main Pump", "pump", true}, {"Main Pump", "main p", true}, {"Main Pump", "pumps", false},
		{"abc", "", true}, {"", "a", false}, {"ÄPFEL-Pump", "äpfel", true}, {"dev-001", "DEV", false},
	} {
		if got := containsFold(tt.s, tt.sub); got != tt.want {
			t.Errorf("containsFold(%q, %q) = %v", tt.s, tt.sub, got)
		}
	}
}
