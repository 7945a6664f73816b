package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices"
)

// TenantsBucket is the KV bucket of tenants, keyed by name.
const TenantsBucket = "tenants"

// Tenant is one customer of the hub: it owns devices, rules, replays, simulations and keys.
type Tenant struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Quotas      Quotas    `json:"quotas"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Quotas limit a tenant; zero values mean no limit.
type Quotas struct {
	// MaxDevices caps how many devices the tenant may register.
	MaxDevices int `json:"max_devices,omitempty"`
	// MessageRate is messages per second over all the tenant's devices, with MessageBurst;
	// admission control enforces it (see TenantOf on the device registry).
	MessageRate  float64 `json:"message_rate,omitempty"`
	MessageBurst int     `json:"message_burst,omitempty"`
	// BytesRate is payload bytes per second over all the tenant's devices.
	BytesRate float64 `json:"bytes_rate,omitempty"`
	// Retention is how long the tenant's devices' messages stay in the IOT stream (purged by
	// streams.Retainer; it cannot exceed the hub's --retention and does not apply to InfluxDB,
	// see README "Tenants").
	Retention devices.Duration `json:"retention,omitempty"`
}

func (q Quotas) validate() error {
	switch {
	case q.MaxDevices < 0:
		return fmt.Errorf("%w: quotas.max_devices must not be negative, got %d", ErrInvalid, q.MaxDevices)
	case q.MessageRate < 0 || q.MessageRate > 1e9:
		return fmt.Errorf("%w: quotas.message_rate must be 0..1e9 messages/s, got %v", ErrInvalid, q.MessageRate)
	case q.MessageBurst < 0:
		return fmt.Errorf("%w: quotas.message_burst must not be negative, got %d", ErrInvalid, q.MessageBurst)
	case q.BytesRate < 0:
		return fmt.Errorf("%w: quotas.bytes_rate must not be negative, got %v", ErrInvalid, q.BytesRate)
	case q.Retention < 0:
		return fmt.Errorf("%w: quotas.retention must not be negative, got %s", ErrInvalid, q.Retention)
	}
	return nil
}

// TenantSpec is what a tenant is created or replaced from.
type TenantSpec struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Quotas      Quotas `json:"quotas"`
}

func (s TenantSpec) validate() error {
	if !devices.ValidID(s.Name) {
		return fmt.Errorf("%w: name %q must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", ErrInvalid, s.Name)
	}
	if len(s.Description) > MaxKeyDescLen || !utf8.ValidString(s.Description) {
		return fmt.Errorf("%w: description must be valid UTF-8 of at most %d bytes", ErrInvalid, MaxKeyDescLen)
	}
	return s.Quotas.validate()
}

// Tenants stores tenants with a current in-memory view on every instance. The default tenant
// always exists, without quotas unless it has been given some.
type Tenants struct {
	*view[Tenant] // by name
	now           func() time.Time
}

// NewTenants opens (or creates) the bucket and loads every tenant.
func NewTenants(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*Tenants, error) {
	v, err := openView[Tenant](ctx, js, TenantsBucket, "Tributary tenants", "tenant", replicas, log.With("component", "tenants"))
	if err != nil {
		return nil, err
	}
	return &Tenants{view: v, now: time.Now}, nil
}

// Create stores a new tenant.
func (t *Tenants) Create(ctx context.Context, spec TenantSpec) (Tenant, error) {
	if err := spec.validate(); err != nil {
		return Tenant{}, err
	}
	if _, ok := t.Get(spec.Name); ok {
		return Tenant{}, fmt.Errorf("%w: tenant %q", ErrExists, spec.Name)
	}
	now := t.now().UTC()
	v := Tenant{Name: spec.Name, Description: spec.Description, Quotas: spec.Quotas, CreatedAt: now, UpdatedAt: now}
	data, err := json.Marshal(v)
	if err != nil {
		return Tenant{}, err
	}
	if _, err := t.kv.Create(ctx, v.Name, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Tenant{}, fmt.Errorf("%w: tenant %q", ErrExists, spec.Name)
		}
		return Tenant{}, fmt.Errorf("store tenant %s: %w", v.Name, err)
	}
	t.set(v.Name, v)
	return v, nil
}

// Put replaces an existing tenant's description and quotas.
func (t *Tenants) Put(ctx context.Context, spec TenantSpec) (Tenant, error) {
	if err := spec.validate(); err != nil {
		return Tenant{}, err
	}
	old, ok := t.Get(spec.Name)
	if !ok {
		return Tenant{}, fmt.Errorf("%w: tenant %q", ErrNotFound, spec.Name)
	}
	v := Tenant{Name: spec.Name, Description: spec.Description, Quotas: spec.Quotas, CreatedAt: old.CreatedAt, UpdatedAt: t.now().UTC()}
	data, err := json.Marshal(v)
	if err != nil {
		return Tenant{}, err
	}
	if _, err := t.kv.Put(ctx, v.Name, data); err != nil {
		return Tenant{}, fmt.Errorf("store tenant %s: %w", v.Name, err)
	}
	t.set(v.Name, v)
	return v, nil
}

// Delete removes a tenant. The default tenant cannot be deleted (it holds everything that names
// no tenant); checking that the tenant owns nothing is the caller's part.
func (t *Tenants) Delete(ctx context.Context, name string) error {
	if Normalize(name) == DefaultTenant {
		return fmt.Errorf("%w: the default tenant cannot be deleted: it holds everything that names no tenant", ErrInvalid)
	}
	if _, ok := t.get(name); !ok {
		return fmt.Errorf("%w: tenant %q", ErrNotFound, name)
	}
	if err := t.kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete tenant %s: %w", name, err)
	}
	t.remove(name)
	return nil
}

// Get returns a tenant; the default tenant always exists.
func (t *Tenants) Get(name string) (Tenant, bool) {
	name = Normalize(name)
	v, ok := t.get(name)
	if !ok && name == DefaultTenant {
		return Tenant{Name: DefaultTenant, Description: "everything that names no tenant"}, true
	}
	return v, ok
}

// Quotas returns tenant's quotas (zero: unlimited) — admission control asks per tenant.
func (t *Tenants) Quotas(name string) Quotas {
	v, _ := t.Get(name)
	return v.Quotas
}

// List returns every tenant by name, the default one included.
func (t *Tenants) List() []Tenant {
	out := t.all(func(Tenant) bool { return true })
	if !slices.ContainsFunc(out, func(v Tenant) bool { return v.Name == DefaultTenant }) {
		d, _ := t.Get(DefaultTenant)
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	return out
}
