package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

// The device-management endpoints beyond the registry: shadows, commands, liveness (types and
// ping), provisioning keys, bulk creation, discovery and the resource directory. Each
// dependency is a small interface that a part of *devices.Manager satisfies; nil ones leave
// their routes out.

// ShadowStore reads and writes device shadows; *devices.Shadows satisfies it.
type ShadowStore interface {
	Get(ctx context.Context, id string) (devices.Shadow, error)
	SetDesired(ctx context.Context, id string, doc map[string]any, version *uint64, merge bool) (devices.Shadow, error)
}

// CommandStore sends and tracks commands; *devices.Commands satisfies it.
type CommandStore interface {
	Send(ctx context.Context, device, name string, payload json.RawMessage, ttl time.Duration) (devices.Command, error)
	Get(ctx context.Context, device, id string) (devices.Command, error)
	List(ctx context.Context, device, status string, limit int) ([]devices.Command, error)
}

// TypeStore keeps per-type settings; *devices.Types satisfies it.
type TypeStore interface {
	Get(name string) (devices.TypeSettings, bool)
	List() []devices.TypeSettings
	Put(ctx context.Context, t devices.TypeSettings) (devices.TypeSettings, error)
	Delete(ctx context.Context, name string) error
}

// KeyStore manages provisioning keys; *devices.Provisioning satisfies it.
type KeyStore interface {
	CreateKey(ctx context.Context, k devices.ProvisioningKey) (devices.ProvisioningKey, string, error)
	Keys(ctx context.Context) ([]devices.ProvisioningKey, error)
	Key(ctx context.Context, id string) (devices.ProvisioningKey, error)
	DeleteKey(ctx context.Context, id string) error
}

// DiscoveryStore keeps discovered endpoints; *devices.Discovery satisfies it.
type DiscoveryStore interface {
	Record(ctx context.Context, results []devices.ScanResult) ([]devices.Discovered, error)
	List(ctx context.Context) ([]devices.Discovered, error)
	Adopt(ctx context.Context, key string, d devices.Device) (devices.Device, string, error)
}

// Scanner runs an active multicast scan; the hub adapts *coap.Scanner to it.
type Scanner interface {
	Scan(ctx context.Context, req ScanRequest) ([]devices.ScanResult, error)
}

// ScanRequest is the body of POST /api/v1/discovery/scan.
type ScanRequest struct {
	Groups     []string         `json:"groups,omitempty"`
	Port       int              `json:"port,omitempty"`
	Interfaces []string         `json:"interfaces,omitempty"`
	Timeout    devices.Duration `json:"timeout,omitempty"`
	Query      string           `json:"query,omitempty"`
}

// Directory lists resource directory registrations; *devices.Directory satisfies it.
type Directory interface {
	Registrations() []devices.Registration
}

// BatchCreator creates many devices at once; *devices.Registry satisfies it.
type BatchCreator interface {
	CreateMany(ctx context.Context, ds []devices.Device) ([]devices.Created, error)
}

// MQTTConnections tells whether a device holds an MQTT connection to this instance;
// *mqtt.Server satisfies it through the hub.
type MQTTConnections interface {
	DeviceConnection(id string) (MQTTConnection, bool)
}

// MQTTConnection describes a device's MQTT connection.
type MQTTConnection struct {
	ClientID        string `json:"client_id"`
	RemoteAddr      string `json:"remote_addr"`
	ProtocolVersion byte   `json:"protocol_version"`
	KeepAlive       int    `json:"keep_alive_s"`
}

// CoAPPinger pings a CoAP address; *coap.Server satisfies it.
type CoAPPinger interface {
	Ping(ctx context.Context, addr string) (time.Duration, error)
}

// ManagementDeps are the parts ManagementRoutes serves.
type ManagementDeps struct {
	Devices   DeviceStore
	Batch     BatchCreator
	Presence  func(id string) devices.Presence
	Shadows   ShadowStore
	Commands  CommandStore
	Types     TypeStore
	Keys      KeyStore
	Discovery DiscoveryStore
	Scanner   Scanner
	Directory Directory
	MQTT      MQTTConnections
	CoAP      CoAPPinger
}

type management struct {
	ManagementDeps
	log *slog.Logger
	srv *Server // tenants and quotas of bulk creation
}

// ManagementRoutes registers the device-management endpoints (see the package README for
// their shapes).
func ManagementRoutes(d ManagementDeps, log *slog.Logger) func(*Router) {
	m := &management{ManagementDeps: d, log: log.With("component", "api")}
	return func(r *Router) {
		m.srv = r.s
		if m.Batch != nil {
			r.Handle("POST /api/v1/devices:bulk", m.bulkCreate)
		}
		if m.Shadows != nil {
			r.Handle("GET /api/v1/devices/{id}/state", m.getState)
			r.Handle("PUT /api/v1/devices/{id}/state/desired", m.putDesired)
			r.Handle("PATCH /api/v1/devices/{id}/state/desired", m.patchDesired)
		}
		if m.Commands != nil {
			r.Handle("POST /api/v1/devices/{id}/commands/{name}", m.sendCommand)
			r.Handle("GET /api/v1/devices/{id}/commands", m.listCommands)
			r.Handle("GET /api/v1/devices/{id}/commands/{cmd}", m.getCommand)
		}
		if m.Presence != nil {
			r.Handle("POST /api/v1/devices/{id}/ping", m.ping)
		}
		if m.Types != nil {
			r.Handle("GET /api/v1/device-types", m.listTypes)
			r.Handle("GET /api/v1/device-types/{type}", m.getType)
			r.Handle("PUT /api/v1/device-types/{type}", m.putType)
			r.Handle("DELETE /api/v1/device-types/{type}", m.deleteType)
		}
		if m.Keys != nil {
			r.Handle("POST /api/v1/provisioning-keys", m.createKey)
			r.Handle("GET /api/v1/provisioning-keys", m.listKeys)
			r.Handle("GET /api/v1/provisioning-keys/{key}", m.getKey)
			r.Handle("DELETE /api/v1/provisioning-keys/{key}", m.deleteKey)
		}
		if m.Discovery != nil {
			r.Handle("GET /api/v1/discovery", m.listDiscovered)
			r.Handle("POST /api/v1/discovery/{key}/adopt", m.adopt)
			if m.Scanner != nil {
				r.Handle("POST /api/v1/discovery/scan", m.scan)
			}
		}
		if m.Directory != nil {
			r.Handle("GET /api/v1/rd", m.listRegistrations)
		}
	}
}

func (m *management) fail(w http.ResponseWriter, err error) { writeDeviceError(w, m.log, err) }
