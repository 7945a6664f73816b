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
)

// Browser tokens let a web page authenticate where it cannot send headers (EventSource,
// WebSocket) without putting the API key in URLs and logs. A token is
//
//	tbt.<expiry, Unix seconds>.<base64url HMAC-SHA256(API key, "tributary browser token " + expiry)>
//
// so it needs no server-side state, expires by itself, and every token dies with the key that
// signed it. It is accepted wherever the API key is (Authorization: Bearer), and as
// ?access_token= on the live endpoints; it cannot mint further tokens.
const (
	browserTokenPrefix = "tbt."
	// DefaultTokenTTL is how long a browser token lasts unless the request asks for less.
	DefaultTokenTTL = 15 * time.Minute
	// MaxTokenTTL is the longest lifetime a browser token can be given.
	MaxTokenTTL = time.Hour
)

func (s *Server) signToken(exp int64) string {
	mac := hmac.New(sha256.New, []byte(s.deps.APIKey))
	fmt.Fprintf(mac, "tributary browser token %d", exp)
	return browserTokenPrefix + strconv.FormatInt(exp, 10) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkToken reports "" if tok is a valid browser token at now, else why not.
func (s *Server) checkToken(tok string, now time.Time) string {
	rest, _ := strings.CutPrefix(tok, browserTokenPrefix)
	expStr, _, ok := strings.Cut(rest, ".")
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if !ok || err != nil || subtle.ConstantTimeCompare([]byte(s.signToken(exp)), []byte(tok)) != 1 {
		return "invalid browser token"
	}
	if now.Unix() >= exp {
		return "browser token expired: get a new one with POST /api/v1/tokens"
	}
	return ""
}

// authorize checks the request's credential: the API key, or (with allowToken) a browser token,
// which with allowQuery may also come as ?access_token=. It returns "" when the request may go on,
// else the reason for a 401.
func (s *Server) authorize(r *http.Request, allowToken, allowQuery bool) string {
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok && allowQuery {
		if t := r.URL.Query().Get("access_token"); t != "" {
			if !strings.HasPrefix(t, browserTokenPrefix) {
				return "access_token takes a browser token (POST /api/v1/tokens), never the API key"
			}
			cred, ok = t, true
		}
	}
	isToken := strings.HasPrefix(cred, browserTokenPrefix)
	switch {
	case !ok && allowQuery:
		return "missing API key: send Authorization: Bearer <key>, or ?access_token=<browser token>"
	case !ok:
		return "missing API key: send Authorization: Bearer <key>"
	case isToken && allowToken:
		return s.checkToken(cred, time.Now())
	case isToken:
		return "a browser token cannot do this: use the API key"
	case subtle.ConstantTimeCompare([]byte(cred), []byte(s.deps.APIKey)) != 1:
		return "invalid API key"
	}
	return ""
}

// guard wraps next with authorize.
func (s *Server) guard(next http.HandlerFunc, allowToken, allowQuery bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if msg := s.authorize(r, allowToken, allowQuery); msg != "" {
			metricHTTPUnauthorized.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tributary"`)
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		next(w, r)
	}
}

type tokenRequest struct {
	// TTL is a Go duration ("10m"); default DefaultTokenTTL, at most MaxTokenTTL.
	TTL string `json:"ttl"`
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// issueToken serves POST /api/v1/tokens (API key only): {"ttl":"10m"} or an empty body →
// 201 {"token","expires_at"}.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) {
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
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, tokenResponse{Token: s.signToken(exp.Unix()), ExpiresAt: exp.UTC()})
}
