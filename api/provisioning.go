package api

import (
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

type createKeyRequest struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Tags     map[string]string `json:"tags"`
	IDPrefix string            `json:"id_prefix"`
	// ExpiresAt (RFC 3339) or TTL ("24h"): when the key stops working; neither: never.
	ExpiresAt *time.Time       `json:"expires_at"`
	TTL       devices.Duration `json:"ttl"`
	MaxUses   int              `json:"max_uses"`
}

type keyWithSecret struct {
	devices.ProvisioningKey
	// Key is what devices present: "<id>.<secret>", shown only in this answer.
	Key string `json:"key"`
}

// POST /api/v1/provisioning-keys → 201 with the key's secret, shown once.
func (m *management) createKey(w http.ResponseWriter, r *http.Request) {
	var req createKeyRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	k := devices.ProvisioningKey{Name: req.Name, Type: req.Type, Tags: req.Tags, IDPrefix: req.IDPrefix, ExpiresAt: req.ExpiresAt, MaxUses: req.MaxUses}
	switch {
	case req.ExpiresAt != nil && req.TTL != 0:
		writeError(w, http.StatusBadRequest, "give expires_at or ttl, not both")
		return
	case req.TTL < 0:
		writeError(w, http.StatusBadRequest, "ttl must be positive")
		return
	case req.TTL > 0:
		t := time.Now().Add(time.Duration(req.TTL)).UTC()
		k.ExpiresAt = &t
	}
	key, secret, err := m.Keys.CreateKey(r.Context(), k)
	if err != nil {
		m.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/provisioning-keys/"+key.ID)
	writeJSON(w, http.StatusCreated, keyWithSecret{ProvisioningKey: key, Key: secret})
}

func (m *management) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := m.Keys.Keys(r.Context())
	if err != nil {
		m.fail(w, err)
		return
	}
	if keys == nil {
		keys = []devices.ProvisioningKey{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (m *management) getKey(w http.ResponseWriter, r *http.Request) {
	k, err := m.Keys.Key(r.Context(), r.PathValue("key"))
	if err != nil {
		m.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}

func (m *management) deleteKey(w http.ResponseWriter, r *http.Request) {
	if err := m.Keys.DeleteKey(r.Context(), r.PathValue("key")); err != nil {
		m.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
