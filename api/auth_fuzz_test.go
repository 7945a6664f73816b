package api

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzCredential feeds arbitrary Authorization headers and access_token values to the
// credential parser: it never panics, never accepts anything but the admin key or a token it
// signed, and always says why it refuses.
func FuzzCredential(f *testing.F) {
	s := New(Deps{APIKey: "admin-key-1"}, slog.New(slog.DiscardHandler))
	tok := s.signToken(time.Now().Add(time.Hour).Unix())
	for _, seed := range []string{
		"Bearer admin-key-1", "bearer admin-key-1", "Bearer  admin-key-1", "Bearer " + tok, "Basic YWJj",
		"Bearer tbk_0123456789abcdef_" + strings.Repeat("A", 43), "Bearer tbt.1.2.3", "Bearer tbt..", "Bearer \x00",
		"Bearer tbt.99999999999999999999.x", "", "Bearer", "Bearer ", "Bearer tbk_", "Bearer é",
	} {
		f.Add(seed, "")
	}
	f.Add("", tok)
	f.Add("", "tbt.1")
	f.Fuzz(func(t *testing.T, header, query string) {
		r := httptest.NewRequest("GET", "/api/v1/stream", nil)
		r.Header.Set("Authorization", header)
		if query != "" {
			q := r.URL.Query()
			q.Set("access_token", query)
			r.URL.RawQuery = q.Encode()
		}
		p, why := s.credential(r, true)
		if why == "" {
			cred, _ := bearer(header)
			if cred == "" {
				cred = query
			}
			if cred != "admin-key-1" && cred != tok && !strings.HasPrefix(cred, browserTokenPrefix) {
				t.Fatalf("accepted %q / %q as %v", header, query, p)
			}
			if p.ID() != "admin-key" {
				t.Fatalf("principal %v without scoped keys", p)
			}
		}
		if why != "" && p.ID() != "admin-key" && len(p.Scopes) > 0 {
			t.Fatalf("refused (%s) but returned principal %v", why, p)
		}
	})
}
