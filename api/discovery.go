package api

import (
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

// POST /api/v1/discovery/scan {"groups":[...],"port":5683,"interfaces":["eth0"],"timeout":"2s",
// "query":"rt=sensor*"} → the endpoints that answered, kept as discovered devices.
func (m *management) scan(w http.ResponseWriter, r *http.Request) {
	var req ScanRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if req.Timeout < 0 || time.Duration(req.Timeout) > time.Minute {
		writeError(w, http.StatusBadRequest, "timeout: want up to 1m")
		return
	}
	results, err := m.Scanner.Scan(r.Context(), req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "scan: "+err.Error())
		return
	}
	found, err := m.Discovery.Record(r.Context(), results)
	if err != nil {
		m.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"discovered": found})
}

// GET /api/v1/discovery → every endpoint found by scans and not adopted yet.
func (m *management) listDiscovered(w http.ResponseWriter, r *http.Request) {
	list, err := m.Discovery.List(r.Context())
	if err != nil {
		m.fail(w, err)
		return
	}
	if list == nil {
		list = []devices.Discovered{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"discovered": list})
}

// POST /api/v1/discovery/{key}/adopt {"id":..., "name":..., ...} (all optional) → 201 with
// the new device and its token.
func (m *management) adopt(w http.ResponseWriter, r *http.Request) {
	var req createDeviceRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	d, token, err := m.Discovery.Adopt(r.Context(), r.PathValue("key"), req.device())
	if err != nil {
		m.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/devices/"+d.ID)
	writeJSON(w, http.StatusCreated, devices.Created{Device: d, Token: token})
}

// GET /api/v1/rd → the resource directory's registrations.
func (m *management) listRegistrations(w http.ResponseWriter, _ *http.Request) {
	regs := m.Directory.Registrations()
	if regs == nil {
		regs = []devices.Registration{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"registrations": regs})
}
