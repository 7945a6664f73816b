package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/auth"
)

// TenantStore holds tenants; *auth.Tenants satisfies it.
type TenantStore interface {
	Create(ctx context.Context, spec auth.TenantSpec) (auth.Tenant, error)
	Put(ctx context.Context, spec auth.TenantSpec) (auth.Tenant, error)
	Delete(ctx context.Context, name string) error
	Get(name string) (auth.Tenant, bool)
	List() []auth.Tenant
}

// TenantUse counts the things of one kind a tenant owns, named in the singular and plural
// ("rule", "rules") for the refusal message.
type TenantUse func(ctx context.Context, tenant string) (one, many string, n int, err error)

// AuditReader reads the audit log; *audit.Log satisfies it.
type AuditReader interface {
	Read(ctx context.Context, q audit.Query) ([]audit.Event, error)
}

// deviceCounter is an optional capability of the DeviceStore (*devices.Registry and Manager
// have it): the number of devices a tenant owns, for its max_devices quota.
type deviceCounter interface {
	CountTenant(tenant string) int
}

// securityRoutes registers API keys, tenants and the audit log (each when its store is set).
func (s *Server) securityRoutes() {
	if s.deps.Keys != nil {
		s.handle("POST /api/v1/keys", s.createKey)
		s.handle("GET /api/v1/keys", s.listKeys)
		s.handle("GET /api/v1/keys/{id}", s.getKey)
		s.handle("DELETE /api/v1/keys/{id}", s.revokeKey)
	}
	if s.deps.Tenants != nil {
		s.handle("POST /api/v1/tenants", s.createTenant)
		s.handle("GET /api/v1/tenants", s.listTenants)
		s.handle("GET /api/v1/tenants/{name}", s.getTenant)
		s.handle("PUT /api/v1/tenants/{name}", s.putTenant)
		s.handle("DELETE /api/v1/tenants/{name}", s.deleteTenant)
	}
	if _, ok := s.deps.Audit.(AuditReader); ok {
		s.handle("GET /api/v1/audit", s.readAudit)
	}
}

type keyCreated struct {
	auth.Key
	// Secret is shown only in this answer.
	Secret string `json:"secret"`
}

// createKey serves POST /api/v1/keys: {"name","description","scopes":[...],"tenant",
// "expires_at"} → 201 with the secret, shown only this once. A key confined to a tenant can
// only make keys for that tenant, with scopes it has itself.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var spec auth.KeySpec
	if err := decodeJSON(r, &spec); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := principal(r)
	if p.Restricted() {
		if spec.Tenant == "" {
			spec.Tenant = p.Tenant
		}
		if spec.Tenant != p.Tenant {
			s.deny(w, r, p, http.StatusForbidden, fmt.Sprintf("API key %q is confined to tenant %s and cannot make keys for tenant %s", p.Name, p.Tenant, spec.Tenant))
			return
		}
	}
	for _, sc := range spec.Scopes {
		if !p.Allows(sc) {
			s.deny(w, r, p, http.StatusForbidden, fmt.Sprintf("API key %q lacks scope %s and cannot grant it", p.Name, sc))
			return
		}
	}
	if spec.Tenant != "" && s.deps.Tenants != nil {
		if _, ok := s.deps.Tenants.Get(spec.Tenant); !ok {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tenant %q does not exist: create it with POST /api/v1/tenants", spec.Tenant))
			return
		}
	}
	k, secret, err := s.deps.Keys.Create(r.Context(), spec, p.ID())
	if err != nil {
		s.securityError(w, err)
		return
	}
	s.audit(r, audit.Event{Type: audit.TypeKeyCreated, Outcome: audit.Success, Principal: p.ID(), Tenant: k.Tenant,
		Object: "key:" + k.ID, Reason: fmt.Sprintf("name %q, scopes %v", k.Name, k.Scopes)})
	w.Header().Set("Location", "/api/v1/keys/"+k.ID)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, keyCreated{Key: k, Secret: secret})
}

// listKeys serves GET /api/v1/keys (a tenant's admin sees that tenant's keys).
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"keys": s.deps.Keys.List(principal(r).Tenant)})
}

// visibleKey returns key id when the principal may see it; another tenant's key is not found.
func (s *Server) visibleKey(r *http.Request) (auth.Key, error) {
	k, err := s.deps.Keys.Get(r.PathValue("id"))
	if err == nil && !principal(r).Sees(k.Tenant) || err == nil && principal(r).Restricted() && k.Tenant == "" {
		return auth.Key{}, fmt.Errorf("%w: API key %q", auth.ErrNotFound, r.PathValue("id"))
	}
	return k, err
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.visibleKey(r)
	if err != nil {
		s.securityError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}

// revokeKey serves DELETE /api/v1/keys/{id}: the key stops working on every instance within
// a second (as soon as their KV watches deliver the deletion).
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	if _, err := s.visibleKey(r); err != nil {
		s.securityError(w, err)
		return
	}
	k, err := s.deps.Keys.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		s.securityError(w, err)
		return
	}
	p := principal(r)
	s.audit(r, audit.Event{Type: audit.TypeKeyRevoked, Outcome: audit.Success, Principal: p.ID(), Tenant: k.Tenant,
		Object: "key:" + k.ID, Reason: fmt.Sprintf("name %q", k.Name)})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var spec auth.TenantSpec
	if err := decodeJSON(r, &spec); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	t, err := s.deps.Tenants.Create(r.Context(), spec)
	if err != nil {
		s.securityError(w, err)
		return
	}
	s.audit(r, audit.Event{Type: audit.TypeTenantChanged, Outcome: audit.Success, Principal: principal(r).ID(), Tenant: t.Name, Reason: "created"})
	w.Header().Set("Location", "/api/v1/tenants/"+t.Name)
	writeJSON(w, http.StatusCreated, t)
}

// putTenant serves PUT /api/v1/tenants/{name}: replaces description and quotas.
func (s *Server) putTenant(w http.ResponseWriter, r *http.Request) {
	var spec auth.TenantSpec
	if err := decodeJSON(r, &spec); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if spec.Name == "" {
		spec.Name = r.PathValue("name")
	}
	if spec.Name != r.PathValue("name") {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name %q in the body differs from %q in the path", spec.Name, r.PathValue("name")))
		return
	}
	t, err := s.deps.Tenants.Put(r.Context(), spec)
	if err != nil {
		s.securityError(w, err)
		return
	}
	s.audit(r, audit.Event{Type: audit.TypeTenantChanged, Outcome: audit.Success, Principal: principal(r).ID(), Tenant: t.Name, Reason: "quotas replaced"})
	writeJSON(w, http.StatusOK, t)
}

// deleteTenant serves DELETE /api/v1/tenants/{name}: 204 once the tenant is gone; 409 naming
// what it still owns (devices, API keys, and what Deps.TenantUses count: rules, replays), which
// must be deleted first; 400 for the default tenant.
func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if auth.Normalize(name) == auth.DefaultTenant {
		s.securityError(w, s.deps.Tenants.Delete(r.Context(), name))
		return
	}
	if _, ok := s.deps.Tenants.Get(name); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("tenant %q not found", name))
		return
	}
	var owned []string
	count := func(n int, one, many string) {
		switch {
		case n == 1:
			owned = append(owned, "1 "+one)
		case n > 1:
			owned = append(owned, fmt.Sprintf("%d %s", n, many))
		}
	}
	if c, ok := s.deps.Devices.(deviceCounter); ok {
		count(c.CountTenant(name), "device", "devices")
	}
	if s.deps.Keys != nil {
		count(len(s.deps.Keys.List(name)), "API key", "API keys")
	}
	for _, use := range s.deps.TenantUses {
		one, many, n, err := use(r.Context(), name)
		if err != nil {
			s.log.Error("tenant use not counted", "tenant", name, "what", many, "err", err)
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("cannot count the %s of tenant %q: %v", many, name, err))
			return
		}
		count(n, one, many)
	}
	if len(owned) > 0 {
		writeError(w, http.StatusConflict, fmt.Sprintf("tenant %q still owns %s: delete them first", name, strings.Join(owned, ", ")))
		return
	}
	if err := s.deps.Tenants.Delete(r.Context(), name); err != nil {
		s.securityError(w, err)
		return
	}
	s.audit(r, audit.Event{Type: audit.TypeTenantChanged, Outcome: audit.Success, Principal: principal(r).ID(), Tenant: name, Reason: "deleted"})
	w.WriteHeader(http.StatusNoContent)
}

// tenantView is a tenant with its current device count.
type tenantView struct {
	auth.Tenant
	Devices *int `json:"devices,omitempty"`
}

func (s *Server) tenantView(t auth.Tenant) tenantView {
	v := tenantView{Tenant: t}
	if c, ok := s.deps.Devices.(deviceCounter); ok {
		n := c.CountTenant(t.Name)
		v.Devices = &n
	}
	return v
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	out := []tenantView{}
	for _, t := range s.deps.Tenants.List() {
		if p.Sees(t.Name) {
			out = append(out, s.tenantView(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": out})
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	t, ok := s.deps.Tenants.Get(name)
	if !ok || !principal(r).Sees(name) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("tenant %q not found", name))
		return
	}
	writeJSON(w, http.StatusOK, s.tenantView(t))
}

var auditType = regexp.MustCompile(`^[a-z]+(\.[a-z_]+)?$`)

// readAudit serves GET /api/v1/audit?since=&type=&tenant=&limit=: events oldest first. A
// tenant's admin key sees only that tenant's events.
func (s *Server) readAudit(w http.ResponseWriter, r *http.Request) {
	q := audit.Query{Type: r.URL.Query().Get("type"), Tenant: r.URL.Query().Get("tenant")}
	if q.Type != "" && !auditType.MatchString(q.Type) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("type %q: want an event type such as login, key.created or key", q.Type))
		return
	}
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := parseSince(v, time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		q.Since = t
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > audit.MaxRead {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want 1..%d, got %q", audit.MaxRead, v))
			return
		}
		q.Limit = n
	}
	if p := principal(r); p.Restricted() {
		q.Tenant = p.Tenant
	}
	events, err := s.deps.Audit.(AuditReader).Read(r.Context(), q)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if events == nil {
		events = []audit.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": events})
}

// parseSince reads an RFC 3339 time or a duration back from now ("15m").
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since: want an RFC 3339 time or a duration such as 15m, got %q", v)
}

// securityError maps key and tenant errors to statuses.
func (s *Server) securityError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, auth.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, auth.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, auth.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.log.Error("security store failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}

// auditRotation records a device token rotation.
func (s *Server) auditRotation(r *http.Request, id string) {
	p := principal(r)
	t := ""
	if d, err := s.deps.Devices.Get(id); err == nil {
		t = auth.Normalize(d.Tenant)
	}
	s.audit(r, audit.Event{Type: audit.TypeTokenRotated, Outcome: audit.Success, Principal: p.ID(), Tenant: t, Object: "device:" + id})
}
