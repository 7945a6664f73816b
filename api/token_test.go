package api

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestBrowserTokens(t *testing.T) {
	s := New(Deps{APIKey: "key-1"}, slog.New(slog.DiscardHandler))
	other := New(Deps{APIKey: "key-2"}, slog.New(slog.DiscardHandler))
	now := time.Unix(1_800_000_000, 0)
	tok := s.signToken(now.Add(time.Minute).Unix())
	for _, tt := range []struct {
		name string
		srv  *Server
		tok  string
		at   time.Time
		want string
	}{
		{"valid", s, tok, now, ""},
		{"expired", s, tok, now.Add(time.Minute), "expired"},
		{"other key", other, tok, now, "invalid"},
		{"tampered expiry", s, strings.Replace(tok, "tbt.18", "tbt.19", 1), now, "invalid"},
		{"garbage", s, "tbt.x", now, "invalid"},
	} {
		if got := tt.srv.checkToken(tt.tok, tt.at); !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("%s: checkToken = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTokenEndpoint(t *testing.T) {
	s := New(Deps{APIKey: "key-1"}, slog.New(slog.DiscardHandler))
	h := s.Handler()
	tok := s.signToken(time.Now().Add(time.Minute).Unix())
	for _, tt := range []struct {
		auth, body string
		status     int
		want       string
	}{
		{"key-1", "", 201, `"token":"tbt.`},
		{"key-1", `{"ttl":"30s"}`, 201, `"expires_at"`},
		{"key-1", `{"ttl":"2h"}`, 400, "ttl"},
		{"key-1", `{"ttl":"500ms"}`, 400, "ttl"},
		{"key-1", `{"tl":"1m"}`, 400, "unknown field"},
		{tok, "", 401, "browser token cannot"},
		{"nope", "", 401, "invalid API key"},
	} {
		req := httptest.NewRequest("POST", "/api/v1/tokens", strings.NewReader(tt.body))
		req.Header.Set("Authorization", "Bearer "+tt.auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
			t.Errorf("POST tokens %q with %.8s…: %d %s, want %d with %q", tt.body, tt.auth, rec.Code, rec.Body, tt.status, tt.want)
		}
	}
	// Not in the URL of the REST API (only the live streams take ?access_token=).
	req := httptest.NewRequest("GET", "/api/v1/deadletters?access_token="+tok, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Errorf("GET deadletters?access_token=: %d %s, want 401", rec.Code, rec.Body)
	}
}
