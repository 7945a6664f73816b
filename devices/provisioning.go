package devices

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// ProvisioningBucket holds provisioning keys, keyed by key ID; only the secret's hash is kept.
const ProvisioningBucket = "provisioning-keys"

// ProvisioningKey lets devices claim their own identity: a device presents the key and the ID
// it wants, and gets a new device record and its token. The key decides the type and tags of
// the devices it creates, may restrict their IDs to a prefix, expires, and has a use limit.
type ProvisioningKey struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Type and Tags are given to every device claimed with the key.
	Type string            `json:"type,omitempty"`
	Tags map[string]string `json:"tags,omitempty"`
	// IDPrefix, when set, is what every claimed device ID must start with.
	IDPrefix  string     `json:"id_prefix,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// MaxUses is how many devices the key may create (0: no limit); Uses how many it has.
	MaxUses    int        `json:"max_uses"`
	Uses       int        `json:"uses"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

type provisioningRecord struct {
	ProvisioningKey
	SecretHash string `json:"secret_hash"`
}

// MetaProvisionedBy is the metadata key naming the provisioning key a device was claimed with.
const MetaProvisionedBy = "provisioned_by"

// Provisioning manages provisioning keys and claims.
type Provisioning struct {
	kv  jetstream.KeyValue
	reg *Registry
	log *slog.Logger
	now func() time.Time
}

func newProvisioning(ctx context.Context, js jetstream.JetStream, reg *Registry, replicas int, log *slog.Logger) (*Provisioning, error) {
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: ProvisioningBucket, Description: "Tributary provisioning keys", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provisioning bucket: %w", err)
	}
	return &Provisioning{kv: kv, reg: reg, log: log, now: time.Now}, nil
}

// CreateKey stores a new key from k (ID, Uses and CreatedAt are set here) and returns it with
// the secret to give devices, "<key id>.<secret>", shown only now.
func (p *Provisioning) CreateKey(ctx context.Context, k ProvisioningKey) (ProvisioningKey, string, error) {
	probe := Device{ID: "x", Type: k.Type, Tags: k.Tags}
	if err := probe.validate(); err != nil {
		return ProvisioningKey{}, "", err
	}
	switch {
	case len(k.Name) > MaxNameLen:
		return ProvisioningKey{}, "", fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, MaxNameLen)
	case k.IDPrefix != "" && !ValidID(k.IDPrefix):
		return ProvisioningKey{}, "", fmt.Errorf("%w: id_prefix %q must itself be a valid device ID start ([A-Za-z0-9][A-Za-z0-9_-]*)", ErrInvalid, k.IDPrefix)
	case k.MaxUses < 0:
		return ProvisioningKey{}, "", fmt.Errorf("%w: max_uses must not be negative", ErrInvalid)
	case k.ExpiresAt != nil && !k.ExpiresAt.After(p.now()):
		return ProvisioningKey{}, "", fmt.Errorf("%w: expires_at %s is not in the future", ErrInvalid, k.ExpiresAt.Format(time.RFC3339))
	}
	k.ID = strings.NewReplacer("-", "x", "_", "y").Replace(NewToken()[:12])
	k.Uses, k.LastUsedAt = 0, nil
	k.CreatedAt = p.now().UTC()
	if k.ExpiresAt != nil {
		t := k.ExpiresAt.UTC()
		k.ExpiresAt = &t
	}
	secret := NewToken()
	rec := provisioningRecord{ProvisioningKey: k, SecretHash: hashToken(secret)}
	data, _ := json.Marshal(rec)
	if _, err := p.kv.Create(ctx, k.ID, data); err != nil {
		return ProvisioningKey{}, "", fmt.Errorf("%w: store provisioning key: %v", ErrUnavailable, err)
	}
	return k, k.ID + "." + secret, nil
}

// Keys lists the keys by creation time.
func (p *Provisioning) Keys(ctx context.Context) ([]ProvisioningKey, error) {
	lister, err := p.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: list provisioning keys: %v", ErrUnavailable, err)
	}
	var out []ProvisioningKey
	for key := range lister.Keys() {
		if rec, _, err := p.read(ctx, key); err == nil {
			out = append(out, rec.ProvisioningKey)
		}
	}
	slices.SortFunc(out, func(a, b ProvisioningKey) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Key returns one key.
func (p *Provisioning) Key(ctx context.Context, id string) (ProvisioningKey, error) {
	rec, _, err := p.read(ctx, id)
	return rec.ProvisioningKey, err
}

// DeleteKey revokes a key; devices it created stay.
func (p *Provisioning) DeleteKey(ctx context.Context, id string) error {
	if _, _, err := p.read(ctx, id); err != nil {
		return err
	}
	if err := p.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("%w: delete provisioning key: %v", ErrUnavailable, err)
	}
	return nil
}

func (p *Provisioning) read(ctx context.Context, id string) (provisioningRecord, uint64, error) {
	var rec provisioningRecord
	if id == "" || !ValidID(id) {
		return rec, 0, fmt.Errorf("%w: no provisioning key %q", ErrNotFound, id)
	}
	e, err := p.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, fmt.Errorf("%w: no provisioning key %q", ErrNotFound, id)
	}
	if err != nil {
		return rec, 0, fmt.Errorf("%w: read provisioning key: %v", ErrUnavailable, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, err
	}
	return rec, e.Revision(), nil
}

// authorize finds the key a secret belongs to and checks that it may create device id now.
// Errors: ErrUnauthorized (unknown key, wrong secret), ErrExpired, ErrExhausted, ErrForbidden
// (id outside the key's prefix), ErrInvalid (bad ID), ErrExists (ID taken).
func (p *Provisioning) authorize(ctx context.Context, secret, id string) (provisioningRecord, uint64, error) {
	keyID, sec, ok := strings.Cut(secret, ".")
	if !ok || keyID == "" || sec == "" {
		return provisioningRecord{}, 0, fmt.Errorf("%w: malformed provisioning key (want <key id>.<secret>)", ErrUnauthorized)
	}
	rec, rev, err := p.read(ctx, keyID)
	if errors.Is(err, ErrNotFound) {
		return rec, 0, fmt.Errorf("%w: unknown provisioning key", ErrUnauthorized)
	}
	if err != nil {
		return rec, 0, err
	}
	if subtle.ConstantTimeCompare([]byte(hashToken(sec)), []byte(rec.SecretHash)) != 1 {
		return rec, 0, fmt.Errorf("%w: wrong provisioning key", ErrUnauthorized)
	}
	if err := rec.usable(p.now()); err != nil {
		return rec, 0, err
	}
	probe := Device{ID: id, Type: rec.Type, Tags: rec.Tags}
	if err := probe.validate(); err != nil {
		return rec, 0, err
	}
	if rec.IDPrefix != "" && !strings.HasPrefix(id, rec.IDPrefix) {
		return rec, 0, fmt.Errorf("%w: provisioning key %s creates only devices whose ID starts with %q", ErrForbidden, rec.ID, rec.IDPrefix)
	}
	if p.reg.Exists(id) {
		return rec, 0, fmt.Errorf("%w: %s", ErrExists, id)
	}
	return rec, rev, nil
}

func (rec *provisioningRecord) usable(now time.Time) error {
	if rec.ExpiresAt != nil && !now.Before(*rec.ExpiresAt) {
		return fmt.Errorf("%w: provisioning key %s expired at %s", ErrExpired, rec.ID, rec.ExpiresAt.Format(time.RFC3339))
	}
	if rec.MaxUses > 0 && rec.Uses >= rec.MaxUses {
		return fmt.Errorf("%w: provisioning key %s has created its %d devices", ErrExhausted, rec.ID, rec.MaxUses)
	}
	return nil
}

// Check tells whether secret may create device id now, without using the key.
func (p *Provisioning) Check(ctx context.Context, secret, id string) error {
	_, _, err := p.authorize(ctx, secret, id)
	return err
}

// Claim creates device id with the key secret belongs to and returns the device and its
// token. The key's use is counted atomically (KV revision), so a key with max_uses n creates
// at most n devices however many claim at once; if creating the device then fails, the use is
// given back.
func (p *Provisioning) Claim(ctx context.Context, secret, id string) (Device, string, error) {
	var rec provisioningRecord
	for attempt := 0; ; attempt++ {
		var rev uint64
		var err error
		rec, rev, err = p.authorize(ctx, secret, id)
		if err != nil {
			return Device{}, "", err
		}
		rec.Uses++
		t := p.now().UTC()
		rec.LastUsedAt = &t
		data, _ := json.Marshal(rec)
		if _, err = p.kv.Update(ctx, rec.ID, data, rev); err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !strings.Contains(err.Error(), "wrong last sequence") {
			return Device{}, "", fmt.Errorf("%w: provisioning key: %v", ErrUnavailable, err)
		}
		if attempt >= 20 {
			return Device{}, "", fmt.Errorf("%w: provisioning key %s is in heavy use; retry", ErrConflict, rec.ID)
		}
	}
	d, token, err := p.reg.Create(ctx, Device{
		ID: id, Type: rec.Type, Tags: rec.Tags,
		Metadata: map[string]any{MetaProvisionedBy: rec.ID},
	})
	if err != nil {
		p.giveBack(rec.ID)
		return Device{}, "", err
	}
	p.log.Info("device provisioned", "device", id, "provisioning_key", rec.ID)
	return d, token, nil
}

// giveBack returns one use of key id after a claim that did not create its device.
func (p *Provisioning) giveBack(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for attempt := 0; attempt < 20; attempt++ {
		rec, rev, err := p.read(ctx, id)
		if err != nil || rec.Uses == 0 {
			return
		}
		rec.Uses--
		data, _ := json.Marshal(rec)
		if _, err := p.kv.Update(ctx, id, data, rev); err == nil {
			return
		}
	}
	p.log.Warn("provisioning key use not given back after a failed claim", "key", id)
}
