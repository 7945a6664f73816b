package devices

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// TypesBucket is the KV bucket of per-type settings, keyed by the base64url of the type name.
const TypesBucket = "device-types"

// TypeSettings are what a device type sets for all devices of that type.
type TypeSettings struct {
	Type string `json:"type"`
	// InactivityTimeout is how long a device of this type without a connection (CoAP) stays
	// online after its last message, unless the device sets its own (0: the hub's default).
	InactivityTimeout Duration `json:"inactivity_timeout,omitempty"`
	// Limits are the admission limits of devices of this type, unless a device sets its own.
	Limits    Limits    `json:"limits,omitzero"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Limits of inactivity timeouts, per device or per type.
const (
	MinInactivityTimeout = time.Second
	MaxInactivityTimeout = 30 * 24 * time.Hour
)

func (t *TypeSettings) validate() error {
	if t.Type == "" || len(t.Type) > MaxTypeLen {
		return fmt.Errorf("%w: type must be 1..%d bytes", ErrInvalid, MaxTypeLen)
	}
	if t.InactivityTimeout != 0 && (t.InactivityTimeout < Duration(MinInactivityTimeout) || t.InactivityTimeout > Duration(MaxInactivityTimeout)) {
		return fmt.Errorf("%w: inactivity_timeout %v is outside %v..%v", ErrInvalid, t.InactivityTimeout, Duration(MinInactivityTimeout), Duration(MaxInactivityTimeout))
	}
	return t.Limits.Validate()
}

// Types keeps per-type settings in KV with an in-memory copy, current on every instance.
type Types struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu    sync.RWMutex
	types map[string]TypeSettings
}

func typeKey(t string) string { return base64.RawURLEncoding.EncodeToString([]byte(t)) }

func newTypes(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*Types, error) {
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: TypesBucket, Description: "Tributary device type settings", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("device types bucket: %w", err)
	}
	t := &Types{kv: kv, log: log, types: map[string]TypeSettings{}}
	if err := streams.LoadBucket(ctx, kv, t.apply); err != nil {
		return nil, err
	}
	return t, nil
}

// run keeps the copy current until ctx ends.
func (t *Types) run(ctx context.Context) error {
	return streams.WatchBucket(ctx, t.kv, t.apply)
}

func (t *Types) apply(e jetstream.KeyValueEntry) {
	raw, err := base64.RawURLEncoding.DecodeString(e.Key())
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(t.types, string(raw))
		return
	}
	var s TypeSettings
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		t.log.Error("unreadable device type settings", "key", e.Key(), "err", err)
		return
	}
	t.types[string(raw)] = s
}

// Get returns the settings of one type.
func (t *Types) Get(name string) (TypeSettings, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.types[name]
	return s, ok
}

// List returns every type with settings, by name.
func (t *Types) List() []TypeSettings {
	t.mu.RLock()
	out := make([]TypeSettings, 0, len(t.types))
	for _, s := range t.types {
		out = append(out, s)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b TypeSettings) int { return strings.Compare(a.Type, b.Type) })
	return out
}

// Put stores the settings of s.Type, replacing what was there.
func (t *Types) Put(ctx context.Context, s TypeSettings) (TypeSettings, error) {
	if err := s.validate(); err != nil {
		return TypeSettings{}, err
	}
	s.UpdatedAt = time.Now().UTC()
	data, err := json.Marshal(s)
	if err != nil {
		return TypeSettings{}, err
	}
	if _, err := t.kv.Put(ctx, typeKey(s.Type), data); err != nil {
		return TypeSettings{}, fmt.Errorf("store device type %s: %w", s.Type, err)
	}
	t.mu.Lock()
	t.types[s.Type] = s
	t.mu.Unlock()
	return s, nil
}

// Delete removes the settings of a type.
func (t *Types) Delete(ctx context.Context, name string) error {
	if _, ok := t.Get(name); !ok {
		return fmt.Errorf("%w: no settings for type %q", ErrNotFound, name)
	}
	if err := t.kv.Delete(ctx, typeKey(name)); err != nil {
		return fmt.Errorf("delete device type %s: %w", name, err)
	}
	t.mu.Lock()
	delete(t.types, name)
	t.mu.Unlock()
	return nil
}
