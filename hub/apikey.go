package hub

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
)

const apiKeyFile = "api-key"

// loadOrCreateAPIKey returns the configured key, or the one kept in dataDir, or a new one that it
// writes there with mode 0600 and logs once so the operator can copy it.
func loadOrCreateAPIKey(configured, dataDir string, log *slog.Logger) (string, error) {
	if configured != "" {
		return configured, nil
	}
	path := filepath.Join(dataDir, apiKeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		if key := strings.TrimSpace(string(data)); key != "" {
			return key, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read API key: %w", err)
	}
	b := make([]byte, 24)
	rand.Read(b)
	key := "tb_" + base64.RawURLEncoding.EncodeToString(b)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write API key: %w", err)
	}
	log.Info("generated admin API key; it is shown only this once and kept in "+path, "api_key", key)
	return key, nil
}

// newSecurity opens the scoped API keys, the tenants and the audit log.
func (h *Hub) newSecurity(ctx context.Context, replicas int) error {
	js := h.bus.JetStream()
	var err error
	if h.keys, err = auth.NewKeys(ctx, js, replicas, h.log); err != nil {
		return err
	}
	if h.tenants, err = auth.NewTenants(ctx, js, replicas, h.log); err != nil {
		return err
	}
	if h.audit, err = audit.New(ctx, js, audit.Config{Replicas: replicas}, h.log); err != nil {
		return err
	}
	return nil
}

// APIRoutes lists every authenticated route of the HTTP API.
func (h *Hub) APIRoutes() []string { return h.api.Routes() }

// credentials authenticates devices against the registry and applications against the admin
// API key or a scoped key.
type credentials struct {
	devices *devices.Registry
	apiKey  string
	keys    *auth.Keys
	audit   *audit.Log
}

func (c credentials) AuthenticateDevice(ctx context.Context, id, token string) error {
	return c.devices.AuthenticateDevice(ctx, id, token)
}

func (c credentials) AuthenticateApp(_ context.Context, key string) error {
	_, err := c.AuthorizeApp(key)
	return err
}

// AuthorizeApp returns the principal of an application's key: the admin key or a scoped key.
func (c credentials) AuthorizeApp(key string) (auth.Principal, error) {
	if subtle.ConstantTimeCompare([]byte(key), []byte(c.apiKey)) == 1 {
		return auth.Admin, nil
	}
	if c.keys != nil && auth.IsKey(key) {
		if p, err := c.keys.Authenticate(key); err == nil {
			return p, nil
		}
	}
	return auth.Principal{}, devices.ErrUnauthorized
}

// CurrentKey is the principal of scoped key id while it is valid.
func (c credentials) CurrentKey(id string) (auth.Principal, bool) { return c.keys.Current(id) }

// TenantOf is the tenant owning device id ("" for an unknown device).
func (c credentials) TenantOf(id string) string { return c.devices.TenantOf(id) }

// Audit records a security event of a protocol adapter.
func (c credentials) Audit(e audit.Event) { c.audit.Record(e) }

// DeviceExists lets devices log in with a TLS client certificate naming them (see
// protocols/mqtt, protocols/coap).
func (c credentials) DeviceExists(id string) bool { return c.devices.Exists(id) }

// DevicePSK is the device's DTLS pre-shared key (see protocols/coap).
func (c credentials) DevicePSK(id string) ([]byte, bool) { return c.devices.DevicePSK(id) }

// AppPSK is the applications' DTLS pre-shared key: the admin API key.
func (c credentials) AppPSK() []byte { return []byte(c.apiKey) }
