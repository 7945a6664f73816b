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
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
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

	// sorted holds the records in ID order for List, as of generation sortedGen; it is rebuilt
	// lazily when gen (bumped on every change) has moved on. Records are never modified in
	// place (a change stores a new one), so a snapshot can be read without the lock.
	gen       atomic.Uint64
	sortMu    sync.Mutex
	sorted    []*record
	sortedGen uint64

	// statusOf, when set (by Liveness), answers Filter.Status.
	statusOf func(id string) string
}

// New opens (or creates) the bucket and loads every device before returning.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Registry, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Tributary device registry",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("device registry bucket: %w", err)
	}
	r := &Registry{kv: kv, log: log.With("component", "devices"), now: time.Now, devices: map[string]*record{}}
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads all records once so that the registry is usable as soon as New returns.
func (r *Registry) load(ctx context.Context) error {
	if err := streams.LoadBucket(ctx, r.kv, r.apply); err != nil {
		return fmt.Errorf("load devices: %w", err)
	}
	return nil
}

// Run keeps the in-memory view current with changes made by any hub instance until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	return streams.WatchBucket(ctx, r.kv, r.apply)
}

func (r *Registry) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		if _, ok := r.devices[e.Key()]; ok {
			delete(r.devices, e.Key())
			r.changed()
		}
		return
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		r.log.Error("unreadable device record", "key", e.Key(), "err", err)
		return
	}
	r.devices[e.Key()] = &rec
	r.changed()
}

// changed marks the sorted index stale.
func (r *Registry) changed() { r.gen.Add(1) }

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
	r.changed()
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
func (r *Registry) AuthenticateDevice(ctx context.Context, id, token string) error {
	r.mu.RLock()
	rec, ok := r.devices[id]
	r.mu.RUnlock()
	want := hashToken(token)
	if ok && subtle.ConstantTimeCompare([]byte(want), []byte(rec.TokenHash)) == 1 {
		return nil
	}
	// Unknown here, or another token: the device may just have been created, or its token
	// rotated, through another hub instance whose change this one's watch has not applied
	// yet. The stored record decides.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	e, err := r.kv.Get(ctx, id)
	if err != nil {
		return ErrUnauthorized
	}
	var stored record
	if json.Unmarshal(e.Value(), &stored) != nil || subtle.ConstantTimeCompare([]byte(want), []byte(stored.TokenHash)) != 1 {
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
// stored reads device id's record from the bucket. On a replicated bucket a read may be served
// by a replica that has not applied a create yet: when this instance knows the device (it
// created it, or its watch has seen it), "not found" is retried for up to two seconds.
func (r *Registry) stored(ctx context.Context, id string) (jetstream.KeyValueEntry, error) {
	wait := 10 * time.Millisecond
	deadline := time.Now().Add(2 * time.Second)
	for {
		e, err := r.kv.Get(ctx, id)
		if !errors.Is(err, jetstream.ErrKeyNotFound) || !r.Exists(id) || time.Now().After(deadline) {
			return e, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

func (r *Registry) update(ctx context.Context, id string, change func(*record) error) (record, error) {
	for attempt := 0; attempt < 5; attempt++ {
		e, err := r.stored(ctx, id)
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
		r.changed()
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
	// InactivityTimeout: "0s" goes back to the type's or the default timeout.
	InactivityTimeout *Duration `json:"inactivity_timeout,omitempty"`
	// Limits replaces the device's admission limits ({} removes them).
	Limits *Limits `json:"limits,omitempty"`
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
		if p.InactivityTimeout != nil {
			rec.InactivityTimeout = *p.InactivityTimeout
		}
		if p.Limits != nil {
			rec.Limits = *p.Limits
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
	if _, err := r.stored(ctx, id); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	if err := r.kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	r.mu.Lock()
	if _, ok := r.devices[id]; ok {
		delete(r.devices, id)
		r.changed()
	}
	r.mu.Unlock()
	return nil
}

// Filter selects devices in List. Empty fields match everything.
type Filter struct {
	// Tenant keeps one tenant's devices ("default" includes devices that name none).
	Tenant string
	Type   string
	// Tags must all match (key → value).
	Tags map[string]string
	// Meta must all match: a metadata key (dotted for nested objects, "fw.version") → the
	// value as text (a string as is, other JSON values as JSON: 42, true).
	Meta map[string]string
	// Query matches a case-insensitive substring of the ID or name.
	Query string
	// Status is "online" or "offline" (liveness; ignored when it is not tracked).
	Status string
	// Near keeps devices with a location within a distance of a point.
	Near *Circle
	// BBox keeps devices with a location inside a box.
	BBox *BBox
	// IDs restricts to this set when not nil (e.g. devices with a given status).
	IDs map[string]bool
	// After is the pagination cursor: only IDs sorting after it.
	After string
	// Limit caps the result (0: no cap).
	Limit int
}

// Circle is a point and a radius in kilometres.
type Circle struct {
	Lat, Lon, RadiusKm float64
}

// BBox is a box of WGS 84 coordinates; MinLon > MaxLon crosses the antimeridian.
type BBox struct {
	MinLon, MinLat, MaxLon, MaxLat float64
}

func (b *BBox) contains(l *Location) bool {
	if l.Lat < b.MinLat || l.Lat > b.MaxLat {
		return false
	}
	if b.MinLon <= b.MaxLon {
		return l.Lon >= b.MinLon && l.Lon <= b.MaxLon
	}
	return l.Lon >= b.MinLon || l.Lon <= b.MaxLon
}

// distanceKm is the great-circle distance (haversine, mean Earth radius).
func distanceKm(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0088
	rad := math.Pi / 180
	dLat, dLon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}

// List returns the devices matching f, ordered by ID, and the cursor for the next page ("" at
// the end). A page costs what it skips and returns, not the size of the registry: records are
// kept sorted by ID.
func (r *Registry) List(f Filter) ([]Device, string) {
	q := strings.ToLower(f.Query)
	recs := r.sortedRecords()
	start := 0
	if f.After != "" {
		start, _ = slices.BinarySearchFunc(recs, f.After, func(rec *record, id string) int { return strings.Compare(rec.ID, id) })
		if start < len(recs) && recs[start].ID == f.After {
			start++
		}
	}
	var status func(string) string
	if f.Status != "" {
		status = r.statusOf
	}
	out := make([]Device, 0, min(len(recs)-start, cmp.Or(f.Limit, 100)))
	next := ""
	for _, rec := range recs[start:] {
		id := rec.ID
		if f.IDs != nil && !f.IDs[id] {
			continue
		}
		if f.Tenant != "" && TenantName(rec.Tenant) != f.Tenant {
			continue
		}
		if f.Type != "" && rec.Type != f.Type {
			continue
		}
		if !tagsMatch(rec.Tags, f.Tags) || !metaMatch(rec.Metadata, f.Meta) {
			continue
		}
		if q != "" && !containsFold(id, q) && !containsFold(rec.Name, q) {
			continue
		}
		if f.Near != nil && (rec.Location == nil || distanceKm(f.Near.Lat, f.Near.Lon, rec.Location.Lat, rec.Location.Lon) > f.Near.RadiusKm) {
			continue
		}
		if f.BBox != nil && (rec.Location == nil || !f.BBox.contains(rec.Location)) {
			continue
		}
		if status != nil && status(id) != f.Status {
			continue
		}
		if f.Limit > 0 && len(out) == f.Limit {
			next = out[len(out)-1].ID
			break
		}
		out = append(out, rec.Device)
	}
	return out, next
}

// containsFold reports whether s contains lower (already lower-case), ignoring ASCII case,
// without allocating; non-ASCII text falls back to strings.ToLower.
func containsFold(s, lower string) bool {
	n := len(lower)
	if n == 0 {
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return strings.Contains(strings.ToLower(s), lower)
		}
	}
outer:
	for i := 0; i+n <= len(s); i++ {
		for j := 0; j < n; j++ {
			c := s[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				continue outer
			}
		}
		return true
	}
	return false
}

// sortedRecords returns the records in ID order, rebuilding the index after changes. The
// slice is shared: callers must not modify it.
func (r *Registry) sortedRecords() []*record {
	r.sortMu.Lock()
	defer r.sortMu.Unlock()
	g := r.gen.Load()
	if r.sorted != nil && r.sortedGen == g {
		return r.sorted
	}
	r.mu.RLock()
	recs := make([]*record, 0, len(r.devices))
	for _, rec := range r.devices {
		recs = append(recs, rec)
	}
	r.mu.RUnlock()
	slices.SortFunc(recs, func(a, b *record) int { return strings.Compare(a.ID, b.ID) })
	r.sorted, r.sortedGen = recs, g
	return recs
}

// metaMatch reports whether every key of want (dotted for nested objects) has that value in
// have, compared as text.
func metaMatch(have map[string]any, want map[string]string) bool {
	for k, v := range want {
		var cur any = have
		for part := range strings.SplitSeq(k, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			if cur, ok = m[part]; !ok {
				return false
			}
		}
		switch x := cur.(type) {
		case string:
			if x != v {
				return false
			}
		default:
			b, err := json.Marshal(x)
			if err != nil || string(b) != v {
				return false
			}
		}
	}
	return true
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

// MaxBatch is the most devices CreateMany takes at once.
const MaxBatch = 10000

// BatchItemError is what is wrong with one device of a batch.
type BatchItemError struct {
	Index int    `json:"index"`
	ID    string `json:"id,omitempty"`
	Err   error  `json:"-"`
	Error string `json:"error"`
}

// BatchError lists every device of a batch that cannot be created; nothing was created. It
// wraps ErrExists when all problems are IDs that exist (in the registry or twice in the batch),
// else ErrInvalid.
type BatchError struct {
	Items []BatchItemError
}

func (e *BatchError) Error() string {
	if len(e.Items) == 1 {
		return fmt.Sprintf("device %d (%s): %s", e.Items[0].Index, e.Items[0].ID, e.Items[0].Error)
	}
	return fmt.Sprintf("%d devices cannot be created, the first: device %d (%s): %s", len(e.Items), e.Items[0].Index, e.Items[0].ID, e.Items[0].Error)
}

func (e *BatchError) Unwrap() error {
	kind := ErrExists
	for _, it := range e.Items {
		switch {
		case errors.Is(it.Err, ErrExists):
		case errors.Is(it.Err, ErrInvalid):
			kind = ErrInvalid
		default:
			return it.Err // storage trouble: not the caller's fault
		}
	}
	return kind
}

// Created is one device of a batch with its token.
type Created struct {
	Device
	Token string `json:"token"`
}

// CreateMany creates every device of ds or none: all are checked first (a *BatchError names
// each bad one by index), then created in parallel; should one fail then (a concurrent create
// of the same ID, storage trouble), those already created are deleted again.
func (r *Registry) CreateMany(ctx context.Context, ds []Device) ([]Created, error) {
	if len(ds) > MaxBatch {
		return nil, fmt.Errorf("%w: %d devices in one batch, the limit is %d", ErrInvalid, len(ds), MaxBatch)
	}
	var bad []BatchItemError
	seen := make(map[string]int, len(ds))
	for i := range ds {
		d := ds[i]
		err := d.validate()
		if err == nil {
			if first, dup := seen[d.ID]; dup {
				err = fmt.Errorf("%w: %s is also device %d of this batch", ErrExists, d.ID, first)
			} else if r.Exists(d.ID) {
				err = fmt.Errorf("%w: %s", ErrExists, d.ID)
			}
		}
		seen[d.ID] = i
		if err != nil {
			bad = append(bad, BatchItemError{Index: i, ID: d.ID, Err: err, Error: err.Error()})
		}
	}
	if len(bad) > 0 {
		return nil, &BatchError{Items: bad}
	}
	out := make([]Created, len(ds))
	errs := make([]error, len(ds))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(16, len(ds)) {
		wg.Go(func() {
			for i := range work {
				d, token, err := r.Create(ctx, ds[i])
				out[i], errs[i] = Created{Device: d, Token: token}, err
			}
		})
	}
	for i := range ds {
		work <- i
	}
	close(work)
	wg.Wait()
	var failed []BatchItemError
	for i, err := range errs {
		if err != nil {
			failed = append(failed, BatchItemError{Index: i, ID: ds[i].ID, Err: err, Error: err.Error()})
		}
	}
	if len(failed) == 0 {
		return out, nil
	}
	for i, err := range errs {
		if err == nil {
			if derr := r.Delete(context.WithoutCancel(ctx), ds[i].ID); derr != nil {
				r.log.Error("batch rollback: device not deleted", "device", ds[i].ID, "err", derr)
			}
		}
	}
	return nil, &BatchError{Items: failed}
}
