package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/rules"
)

// Canaries keeps canaries, a kind of rule (rules/canary.go). *rules.Manager satisfies it.
type Canaries interface {
	CreateCanary(ctx context.Context, spec rules.CanarySpec) (rules.Canary, error)
	PutCanary(ctx context.Context, name string, spec rules.CanarySpec) (rules.Canary, bool, error)
	GetCanary(ctx context.Context, name string) (rules.Canary, error)
	ListCanaries(ctx context.Context) ([]rules.Canary, error)
	DeleteCanary(ctx context.Context, name string) error
	CanaryResults(ctx context.Context, name string, q rules.ResultsQuery) (rules.ResultsPage, error)
}

// CanaryRoutes registers /api/v1/canaries; pass it in Deps.Extra.
func CanaryRoutes(cs Canaries, log interface{ Error(string, ...any) }) func(*Router) {
	h := &canaryHandlers{cs: cs, rh: &ruleHandlers{log: log}}
	return func(r *Router) {
		r.Handle("POST /api/v1/canaries", h.create)
		r.Handle("GET /api/v1/canaries", h.list)
		r.Handle("GET /api/v1/canaries/{name}", h.get)
		r.Handle("PUT /api/v1/canaries/{name}", h.put)
		r.Handle("DELETE /api/v1/canaries/{name}", h.delete)
		r.Handle("GET /api/v1/canaries/{name}/results", h.results)
	}
}

type canaryHandlers struct {
	cs Canaries
	rh *ruleHandlers // for its error mapping
}

// readSpec decodes a canary definition for create or put. A GET answer (with the derived sql,
// latest, ...) is accepted: derived fields are ignored. A key confined to a tenant writes
// canaries of that tenant only.
func (h *canaryHandlers) readSpec(w http.ResponseWriter, r *http.Request) (rules.CanarySpec, bool) {
	var body rules.Canary
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return rules.CanarySpec{}, false
	}
	if p := principal(r); p.Restricted() {
		if body.Tenant == "" {
			body.Tenant = p.Tenant
		}
		if auth.Normalize(body.Tenant) != p.Tenant {
			writeError(w, http.StatusForbidden, fmt.Sprintf("API key %q is confined to tenant %s and cannot write canaries of tenant %s", p.Name, p.Tenant, body.Tenant))
			return rules.CanarySpec{}, false
		}
	}
	return body.CanarySpec, true
}

func (h *canaryHandlers) create(w http.ResponseWriter, r *http.Request) {
	spec, ok := h.readSpec(w, r)
	if !ok {
		return
	}
	c, err := h.cs.CreateCanary(r.Context(), spec)
	if err != nil {
		h.rh.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/canaries/"+c.Name)
	writeJSON(w, http.StatusCreated, c)
}

func (h *canaryHandlers) list(w http.ResponseWriter, r *http.Request) {
	all, err := h.cs.ListCanaries(r.Context())
	if err != nil {
		h.rh.fail(w, err)
		return
	}
	p := principal(r)
	list := make([]rules.Canary, 0, len(all))
	for _, c := range all {
		if p.Sees(c.Tenant) {
			list = append(list, c)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"canaries": list})
}

func (h *canaryHandlers) get(w http.ResponseWriter, r *http.Request) {
	c, ok := h.visible(w, r)
	if ok {
		writeJSON(w, http.StatusOK, c)
	}
}

// visible returns the canary of the path when the principal may see it; another tenant's
// canary is not found (404, as an unknown name).
func (h *canaryHandlers) visible(w http.ResponseWriter, r *http.Request) (rules.Canary, bool) {
	c, err := h.cs.GetCanary(r.Context(), r.PathValue("name"))
	if err == nil && !principal(r).Sees(c.Tenant) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no canary named %q", r.PathValue("name")))
		return rules.Canary{}, false
	}
	if err != nil {
		h.rh.fail(w, err)
		return rules.Canary{}, false
	}
	return c, true
}

// put replaces a canary (200) or creates it (201); another tenant's canary is not found.
func (h *canaryHandlers) put(w http.ResponseWriter, r *http.Request) {
	spec, ok := h.readSpec(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if c, err := h.cs.GetCanary(r.Context(), name); err == nil && !principal(r).Sees(c.Tenant) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no canary named %q", name))
		return
	}
	c, created, err := h.cs.PutCanary(r.Context(), name, spec)
	if err != nil {
		h.rh.fail(w, err)
		return
	}
	writePut(w, created, "/api/v1/canaries/"+c.Name, c)
}

func (h *canaryHandlers) delete(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.visible(w, r); !ok {
		return
	}
	if err := h.cs.DeleteCanary(r.Context(), r.PathValue("name")); err != nil {
		h.rh.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// results answers ?since= (or from=), ?to=, ?limit= and ?after=, as a rule's results do.
func (h *canaryHandlers) results(w http.ResponseWriter, r *http.Request) {
	from := "since"
	if r.URL.Query().Get("since") == "" {
		from = "from"
	}
	q, err := readResultsQuery(r, from)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := h.visible(w, r); !ok {
		return
	}
	page, err := h.cs.CanaryResults(r.Context(), r.PathValue("name"), q)
	if err != nil {
		h.rh.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
