package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/rules"
)

// fakeCanaries keeps canaries by name; it stands in for the rules manager, whose canaries are
// tested end to end in rules (TestCanaryEndToEnd): here only the tenancy of the handlers is.
type fakeCanaries struct{ m map[string]rules.Canary }

func (f *fakeCanaries) CreateCanary(_ context.Context, s rules.CanarySpec) (rules.Canary, error) {
	if s.Tenant == "" {
		s.Tenant = rules.DefaultTenant
	}
	c := rules.Canary{CanarySpec: s}
	f.m[s.Name] = c
	return c, nil
}

func (f *fakeCanaries) PutCanary(ctx context.Context, name string, s rules.CanarySpec) (rules.Canary, bool, error) {
	_, exists := f.m[name]
	s.Name = name
	c, err := f.CreateCanary(ctx, s)
	return c, !exists, err
}

func (f *fakeCanaries) GetCanary(_ context.Context, name string) (rules.Canary, error) {
	c, ok := f.m[name]
	if !ok {
		return c, fmt.Errorf("%w: %s", rules.ErrNotFound, name)
	}
	return c, nil
}

func (f *fakeCanaries) ListCanaries(context.Context) ([]rules.Canary, error) {
	var out []rules.Canary
	for _, n := range []string{"a1", "b1", "d1"} {
		if c, ok := f.m[n]; ok {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeCanaries) DeleteCanary(_ context.Context, name string) error {
	delete(f.m, name)
	return nil
}

func (f *fakeCanaries) CanaryResults(context.Context, string, rules.ResultsQuery) (rules.ResultsPage, error) {
	return rules.ResultsPage{Results: []rules.StoredResult{}}, nil
}

// TestCanaryTenancy: a key confined to a tenant creates canaries of its tenant only, lists
// only them, and finds other tenants' canaries not found; the admin key sees all.
func TestCanaryTenancy(t *testing.T) {
	f := &fakeCanaries{m: map[string]rules.Canary{
		"a1": {CanarySpec: rules.CanarySpec{Name: "a1", CanaryDef: rules.CanaryDef{Tenant: "acme"}}},
		"b1": {CanarySpec: rules.CanarySpec{Name: "b1", CanaryDef: rules.CanaryDef{Tenant: "beta"}}},
		"d1": {CanarySpec: rules.CanarySpec{Name: "d1", CanaryDef: rules.CanaryDef{Tenant: "default"}}},
	}}
	h := &canaryHandlers{cs: f, rh: &ruleHandlers{}}
	acme := auth.Principal{KeyID: "k1", Name: "acme-ops", Tenant: "acme", Scopes: []auth.Scope{auth.ScopeRulesWrite}}
	do := func(p auth.Principal, fn http.HandlerFunc, method, target, name, body string) (int, string) {
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		req.SetPathValue("name", name)
		req = req.WithContext(auth.WithPrincipal(req.Context(), p))
		rec := httptest.NewRecorder()
		fn(rec, req)
		return rec.Code, rec.Body.String()
	}
	names := func(body string) []string {
		var ans struct{ Canaries []rules.Canary }
		_ = json.Unmarshal([]byte(body), &ans)
		var out []string
		for _, c := range ans.Canaries {
			out = append(out, c.Name)
		}
		return out
	}
	if code, body := do(acme, h.list, "GET", "/api/v1/canaries", "", ""); code != 200 || fmt.Sprint(names(body)) != "[a1]" {
		t.Errorf("acme list: %d %v", code, names(body))
	}
	if code, body := do(auth.Admin, h.list, "GET", "/api/v1/canaries", "", ""); code != 200 || fmt.Sprint(names(body)) != "[a1 b1 d1]" {
		t.Errorf("admin list: %d %v", code, names(body))
	}
	for _, tc := range []struct {
		fn     http.HandlerFunc
		method string
	}{{h.get, "GET"}, {h.delete, "DELETE"}, {h.results, "GET"}, {h.put, "PUT"}} {
		if code, body := do(acme, tc.fn, tc.method, "/api/v1/canaries/b1", "b1", "{}"); code != 404 || !strings.Contains(body, `no canary named \"b1\"`) {
			t.Errorf("acme %s b1: %d %s", tc.method, code, body)
		}
	}
	if c, ok := f.m["b1"]; !ok || c.Tenant != "beta" {
		t.Fatalf("acme deleted or took over beta's canary: %+v", c)
	}
	if code, body := do(acme, h.put, "PUT", "/api/v1/canaries/a1", "a1", `{"description":"edited"}`); code != 200 || f.m["a1"].Description != "edited" || f.m["a1"].Tenant != "acme" {
		t.Errorf("acme replaces a1: %d %s", code, body)
	}
	if code, body := do(acme, h.put, "PUT", "/api/v1/canaries/a2", "a2", `{}`); code != 201 || f.m["a2"].Tenant != "acme" {
		t.Errorf("acme puts a new a2: %d %s", code, body)
	}
	if code, _ := do(acme, h.get, "GET", "/api/v1/canaries/a1", "a1", ""); code != 200 {
		t.Errorf("acme get a1: %d", code)
	}
	if code, body := do(acme, h.create, "POST", "/api/v1/canaries", "", `{"name":"x","tenant":"beta"}`); code != 403 || !strings.Contains(body, "confined to tenant acme") {
		t.Errorf("acme creates for beta: %d %s", code, body)
	}
	if code, _ := do(acme, h.create, "POST", "/api/v1/canaries", "", `{"name":"y"}`); code != 201 || f.m["y"].Tenant != "acme" {
		t.Errorf("acme creates without a tenant: %d, tenant %q", code, f.m["y"].Tenant)
	}
}
