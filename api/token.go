package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/auth"
)

// Browser tokens let a web page authenticate where it cannot send headers (EventSource,
// WebSocket) without putting the API key in URLs and logs. A token is
//
//	tbt.<expiry, Unix seconds>.<base64url HMAC-SHA256(API key, "tributary browser token " + expiry)>
//
// so it needs no server-side state, expires by itself, and every token dies with the key that
// signed it. It is accepted wherever the API key is (Authorization: Bearer), and as
// ?access_token= on the live endpoints; it cannot mint further tokens. A token minted with a
// scoped key also names the key (tbt.<expiry>.<key ID>.<HMAC over expiry and key ID>) and has
// exactly that key's rights for as long as the key is valid.
const (
	browserTokenPrefix = "tbt."
	// DefaultTokenTTL is how long a browser token lasts unless the request asks for less.
	DefaultTokenTTL = 15 * time.Minute
	// MaxTokenTTL is the longest lifetime a browser token can be given.
	MaxTokenTTL = time.Hour
)

// signToken signs an admin key's token expiring at exp.
func (s *Server) signToken(exp int64) string { return s.signKeyToken(exp, "") }

// signKeyToken signs a token expiring at exp for key keyID ("" for the admin key, whose tokens
// keep their original form tbt.<exp>.<mac>; a scoped key's are tbt.<exp>.<key ID>.<mac>).
func (s *Server) signKeyToken(exp int64, keyID string) string {
	mac := hmac.New(sha256.New, []byte(s.deps.APIKey))
	fmt.Fprintf(mac, "tributary browser token %d", exp)
	prefix := browserTokenPrefix + strconv.FormatInt(exp, 10) + "."
	if keyID != "" {
		fmt.Fprintf(mac, " %s", keyID)
		prefix += keyID + "."
	}
	return prefix + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkToken reports "" if tok is a valid browser token at now, else why not.
func (s *Server) checkToken(tok string, now time.Time) string {
	_, why := s.tokenPrincipal(tok, now)
	return why
}

// tokenPrincipal returns the principal of a valid browser token at now, else why it is not
// valid. A scoped key's token acts as the key does now: revoking the key ends its tokens.
func (s *Server) tokenPrincipal(tok string, now time.Time) (auth.Principal, string) {
	rest, _ := strings.CutPrefix(tok, browserTokenPrefix)
	parts := strings.Split(rest, ".")
	keyID := ""
	if len(parts) == 3 {
		keyID = parts[1]
	}
	exp, err := strconv.ParseInt(parts[0], 10, 64)
	if len(parts) < 2 || len(parts) > 3 || err != nil || subtle.ConstantTimeCompare([]byte(s.signKeyToken(exp, keyID)), []byte(tok)) != 1 {
		return auth.Principal{}, "invalid browser token"
	}
	if now.Unix() >= exp {
		return auth.Principal{}, "browser token expired: get a new one with POST /api/v1/tokens"
	}
	if keyID == "" {
		return auth.Admin, ""
	}
	if s.deps.Keys == nil {
		return auth.Principal{}, "invalid browser token"
	}
	p, ok := s.deps.Keys.Current(keyID)
	if !ok {
		return auth.Principal{}, "browser token of a revoked or expired API key"
	}
	return p, ""
}

type tokenRequest struct {
	// TTL is a Go duration ("10m"); default DefaultTokenTTL, at most MaxTokenTTL.
	TTL string `json:"ttl"`
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// issueToken serves POST /api/v1/tokens (API keys only, not browser tokens): {"ttl":"10m"} or
// an empty body → 201 {"token","expires_at"}. The token has the rights of the key that asked.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) {
	if cred, _ := bearer(r.Header.Get("Authorization")); strings.HasPrefix(cred, browserTokenPrefix) {
		writeError(w, http.StatusUnauthorized, "a browser token cannot do this: use the API key")
		return
	}
	var req tokenRequest
	if r.ContentLength != 0 {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1))
		if err == nil && len(body) > 0 {
			r.Body = io.NopCloser(io.MultiReader(strings.NewReader(string(body)), r.Body))
			if err := decodeJSON(r, &req); err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > MaxTokenTTL {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl: want a duration from 1s to %s, got %q", MaxTokenTTL, req.TTL))
			return
		}
		ttl = d
	}
	exp := time.Now().Add(ttl).Truncate(time.Second)
	p := principal(r)
	if p.KeyID != "" {
		if k, err := s.deps.Keys.Get(p.KeyID); err == nil && k.ExpiresAt != nil && k.ExpiresAt.Before(exp) {
			exp = k.ExpiresAt.Truncate(time.Second) // a token never outlives its key
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, tokenResponse{Token: s.signKeyToken(exp.Unix(), p.KeyID), ExpiresAt: exp.UTC()})
}
