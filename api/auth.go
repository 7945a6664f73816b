package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
)

// APIKeyStore holds the scoped API keys; *auth.Keys satisfies it.
type APIKeyStore interface {
	Authenticate(secret string) (auth.Principal, error)
	// Current is the principal of key id while it is valid (browser tokens re-check it).
	Current(id string) (auth.Principal, bool)
	Create(ctx context.Context, spec auth.KeySpec, createdBy string) (auth.Key, string, error)
	List(tenant string) []auth.Key
	Get(id string) (auth.Key, error)
	Revoke(ctx context.Context, id string) (auth.Key, error)
}

// Auditor records security events; *audit.Log satisfies it.
type Auditor interface {
	Record(e audit.Event)
}

// credential is what the request presented, and the principal it stands for.
func (s *Server) credential(r *http.Request, allowQuery bool) (auth.Principal, string) {
	cred, ok := bearer(r.Header.Get("Authorization"))
	if !ok && allowQuery {
		if t := r.URL.Query().Get("access_token"); t != "" {
			if !strings.HasPrefix(t, browserTokenPrefix) {
				return auth.Principal{}, "access_token takes a browser token (POST /api/v1/tokens), never the API key"
			}
			cred, ok = t, true
		}
	}
	switch {
	case !ok && allowQuery:
		return auth.Principal{}, "missing API key: send Authorization: Bearer <key>, or ?access_token=<browser token>"
	case !ok:
		return auth.Principal{}, "missing API key: send Authorization: Bearer <key>"
	case strings.HasPrefix(cred, browserTokenPrefix):
		return s.tokenPrincipal(cred, time.Now())
	case auth.IsKey(cred) && s.deps.Keys != nil:
		p, err := s.deps.Keys.Authenticate(cred)
		if errors.Is(err, auth.ErrExpired) {
			return auth.Principal{}, "API key expired"
		}
		if err != nil {
			return auth.Principal{}, "invalid API key"
		}
		return p, ""
	case subtle.ConstantTimeCompare([]byte(cred), []byte(s.deps.APIKey)) == 1:
		return auth.Admin, ""
	}
	return auth.Principal{}, "invalid API key"
}

// bearer extracts the credential of an "Authorization: Bearer <cred>" header. The scheme is
// case-insensitive (RFC 7235); the credential must be non-empty printable ASCII without spaces.
func bearer(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimLeft(cred, " ")
	if cred == "" || len(cred) > 4096 {
		return "", false
	}
	for i := 0; i < len(cred); i++ {
		if c := cred[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	return cred, true
}

// guard authenticates the request, checks the route's scope and tenancy, and passes the
// principal on in the request context.
func (s *Server) guard(pattern string, a access, next http.HandlerFunc) http.HandlerFunc {
	allowQuery := a.scope == auth.ScopeStreamsRead && (pattern == "GET /api/v1/stream" || pattern == "GET /api/v1/ws")
	return func(w http.ResponseWriter, r *http.Request) {
		p, msg := s.credential(r, allowQuery)
		if msg != "" {
			metricHTTPUnauthorized.Inc()
			s.audit(r, audit.Event{Type: audit.TypeLogin, Outcome: audit.Failure, Reason: msg, Principal: claimed(r)})
			w.Header().Set("WWW-Authenticate", `Bearer realm="tributary"`)
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		s.audit(r, audit.Event{Type: audit.TypeLogin, Outcome: audit.Success, Principal: p.ID(), Tenant: p.Tenant})
		if !p.Allows(a.scope) {
			s.deny(w, r, p, http.StatusForbidden, fmt.Sprintf("API key %q lacks scope %s, which %s needs", p.Name, a.scope, pattern))
			return
		}
		if a.tenant == tenantGlobal && p.Restricted() {
			s.deny(w, r, p, http.StatusForbidden, fmt.Sprintf("%s acts on every tenant; API key %q is confined to tenant %s", pattern, p.Name, p.Tenant))
			return
		}
		if a.tenant == tenantDevice && p.Restricted() {
			id := r.PathValue("id")
			if d, err := s.deps.Devices.Get(id); err == nil && !p.Sees(d.Tenant) {
				s.deny(w, r, p, http.StatusNotFound, fmt.Sprintf("%s: %s", devices.ErrNotFound, id))
				return
			}
		}
		next(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	}
}

// deny answers a refused request and records it.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, p auth.Principal, status int, msg string) {
	metricHTTPDenied.Inc()
	s.audit(r, audit.Event{Type: audit.TypeDenied, Outcome: audit.Failure, Principal: p.ID(), Tenant: p.Tenant,
		Reason: msg, Object: r.Method + " " + r.URL.Path})
	writeError(w, status, msg)
}

// audit records e with the request's source address and protocol.
func (s *Server) audit(r *http.Request, e audit.Event) {
	if s.deps.Audit == nil {
		return
	}
	e.Protocol = "http"
	e.Source = sourceAddr(r)
	s.deps.Audit.Record(e)
}

// sourceAddr is the client's address (the peer, not a forwarded-for header anyone can set).
func sourceAddr(r *http.Request) string {
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return net.JoinHostPort(host, port)
	}
	return r.RemoteAddr
}

// claimed names the credential a failed login presented, without the secret: a scoped key's
// ID, or the kind of credential.
func claimed(r *http.Request) string {
	cred, ok := bearer(r.Header.Get("Authorization"))
	switch {
	case !ok:
		return ""
	case strings.HasPrefix(cred, browserTokenPrefix):
		return "browser-token"
	}
	if id, ok := auth.ParseKey(cred); ok {
		return "key:" + id
	}
	return "unknown-key"
}

// principal is the authenticated principal of a request.
func principal(r *http.Request) auth.Principal { return auth.FromContext(r.Context()) }
