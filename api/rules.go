package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/rules"
)

// Rules keeps and runs rules. *rules.Manager satisfies it.
type Rules interface {
	Create(ctx context.Context, spec rules.Spec) (rules.Rule, error)
	Put(ctx context.Context, name string, spec rules.Spec) (rules.Rule, bool, error)
	Get(ctx context.Context, name string) (rules.Rule, error)
	List(ctx context.Context) ([]rules.Rule, error)
	Delete(ctx context.Context, name string) error
	Stats(ctx context.Context, name string) (rules.Stats, error)
	Results(ctx context.Context, name string, q rules.ResultsQuery) (rules.ResultsPage, error)
}

// RuleRoutes registers /api/v1/rules; pass it in Deps.Extra.
func RuleRoutes(rs Rules, log interface{ Error(string, ...any) }) func(*Router) {
	h := &ruleHandlers{rs: rs, log: log}
	return func(r *Router) {
		h.srv = r.s
		r.Handle("POST /api/v1/rules", h.create)
		r.Handle("GET /api/v1/rules", h.list)
		r.Handle("GET /api/v1/rules/{name}", h.owned(h.get))
		r.Handle("PUT /api/v1/rules/{name}", h.owned(h.put))
		r.Handle("DELETE /api/v1/rules/{name}", h.owned(h.delete))
		r.Handle("GET /api/v1/rules/{name}/stats", h.owned(h.stats))
		r.Handle("GET /api/v1/rules/{name}/results", h.owned(h.results))
	}
}

type ruleHandlers struct {
	rs  Rules
	log interface{ Error(string, ...any) }
	srv *Server // tenants
}

func (h *ruleHandlers) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, rules.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, rules.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, rules.ErrExists), errors.Is(err, rules.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		if h.log != nil {
			h.log.Error("rules request failed", "err", err)
		}
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// readSpec reads a rule body. Fields the hub derives (source, created_at, ...) are accepted and
// ignored, so a GET answer can be edited and sent back.
func readSpec(r *http.Request) (rules.Spec, error) {
	var body rules.Rule
	if err := decodeJSON(r, &body); err != nil {
		return rules.Spec{}, err
	}
	return body.Spec, nil
}

func (h *ruleHandlers) create(w http.ResponseWriter, r *http.Request) {
	var ok bool
	spec, err := readSpec(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if spec.Tenant, ok = h.srv.ownTenant(w, r, spec.Tenant); !ok {
		return
	}
	rule, err := h.rs.Create(r.Context(), spec)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/rules/"+rule.Name)
	writeJSON(w, http.StatusCreated, rule)
}

func (h *ruleHandlers) list(w http.ResponseWriter, r *http.Request) {
	list, err := h.rs.List(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	out := list[:0:0]
	for _, rule := range list {
		if visible(r, rule.TenantOf()) {
			out = append(out, rule)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": out})
}

func (h *ruleHandlers) get(w http.ResponseWriter, r *http.Request) {
	rule, err := h.rs.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

func (h *ruleHandlers) put(w http.ResponseWriter, r *http.Request) {
	var ok bool
	spec, err := readSpec(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if spec.Tenant, ok = h.srv.ownTenant(w, r, spec.Tenant); !ok {
		return
	}
	rule, created, err := h.rs.Put(r.Context(), r.PathValue("name"), spec)
	if err != nil {
		h.fail(w, err)
		return
	}
	writePut(w, created, "/api/v1/rules/"+rule.Name, rule)
}

// writePut answers a PUT that replaced (200) or created (201, with its location) v.
func writePut(w http.ResponseWriter, created bool, location string, v any) {
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", location)
	}
	writeJSON(w, status, v)
}

func (h *ruleHandlers) delete(w http.ResponseWriter, r *http.Request) {
	if err := h.rs.Delete(r.Context(), r.PathValue("name")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *ruleHandlers) stats(w http.ResponseWriter, r *http.Request) {
	st, err := h.rs.Stats(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// results answers ?from=&to= (RFC 3339, Unix milliseconds, or a negative duration relative to
// now such as -1h), ?limit= and ?after= (the "next" of the previous page).
func (h *ruleHandlers) results(w http.ResponseWriter, r *http.Request) {
	q, err := readResultsQuery(r, "from")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, err := h.rs.Results(r.Context(), r.PathValue("name"), q)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// readResultsQuery reads ?<from>= (from, or since for canaries) and ?to= (RFC 3339, Unix
// milliseconds, or a negative duration relative to now such as -1h), ?limit= and ?after= (the
// "next" of the previous page).
func readResultsQuery(r *http.Request, from string) (rules.ResultsQuery, error) {
	qv := r.URL.Query()
	var q rules.ResultsQuery
	now := time.Now()
	var err error
	if q.From, err = parseRuleTime(from, qv.Get(from), now); err != nil {
		return q, err
	}
	if q.To, err = parseRuleTime("to", qv.Get("to"), now); err != nil {
		return q, err
	}
	if s := qv.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > rules.MaxResults {
			return q, fmt.Errorf("limit: want a whole number from 1 to %d, got %q", rules.MaxResults, s)
		}
		q.Limit = n
	}
	if s := qv.Get("after"); s != "" {
		if q.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			return q, fmt.Errorf("after: want a stream sequence (the next of the previous page), got %q", s)
		}
	}
	return q, nil
}

func parseRuleTime(field, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if len(s) > 1 && s[0] == '-' {
		if d, err := time.ParseDuration(s); err == nil {
			return now.Add(d), nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time, Unix milliseconds or a negative duration like -1h", field, s)
}

// owned answers 404 for another tenant's rule, as for one that does not exist, before next.
func (h *ruleHandlers) owned(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if principal(r).Restricted() {
			name := r.PathValue("name")
			if rule, err := h.rs.Get(r.Context(), name); err == nil && !visible(r, rule.TenantOf()) {
				h.fail(w, fmt.Errorf("%w: %s", rules.ErrNotFound, name))
				return
			}
		}
		next(w, r)
	}
}
