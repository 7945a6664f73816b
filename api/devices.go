package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/devices"
)

type createDeviceRequest struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Tags     map[string]string `json:"tags"`
	Location *devices.Location `json:"location"`
	Metadata map[string]any    `json:"metadata"`
}

type deviceWithToken struct {
	devices.Device
	Token string `json:"token"`
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request) {
	var req createDeviceRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d, token, err := s.deps.Devices.Create(r.Context(), devices.Device{
		ID: req.ID, Name: req.Name, Type: req.Type, Tags: req.Tags, Location: req.Location, Metadata: req.Metadata,
	})
	if err != nil {
		s.deviceError(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/devices/"+d.ID)
	writeJSON(w, http.StatusCreated, deviceWithToken{Device: d, Token: token})
}

type deviceList struct {
	Devices []devices.Device `json:"devices"`
	Next    string           `json:"next,omitempty"`
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := devices.Filter{Type: q.Get("type"), Query: q.Get("q"), After: q.Get("cursor"), Limit: 100}
	for _, tag := range q["tag"] {
		k, v, ok := strings.Cut(tag, ":")
		if !ok || k == "" {
			writeError(w, http.StatusBadRequest, "tag: want key:value, got "+strconv.Quote(tag))
			return
		}
		if f.Tags == nil {
			f.Tags = map[string]string{}
		}
		f.Tags[k] = v
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: want a whole number from 1 to 1000, got "+strconv.Quote(l))
			return
		}
		f.Limit = n
	}
	if st := q.Get("status"); st != "" {
		if st != "online" && st != "offline" {
			writeError(w, http.StatusBadRequest, "status: want online or offline, got "+strconv.Quote(st))
			return
		}
		if s.deps.Status == nil {
			writeError(w, http.StatusNotImplemented, "status filtering needs device liveness, which this hub does not track")
			return
		}
		f.IDs = s.deps.Status(st == "online")
	}
	list, next := s.deps.Devices.List(f)
	writeJSON(w, http.StatusOK, deviceList{Devices: list, Next: next})
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.deps.Devices.Get(r.PathValue("id"))
	if err != nil {
		s.deviceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) patchDevice(w http.ResponseWriter, r *http.Request) {
	var p devices.Patch
	if err := decodeJSON(r, &p); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d, err := s.deps.Devices.Update(r.Context(), r.PathValue("id"), p)
	if err != nil {
		s.deviceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	if err := s.deps.Devices.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.deviceError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	token, err := s.deps.Devices.RotateToken(r.Context(), id)
	if err != nil {
		s.deviceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "token": token})
}

// deviceError translates registry errors.
func (s *Server) deviceError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, devices.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, devices.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, devices.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, devices.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.log.Error("device registry", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
