package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/devices"
)

// etagOf is the ETag of a desired version: "n" (quoted).
func etagOf(v uint64) string { return strconv.Quote(strconv.FormatUint(v, 10)) }

// GET /api/v1/devices/{id}/state: reported, desired, delta and versions; the ETag is the
// desired version.
func (m *management) getState(w http.ResponseWriter, r *http.Request) {
	sh, err := m.Shadows.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		m.fail(w, err)
		return
	}
	w.Header().Set("ETag", etagOf(sh.Version))
	writeJSON(w, http.StatusOK, sh)
}

// PUT replaces the desired state, PATCH merges into it (RFC 7396 JSON Merge Patch: null
// removes a key).
func (m *management) putDesired(w http.ResponseWriter, r *http.Request)   { m.setDesired(w, r, false) }
func (m *management) patchDesired(w http.ResponseWriter, r *http.Request) { m.setDesired(w, r, true) }

// setDesired takes the document as the body (a JSON object of at most devices.MaxStateSize
// bytes) and the expected version from If-Match ("3" or 3) or ?version=3; without either the
// write is unconditional. A stale version is 409 with the current one.
func (m *management) setDesired(w http.ResponseWriter, r *http.Request, merge bool) {
	version, err := expectedVersion(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	doc, status, err := readObject(r, devices.MaxStateSize)
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	sh, err := m.Shadows.SetDesired(r.Context(), r.PathValue("id"), doc, version, merge)
	if err != nil {
		m.fail(w, err)
		return
	}
	w.Header().Set("ETag", etagOf(sh.Version))
	writeJSON(w, http.StatusOK, sh)
}

func expectedVersion(r *http.Request) (*uint64, error) {
	im := strings.TrimSpace(r.Header.Get("If-Match"))
	qv := r.URL.Query().Get("version")
	for k := range r.URL.Query() {
		if k != "version" {
			return nil, fmt.Errorf("unknown parameter %q: the expected version is ?version=n or If-Match", k)
		}
	}
	if im != "" && qv != "" {
		return nil, errors.New("give the expected version once: If-Match or ?version=")
	}
	raw, what := qv, "version"
	if im != "" {
		raw, what = strings.TrimPrefix(im, "W/"), "If-Match"
		if u, err := strconv.Unquote(raw); err == nil {
			raw = u
		}
	}
	if raw == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s: want the desired version, a whole number such as 3, got %q", what, raw)
	}
	return &v, nil
}

// readObject reads a body that must be one JSON object of at most limit bytes.
func readObject(r *http.Request, limit int) (map[string]any, int, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("request body: %v", err)
	}
	if len(data) > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("state documents are limited to %d bytes", limit)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, http.StatusBadRequest, errors.New("request body is empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var v any
	if err := dec.Decode(&v); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, http.StatusBadRequest, fmt.Errorf("request body is not valid JSON at byte %d: %v", syn.Offset, err)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("request body is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, http.StatusBadRequest, errors.New("request body has data after the JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, http.StatusBadRequest, fmt.Errorf("desired state must be a JSON object, got %s", jsonKind(v))
	}
	return obj, 0, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "something else"
}
