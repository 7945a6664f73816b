package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

type sendCommandRequest struct {
	Payload json.RawMessage `json:"payload"`
	// TTL: how long the command may wait for delivery and an answer ("10m"; default 1h).
	TTL devices.Duration `json:"ttl"`
}

// POST /api/v1/devices/{id}/commands/{name} → 202 with the command record.
func (m *management) sendCommand(w http.ResponseWriter, r *http.Request) {
	var req sendCommandRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	cmd, err := m.Commands.Send(r.Context(), r.PathValue("id"), r.PathValue("name"), req.Payload, time.Duration(req.TTL))
	if err != nil {
		m.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/devices/"+cmd.Device+"/commands/"+cmd.ID)
	writeJSON(w, http.StatusAccepted, cmd)
}

var commandStatuses = map[string]bool{devices.CommandPending: true, devices.CommandDelivered: true, devices.CommandAnswered: true, devices.CommandExpired: true}

// GET /api/v1/devices/{id}/commands?status=&limit= → the device's commands, newest first.
func (m *management) listCommands(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	if status != "" && !commandStatuses[status] {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("status: want pending, delivered, answered or expired, got %q", status))
		return
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: want a whole number from 1 to 1000, got "+strconv.Quote(l))
			return
		}
		limit = n
	}
	list, err := m.Commands.List(r.Context(), r.PathValue("id"), status, limit)
	if err != nil {
		m.fail(w, err)
		return
	}
	if list == nil {
		list = []devices.Command{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"commands": list})
}

// GET /api/v1/devices/{id}/commands/{cmd}.
func (m *management) getCommand(w http.ResponseWriter, r *http.Request) {
	cmd, err := m.Commands.Get(r.Context(), r.PathValue("id"), r.PathValue("cmd"))
	if err != nil {
		m.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, cmd)
}
