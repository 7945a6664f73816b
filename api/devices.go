package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

type createDeviceRequest struct {
	ID                string            `json:"id"`
	Name              string            `json:"name"`
	Type              string            `json:"type"`
	Tags              map[string]string `json:"tags"`
	Location          *devices.Location `json:"location"`
	Metadata          map[string]any    `json:"metadata"`
	InactivityTimeout devices.Duration  `json:"inactivity_timeout"`
	Limits            devices.Limits    `json:"limits"`
	Tenant            string            `json:"tenant"`
}

func (r createDeviceRequest) device() devices.Device {
	return devices.Device{ID: r.ID, Name: r.Name, Type: r.Type, Tags: r.Tags, Location: r.Location, Metadata: r.Metadata, InactivityTimeout: r.InactivityTimeout, Limits: r.Limits, Tenant: r.Tenant}
}

type deviceWithToken struct {
	deviceView
	Token string `json:"token"`
}

// presenceSource is an optional capability of the DeviceStore (*devices.Manager has it): with
// it every device in an answer carries its liveness.
type presenceSource interface {
	Presence(id string) devices.Presence
}

// deviceView is a device as the API shows it: the record plus, when liveness is tracked,
// status, last_seen, protocol and remote_addr.
type deviceView struct {
	devices.Device
	*livenessView
}

type livenessView struct {
	Status      string     `json:"status"`
	LastSeen    *time.Time `json:"last_seen"`
	Protocol    string     `json:"protocol"`
	RemoteAddr  string     `json:"remote_addr"`
	StatusSince *time.Time `json:"status_since,omitempty"`
}

func (s *Server) view(d devices.Device) deviceView {
	v := deviceView{Device: d}
	if ps, ok := s.deps.Devices.(presenceSource); ok {
		p := ps.Presence(d.ID)
		v.livenessView = &livenessView{Status: p.Status, LastSeen: p.LastSeen, Protocol: p.Protocol, RemoteAddr: p.RemoteAddr, StatusSince: p.Since}
	}
	return v
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request) {
	var req createDeviceRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ds := []devices.Device{req.device()}
	if !s.ownDevices(w, r, ds) {
		return
	}
	d, token, err := s.deps.Devices.Create(r.Context(), ds[0])
	if err != nil {
		s.deviceError(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/devices/"+d.ID)
	writeJSON(w, http.StatusCreated, deviceWithToken{deviceView: s.view(d), Token: token})
}

type deviceList struct {
	Devices []deviceView `json:"devices"`
	Next    string       `json:"next,omitempty"`
}

// listParams are the query parameters GET /api/v1/devices takes.
var listParams = map[string]bool{"type": true, "tag": true, "meta": true, "status": true, "q": true, "near": true, "bbox": true, "limit": true, "cursor": true, "tenant": true}

// parseFilter reads the list query; errors name the parameter.
func parseFilter(q url.Values) (devices.Filter, error) {
	f := devices.Filter{Type: q.Get("type"), Query: q.Get("q"), After: q.Get("cursor"), Limit: 100}
	for k, vs := range q {
		if !listParams[k] {
			return f, fmt.Errorf("unknown parameter %q: filter with type, tag, meta, status, q, near, bbox, tenant; page with limit and cursor", k)
		}
		if len(vs) > 1 && k != "tag" && k != "meta" {
			return f, fmt.Errorf("%s: give it once", k)
		}
	}
	pairs := func(name string) (map[string]string, error) {
		var m map[string]string
		for _, kv := range q[name] {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || k == "" {
				return nil, fmt.Errorf("%s: want key:value, got %s", name, strconv.Quote(kv))
			}
			if m == nil {
				m = map[string]string{}
			}
			m[k] = v
		}
		return m, nil
	}
	var err error
	if f.Tags, err = pairs("tag"); err != nil {
		return f, err
	}
	if f.Meta, err = pairs("meta"); err != nil {
		return f, err
	}
	if c := f.After; c != "" && !devices.ValidID(c) {
		return f, fmt.Errorf("cursor: %s is not a device ID (use the next of the previous page)", strconv.Quote(c))
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return f, fmt.Errorf("limit: want a whole number from 1 to 1000, got %s", strconv.Quote(l))
		}
		f.Limit = n
	}
	if st := q.Get("status"); st != "" {
		if st != devices.StatusOnline && st != devices.StatusOffline {
			return f, fmt.Errorf("status: want online or offline, got %s", strconv.Quote(st))
		}
		f.Status = st
	}
	if n := q.Get("near"); n != "" {
		v, err := floats(n, 3)
		if err != nil || v[0] < -90 || v[0] > 90 || v[1] < -180 || v[1] > 180 || v[2] <= 0 {
			return f, fmt.Errorf("near: want lat,lon,radius_km (lat -90..90, lon -180..180, radius > 0), got %s", strconv.Quote(n))
		}
		f.Near = &devices.Circle{Lat: v[0], Lon: v[1], RadiusKm: v[2]}
	}
	if b := q.Get("bbox"); b != "" {
		v, err := floats(b, 4)
		if err != nil || v[1] < -90 || v[3] > 90 || v[1] > v[3] || v[0] < -180 || v[0] > 180 || v[2] < -180 || v[2] > 180 {
			return f, fmt.Errorf("bbox: want min_lon,min_lat,max_lon,max_lat (GeoJSON order, min_lat ≤ max_lat), got %s", strconv.Quote(b))
		}
		f.BBox = &devices.BBox{MinLon: v[0], MinLat: v[1], MaxLon: v[2], MaxLat: v[3]}
	}
	return f, nil
}

func floats(s string, n int) ([]float64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, fmt.Errorf("want %d numbers", n)
	}
	out := make([]float64, n)
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%q is not a number", p)
		}
		out[i] = v
	}
	return out, nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Status != "" {
		if _, tracked := s.deps.Devices.(presenceSource); !tracked {
			if s.deps.Status == nil {
				writeError(w, http.StatusNotImplemented, "status filtering needs device liveness, which this hub does not track")
				return
			}
			f.IDs, f.Status = s.deps.Status(f.Status == devices.StatusOnline), ""
		}
	}
	f.Tenant = r.URL.Query().Get("tenant")
	if p := principal(r); p.Restricted() {
		f.Tenant = p.Tenant
	}
	list, next := s.deps.Devices.List(f)
	out := deviceList{Devices: make([]deviceView, len(list)), Next: next}
	for i, d := range list {
		out.Devices[i] = s.view(d)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.deps.Devices.Get(r.PathValue("id"))
	if err != nil {
		s.deviceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(d))
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
	writeJSON(w, http.StatusOK, s.view(d))
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
	s.auditRotation(r, id)
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "token": token})
}

// deviceError translates registry errors.
func (s *Server) deviceError(w http.ResponseWriter, err error) { writeDeviceError(w, s.log, err) }

// writeDeviceError answers a devices error with its status: 400 invalid, 401 unauthorized, 403
// not allowed, 404 not found, 409 exists or conflict (with "version" for a stale desired
// version), 410 expired, 413 too large, 503 storage unavailable, 500 anything else.
func writeDeviceError(w http.ResponseWriter, log *slog.Logger, err error) {
	var vc *devices.VersionConflictError
	var be *devices.BatchError
	switch {
	case errors.As(err, &vc):
		w.Header().Set("ETag", etagOf(vc.Current))
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "version": vc.Current})
	case errors.As(err, &be):
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, devices.ErrExists):
			status = http.StatusConflict
		case !errors.Is(err, devices.ErrInvalid):
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"error": err.Error(), "errors": be.Items})
	case errors.Is(err, devices.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, devices.ErrUnauthorized):
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, devices.ErrForbidden), errors.Is(err, devices.ErrExhausted):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, devices.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, devices.ErrExists), errors.Is(err, devices.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, devices.ErrExpired):
		writeError(w, http.StatusGone, err.Error())
	case errors.Is(err, devices.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, devices.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		log.Error("device management", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
