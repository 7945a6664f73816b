package devices

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the KV bucket holding device records, keyed by device ID.
const Bucket = "devices"

// Config of the registry.
type Config struct {
	// Replicas of the KV bucket (default 1).
	Replicas int `yaml:"replicas" json:"replicas"`
}

// Registry keeps device records in JetStream KV and a current in-memory copy of them.
type Registry struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time

	mu      sync.RWMutex
	devices map[string]*record
	synced  chan struct{}
}

// New opens (or creates) the bucket and loads every device before returning.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Registry, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Tributary device registry",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("device registry bucket: %w", err)
	}
	r := &Registry{kv: kv, log: log.With("component", "devices"), now: time.Now, devices: map[string]*record{}, synced: make(chan struct{})}
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads all records once so that the registry is usable as soon as New returns.
func (r *Registry) load(ctx context.Context) error {
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	for key := range lister.Keys() {
		e, err := r.kv.Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return fmt.Errorf("load device %s: %w", key, err)
		}
		r.apply(e)
	}
	return nil
}

// Run keeps the in-memory view current with changes made by any hub instance until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch devices: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				closeOnce(r.synced)
				continue
			}
			r.apply(e)
		}
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

func (r *Registry) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.devices, e.Key())
		return
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		r.log.Error("unreadable device record", "key", e.Key(), "err", err)
		return
	}
	r.devices[e.Key()] = &rec
}

// NewToken returns a fresh device token: 128 random bits, URL-safe base64.
func NewToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Create registers d and returns it with its token (shown only now).
func (r *Registry) Create(ctx context.Context, d Device) (Device, string, error) {
	if err := d.validate(); err != nil {
		return Device{}, "", err
	}
	now := r.now().UTC()
	d.CreatedAt, d.UpdatedAt = now, now
	token := NewToken()
	rec := record{Device: d, TokenHash: hashToken(token)}
	data, err := json.Marshal(rec)
	if err != nil {
		return Device{}, "", err
	}
	if len(data) > MaxMetadataLen+8<<10 {
		return Device{}, "", fmt.Errorf("%w: record is %d bytes; metadata is limited to %d", ErrInvalid, len(data), MaxMetadataLen)
	}
	if _, err := r.kv.Create(ctx, d.ID, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Device{}, "", fmt.Errorf("%w: %s", ErrExists, d.ID)
		}
		return Device{}, "", fmt.Errorf("create device %s: %w", d.ID, err)
	}
	r.mu.Lock()
	r.devices[d.ID] = &rec
	r.mu.Unlock()
	return d, token, nil
}

// Get returns one device.
func (r *Registry) Get(id string) (Device, error) {
	r.mu.RLock()
	rec, ok := r.devices[id]
	r.mu.RUnlock()
	if !ok {
		return Device{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return rec.Device, nil
}

// Exists reports whether the device is registered.
func (r *Registry) Exists(id string) bool {
	r.mu.RLock()
	_, ok := r.devices[id]
	r.mu.RUnlock()
	return ok
}

// AuthenticateDevice checks token against the device's stored hash in constant time.
func (r *Registry) AuthenticateDevice(_ context.Context, id, token string) error {
	r.mu.RLock()
	rec, ok := r.devices[id]
	r.mu.RUnlock()
	want := hashToken(token)
	if !ok {
		return ErrUnauthorized
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(rec.TokenHash)) != 1 {
		return ErrUnauthorized
	}
	return nil
}

// DevicePSK returns the DTLS pre-shared key of device id: its stored token hash (hex SHA-256
// of the token) as ASCII bytes, so a device derives the same key from its token. ok is false
// for an unknown device.
func (r *Registry) DevicePSK(id string) (psk []byte, ok bool) {
	r.mu.RLock()
	rec, ok := r.devices[id]
	r.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return []byte(rec.TokenHash), true
}

// update applies change to the stored record with optimistic concurrency, retrying on conflict.
func (r *Registry) update(ctx context.Context, id string, change func(*record) error) (record, error) {
	for attempt := 0; attempt < 5; attempt++ {
		e, err := r.kv.Get(ctx, id)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
			}
			return record{}, fmt.Errorf("read device %s: %w", id, err)
		}
		var rec record
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return record{}, fmt.Errorf("read device %s: %w", id, err)
		}
		if err := change(&rec); err != nil {
			return record{}, err
		}
		rec.UpdatedAt = r.now().UTC()
		data, err := json.Marshal(rec)
		if err != nil {
			return record{}, err
		}
		if _, err := r.kv.Update(ctx, id, data, e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || strings.Contains(err.Error(), "wrong last sequence") {
				continue
			}
			return record{}, fmt.Errorf("update device %s: %w", id, err)
		}
		r.mu.Lock()
		r.devices[id] = &rec
		r.mu.Unlock()
		return rec, nil
	}
	return record{}, fmt.Errorf("%w: %s", ErrConflict, id)
}

// Patch is a partial update: nil fields are left as they are.
type Patch struct {
	Name     *string            `json:"name,omitempty"`
	Type     *string            `json:"type,omitempty"`
	Tags     *map[string]string `json:"tags,omitempty"`
	Location *Location          `json:"location,omitempty"`
	Metadata *map[string]any    `json:"metadata,omitempty"`
}

// Update applies p to device id.
func (r *Registry) Update(ctx context.Context, id string, p Patch) (Device, error) {
	rec, err := r.update(ctx, id, func(rec *record) error {
		if p.Name != nil {
			rec.Name = *p.Name
		}
		if p.Type != nil {
			rec.Type = *p.Type
		}
		if p.Tags != nil {
			rec.Tags = *p.Tags
		}
		if p.Location != nil {
			rec.Location = p.Location
		}
		if p.Metadata != nil {
			rec.Metadata = *p.Metadata
		}
		return rec.validate()
	})
	return rec.Device, err
}

// RotateToken gives device id a new token, returned once; the old one stops working at once.
func (r *Registry) RotateToken(ctx context.Context, id string) (string, error) {
	token := NewToken()
	_, err := r.update(ctx, id, func(rec *record) error {
		rec.TokenHash = hashToken(token)
		return nil
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// Delete removes device id.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if _, err := r.kv.Get(ctx, id); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	if err := r.kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	r.mu.Lock()
	delete(r.devices, id)
	r.mu.Unlock()
	return nil
}

// Filter selects devices in List. Empty fields match everything.
type Filter struct {
	Type string
	// Tags must all match (key → value).
	Tags map[string]string
	// Query matches a case-insensitive substring of the ID or name.
	Query string
	// IDs restricts to this set when not nil (e.g. devices with a given status).
	IDs map[string]bool
	// After is the pagination cursor: only IDs sorting after it.
	After string
	// Limit caps the result (0: no cap).
	Limit int
}

// List returns the devices matching f, ordered by ID, and the cursor for the next page ("" at
// the end).
func (r *Registry) List(f Filter) ([]Device, string) {
	q := strings.ToLower(f.Query)
	r.mu.RLock()
	out := make([]Device, 0, min(len(r.devices), cmp.Or(f.Limit, len(r.devices))))
	for id, rec := range r.devices {
		if f.After != "" && id <= f.After {
			continue
		}
		if f.IDs != nil && !f.IDs[id] {
			continue
		}
		if f.Type != "" && rec.Type != f.Type {
			continue
		}
		if !tagsMatch(rec.Tags, f.Tags) {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(id), q) && !strings.Contains(strings.ToLower(rec.Name), q) {
			continue
		}
		out = append(out, rec.Device)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	next := ""
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
		next = out[len(out)-1].ID
	}
	return out, next
}

func tagsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Count is the number of registered devices.
func (r *Registry) Count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.devices)
}
