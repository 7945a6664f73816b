package api

import (
	"fmt"
	"net/http"

	"github.com/tributary-iot/tributary/devices"
)

type typeRequest struct {
	InactivityTimeout devices.Duration `json:"inactivity_timeout"`
	Limits            devices.Limits   `json:"limits"`
}

func (m *management) listTypes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"types": m.Types.List()})
}

func (m *management) getType(w http.ResponseWriter, r *http.Request) {
	t, ok := m.Types.Get(r.PathValue("type"))
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no settings for device type %q", r.PathValue("type")))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// PUT /api/v1/device-types/{type} {"inactivity_timeout": "10m", "limits": {"rate": 10}}.
func (m *management) putType(w http.ResponseWriter, r *http.Request) {
	var req typeRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	t, err := m.Types.Put(r.Context(), devices.TypeSettings{Type: r.PathValue("type"), InactivityTimeout: req.InactivityTimeout, Limits: req.Limits})
	if err != nil {
		m.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (m *management) deleteType(w http.ResponseWriter, r *http.Request) {
	if err := m.Types.Delete(r.Context(), r.PathValue("type")); err != nil {
		m.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
