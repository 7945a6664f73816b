package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/tributary-iot/tributary/simulator/fleet"
)

// Simulations runs virtual device fleets. *fleet.Manager satisfies it.
type Simulations interface {
	// Start parses a fleet definition (format "yaml" or "json") and starts it.
	Start(ctx context.Context, def []byte, format string) (fleet.Simulation, error)
	Get(ctx context.Context, id string) (fleet.Simulation, error)
	List(ctx context.Context) ([]fleet.Simulation, error)
	Truth(ctx context.Context, id string) ([]fleet.Truth, error)
	Stop(ctx context.Context, id string) (fleet.Simulation, error)
	// Delete stops the simulation and removes it (and, unless keepDevices, its devices).
	Delete(ctx context.Context, id string, keepDevices bool) error
}

// maxFleetFile caps a fleet definition.
const maxFleetFile = 1 << 20

// SimulationRoutes registers /api/v1/simulations; pass it in Deps.Extra.
func SimulationRoutes(sims Simulations, log *slog.Logger) func(*Router) {
	h := &simHandlers{sims: sims, log: log}
	return func(r *Router) {
		r.Handle("POST /api/v1/simulations", h.start)
		r.Handle("GET /api/v1/simulations", h.list)
		r.Handle("GET /api/v1/simulations/{id}", h.get)
		r.Handle("GET /api/v1/simulations/{id}/truth", h.truth)
		r.Handle("POST /api/v1/simulations/{id}/stop", h.stop)
		r.Handle("DELETE /api/v1/simulations/{id}", h.delete)
	}
}

type simHandlers struct {
	sims Simulations
	log  *slog.Logger
}

// start takes the fleet definition as the body: JSON when Content-Type is application/json,
// else YAML (application/yaml, text/yaml, application/x-yaml, text/plain or none).
func (h *simHandlers) start(w http.ResponseWriter, r *http.Request) {
	format := "yaml"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: %v", ct, err))
			return
		case mt == "application/json" || strings.HasSuffix(mt, "+json"):
			format = "json"
		case mt == "application/yaml" || mt == "application/x-yaml" || mt == "text/yaml" || mt == "text/x-yaml" || mt == "text/plain":
		default:
			writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send the fleet definition as application/yaml or application/json", ct))
			return
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFleetFile))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the fleet definition is larger than %d bytes", maxFleetFile))
			return
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	sim, err := h.sims.Start(r.Context(), data, format)
	if err != nil {
		simError(w, h.log, err)
		return
	}
	w.Header().Set("Location", "/api/v1/simulations/"+sim.ID)
	writeJSON(w, http.StatusCreated, sim)
}

func (h *simHandlers) list(w http.ResponseWriter, r *http.Request) {
	list, err := h.sims.List(r.Context())
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"simulations": list})
}

func (h *simHandlers) get(w http.ResponseWriter, r *http.Request) {
	sim, err := h.sims.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, sim)
}

func (h *simHandlers) truth(w http.ResponseWriter, r *http.Request) {
	truth, err := h.sims.Truth(r.Context(), r.PathValue("id"))
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"truth": truth})
}

func (h *simHandlers) stop(w http.ResponseWriter, r *http.Request) {
	sim, err := h.sims.Stop(r.Context(), r.PathValue("id"))
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, sim)
}

func (h *simHandlers) delete(w http.ResponseWriter, r *http.Request) {
	keep := r.URL.Query().Get("keep_devices")
	if err := h.sims.Delete(r.Context(), r.PathValue("id"), keep == "1" || keep == "true"); err != nil {
		simError(w, h.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
