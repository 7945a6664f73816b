package api

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/devices"
)

// maxBulkBody caps a bulk request.
const maxBulkBody = 16 << 20

// csvColumns are the columns a bulk CSV may have; id is required, order is free.
var csvColumns = map[string]bool{"id": true, "name": true, "type": true, "tags": true, "lat": true, "lon": true, "metadata": true, "inactivity_timeout": true}

// bulkItemError names a bad device of a batch: its index and, for CSV, its line.
type bulkItemError struct {
	Index int    `json:"index"`
	Line  int    `json:"line,omitempty"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error"`
}

// POST /api/v1/devices:bulk creates many devices from a JSON array of device objects (as POST
// /api/v1/devices takes) or from CSV (Content-Type text/csv; header row naming the columns id,
// name, type, tags as k=v;k=v, lat, lon, metadata as a JSON object, inactivity_timeout). All
// or nothing: every device is checked first and any problem is answered 400 (409 when the
// only problems are IDs that exist) listing each bad device by index and line; else all are
// created and answered 201 with their tokens, shown once.
func (m *management) bulkCreate(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBulkBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	if len(data) > maxBulkBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxBulkBody))
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var ds []devices.Device
	isCSV := mt == "text/csv"
	var items []bulkItemError
	if isCSV {
		ds, items = parseBulkCSV(data)
	} else {
		if mt != "" && mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "send a JSON array (application/json) or CSV (text/csv)")
			return
		}
		ds, items = parseBulkJSON(data)
	}
	if items != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": items[0].Error, "errors": items})
		return
	}
	if len(ds) == 0 {
		writeError(w, http.StatusBadRequest, "no devices in the request")
		return
	}
	if m.srv != nil && !m.srv.ownDevices(w, r, ds) {
		return
	}
	created, err := m.Batch.CreateMany(r.Context(), ds)
	var be *devices.BatchError
	if errors.As(err, &be) {
		items := make([]bulkItemError, len(be.Items))
		for i, it := range be.Items {
			items[i] = bulkItemError{Index: it.Index, ID: it.ID, Error: it.Error}
			if isCSV {
				items[i].Line = it.Index + 2
			}
		}
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, devices.ErrExists):
			status = http.StatusConflict
		case !errors.Is(err, devices.ErrInvalid):
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"error": err.Error(), "errors": items})
		return
	}
	if err != nil {
		m.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"created": len(created), "devices": created})
}

func parseBulkJSON(data []byte) ([]devices.Device, []bulkItemError) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, []bulkItemError{{Index: -1, Error: "want a JSON array of device objects: " + err.Error()}}
	}
	ds := make([]devices.Device, len(raw))
	var bad []bulkItemError
	for i, item := range raw {
		var req createDeviceRequest
		dec := json.NewDecoder(bytes.NewReader(item))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			bad = append(bad, bulkItemError{Index: i, Error: fmt.Sprintf("device %d: %v", i, strings.TrimPrefix(err.Error(), "json: "))})
			continue
		}
		ds[i] = req.device()
	}
	return ds, bad
}

func parseBulkCSV(data []byte) ([]devices.Device, []bulkItemError) {
	rd := csv.NewReader(bytes.NewReader(data))
	rd.FieldsPerRecord = 0
	rd.TrimLeadingSpace = true
	header, err := rd.Read()
	if err != nil {
		return nil, []bulkItemError{{Index: -1, Line: 1, Error: "CSV header row: " + err.Error()}}
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !csvColumns[h] {
			return nil, []bulkItemError{{Index: -1, Line: 1, Error: fmt.Sprintf("CSV header: unknown column %q (use id, name, type, tags, lat, lon, metadata, inactivity_timeout)", h)}}
		}
		col[h] = i
	}
	if _, ok := col["id"]; !ok {
		return nil, []bulkItemError{{Index: -1, Line: 1, Error: "CSV header: the id column is required"}}
	}
	var ds []devices.Device
	var bad []bulkItemError
	for i := 0; ; i++ {
		rec, err := rd.Read()
		if err == io.EOF {
			break
		}
		line := i + 2
		if err != nil {
			bad = append(bad, bulkItemError{Index: i, Line: line, Error: fmt.Sprintf("line %d: %v", line, err)})
			break
		}
		get := func(name string) string {
			if j, ok := col[name]; ok && j < len(rec) {
				return strings.TrimSpace(rec[j])
			}
			return ""
		}
		d := devices.Device{ID: get("id"), Name: get("name"), Type: get("type")}
		fail := func(format string, args ...any) {
			bad = append(bad, bulkItemError{Index: i, Line: line, ID: d.ID, Error: fmt.Sprintf("line %d: ", line) + fmt.Sprintf(format, args...)})
		}
		ok := true
		if tags := get("tags"); tags != "" {
			d.Tags = map[string]string{}
			for kv := range strings.SplitSeq(tags, ";") {
				k, v, found := strings.Cut(kv, "=")
				if !found || strings.TrimSpace(k) == "" {
					fail("tags: want k=v;k=v, got %q", tags)
					ok = false
					break
				}
				d.Tags[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		lat, lon := get("lat"), get("lon")
		if lat != "" || lon != "" {
			la, err1 := strconv.ParseFloat(lat, 64)
			lo, err2 := strconv.ParseFloat(lon, 64)
			if err1 != nil || err2 != nil {
				fail("lat and lon: want two numbers, got %q and %q", lat, lon)
				ok = false
			} else {
				d.Location = &devices.Location{Lat: la, Lon: lo}
			}
		}
		if meta := get("metadata"); meta != "" {
			if err := json.Unmarshal([]byte(meta), &d.Metadata); err != nil || d.Metadata == nil {
				fail("metadata: want a JSON object, got %q", meta)
				ok = false
			}
		}
		if t := get("inactivity_timeout"); t != "" {
			v, err := devices.ParseDuration(t)
			if err != nil {
				fail("inactivity_timeout: %v", err)
				ok = false
			}
			d.InactivityTimeout = v
		}
		if ok {
			ds = append(ds, d)
		} else {
			ds = append(ds, devices.Device{})
		}
	}
	return ds, bad
}
