package auth

import (
	"strings"
	"testing"
)

func TestScopes(t *testing.T) {
	for _, tt := range []struct {
		have []Scope
		want Scope
		ok   bool
	}{
		{[]Scope{ScopeAdmin}, ScopeRulesWrite, true},
		{[]Scope{ScopeDevicesWrite}, ScopeDevicesRead, true},
		{[]Scope{ScopeDevicesRead}, ScopeDevicesWrite, false},
		{[]Scope{ScopeStreamsWrite}, ScopeStreamsRead, true},
		{[]Scope{ScopeStreamsRead}, ScopeDevicesRead, false},
		{[]Scope{ScopeRulesWrite}, ScopeAdmin, false},
		{nil, ScopeAny, false},
		{[]Scope{ScopeDevicesRead}, ScopeAny, true},
	} {
		if got := (Principal{Scopes: tt.have}).Allows(tt.want); got != tt.ok {
			t.Errorf("%v allows %s = %v, want %v", tt.have, tt.want, got, tt.ok)
		}
	}
	if _, err := ParseScopes("devices:read, bogus"); err == nil || !strings.Contains(err.Error(), `unknown scope "bogus"`) {
		t.Errorf("ParseScopes bogus: %v", err)
	}
	got, err := ParseScopes("rules:read,rules:read,admin")
	if err != nil || len(got) != 2 {
		t.Errorf("ParseScopes: %v %v", got, err)
	}
	p := Principal{Tenant: "acme"}
	if !p.Sees("acme") || p.Sees("") || p.Sees("other") || !(Principal{}).Sees("x") || !(Principal{Tenant: "default"}).Sees("") {
		t.Error("Sees: tenant confinement wrong")
	}
}

// FuzzParseKey: ParseKey never panics and accepts only the exact shape of a key secret.
func FuzzParseKey(f *testing.F) {
	f.Add("tbk_0123456789abcdef_" + strings.Repeat("A", 43))
	f.Add("tbk_0123456789ABCDEF_" + strings.Repeat("A", 43))
	f.Add("tbk_")
	f.Add("tbk_0123456789abcdef_" + strings.Repeat("=", 43))
	f.Add("tb_abc")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseKey(s)
		if !ok {
			return
		}
		if len(s) != KeyLen || !strings.HasPrefix(s, "tbk_") || len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" || s[4:20] != id {
			t.Fatalf("ParseKey(%q) = %q", s, id)
		}
	})
}

// FuzzParseScopes: ParseScopes never panics and returns only grantable scopes, once each.
func FuzzParseScopes(f *testing.F) {
	for _, s := range []string{"devices:read", "admin,rules:write", " , ,", "devices:read,devices:read", "a:b:c", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		got, err := ParseScopes(list)
		if err != nil {
			return
		}
		seen := map[Scope]bool{}
		for _, s := range got {
			if !s.Valid() || seen[s] {
				t.Fatalf("ParseScopes(%q) = %v", list, got)
			}
			seen[s] = true
		}
	})
}
