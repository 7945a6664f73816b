package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices"
)

// KeysBucket is the KV bucket of API keys, keyed by key ID. Values hold the SHA-256 of the
// secret, never the secret.
const KeysBucket = "api_keys"

// A key's secret is "tbk_" + 16 hex digits of ID + "_" + 43 characters of base64url (256 random
// bits). The ID inside lets the hub find the record (and name the key in logs) without the
// secret; the record holds only the secret's SHA-256.
const (
	keyPrefix   = "tbk_"
	keyIDLen    = 16
	keySecretLn = 43
	// KeyLen is the length of every key secret.
	KeyLen = len(keyPrefix) + keyIDLen + 1 + keySecretLn
)

// Limits on key records.
const (
	MaxKeyNameLen = 128
	MaxKeyDescLen = 1024
)

// Key is an API key as listed: everything but the secret.
type Key struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Scopes      []Scope    `json:"scopes"`
	Tenant      string     `json:"tenant,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	// CreatedBy is the principal that created it.
	CreatedBy string `json:"created_by,omitempty"`
}

// Principal is what a request made with the key acts as.
func (k Key) Principal() Principal {
	return Principal{KeyID: k.ID, Name: k.Name, Tenant: k.Tenant, Scopes: k.Scopes}
}

// keyRecord is what is stored.
type keyRecord struct {
	Key
	Hash string `json:"hash"`
}

// KeySpec is what a new key is made from.
type KeySpec struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Scopes      []Scope    `json:"scopes"`
	Tenant      string     `json:"tenant,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

func (s *KeySpec) validate(now time.Time) error {
	switch {
	case strings.TrimSpace(s.Name) == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case len(s.Name) > MaxKeyNameLen || !utf8.ValidString(s.Name):
		return fmt.Errorf("%w: name must be valid UTF-8 of at most %d bytes", ErrInvalid, MaxKeyNameLen)
	case len(s.Description) > MaxKeyDescLen || !utf8.ValidString(s.Description):
		return fmt.Errorf("%w: description must be valid UTF-8 of at most %d bytes", ErrInvalid, MaxKeyDescLen)
	case len(s.Scopes) == 0:
		return fmt.Errorf("%w: scopes: at least one is required (one of %s)", ErrInvalid, scopeNames())
	case s.Tenant != "" && !devices.ValidID(s.Tenant):
		return fmt.Errorf("%w: tenant %q must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", ErrInvalid, s.Tenant)
	case s.ExpiresAt != nil && !s.ExpiresAt.After(now):
		return fmt.Errorf("%w: expires_at %s is not in the future", ErrInvalid, s.ExpiresAt.Format(time.RFC3339))
	}
	for _, sc := range s.Scopes {
		if !sc.Valid() {
			return fmt.Errorf("%w: unknown scope %q (want one of %s)", ErrInvalid, sc, scopeNames())
		}
	}
	return nil
}

// Keys stores API keys and keeps every instance's view of them current through a KV watch, so
// a revocation takes effect everywhere as soon as the watch delivers it (milliseconds).
type Keys struct {
	*view[keyRecord] // by key ID
	now              func() time.Time
}

// NewKeys opens (or creates) the bucket and loads every key.
func NewKeys(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*Keys, error) {
	v, err := openView[keyRecord](ctx, js, KeysBucket, "Tributary API keys (hashed)", "API key", replicas, log.With("component", "auth"))
	if err != nil {
		return nil, err
	}
	return &Keys{view: v, now: time.Now}, nil
}

// Create makes a key and returns it with its secret, which is not kept and cannot be shown
// again.
func (k *Keys) Create(ctx context.Context, spec KeySpec, createdBy string) (Key, string, error) {
	now := k.now().UTC().Truncate(time.Second)
	if err := spec.validate(now); err != nil {
		return Key{}, "", err
	}
	idb := make([]byte, keyIDLen/2)
	sb := make([]byte, 32)
	rand.Read(idb)
	rand.Read(sb)
	id := hex.EncodeToString(idb)
	secret := keyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(sb)
	scopes := slices.Clone(spec.Scopes)
	slices.Sort(scopes)
	rec := keyRecord{Key: Key{
		ID: id, Name: spec.Name, Description: spec.Description, Scopes: slices.Compact(scopes),
		Tenant: spec.Tenant, CreatedAt: now, ExpiresAt: spec.ExpiresAt, CreatedBy: createdBy,
	}, Hash: hashSecret(secret)}
	data, err := json.Marshal(rec)
	if err != nil {
		return Key{}, "", err
	}
	if _, err := k.kv.Create(ctx, id, data); err != nil {
		return Key{}, "", fmt.Errorf("store API key %s: %w", id, err)
	}
	k.set(id, rec)
	return rec.Key, secret, nil
}

// List returns every key (without secrets), oldest first; tenant != "" keeps that tenant's.
func (k *Keys) List(tenant string) []Key {
	recs := k.all(func(rec keyRecord) bool { return tenant == "" || rec.Tenant == tenant })
	out := make([]Key, len(recs))
	for i, rec := range recs {
		out[i] = rec.Key
	}
	slices.SortFunc(out, func(a, b Key) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Get returns one key.
func (k *Keys) Get(id string) (Key, error) {
	rec, ok := k.get(id)
	if !ok {
		return Key{}, fmt.Errorf("%w: API key %q", ErrNotFound, id)
	}
	return rec.Key, nil
}

// Revoke deletes key id; every instance refuses it once its watch has seen the deletion.
func (k *Keys) Revoke(ctx context.Context, id string) (Key, error) {
	key, err := k.Get(id)
	if err != nil {
		return Key{}, err
	}
	if err := k.kv.Delete(ctx, id); err != nil {
		return Key{}, fmt.Errorf("revoke API key %s: %w", id, err)
	}
	k.remove(id)
	return key, nil
}

// Authenticate returns the principal of secret: ErrUnknownKey when no current key has it,
// ErrExpired when its time is up.
func (k *Keys) Authenticate(secret string) (Principal, error) {
	id, ok := ParseKey(secret)
	if !ok {
		return Principal{}, ErrUnknownKey
	}
	rec, found := k.get(id)
	if !found || subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(rec.Hash)) != 1 {
		return Principal{}, ErrUnknownKey
	}
	if rec.ExpiresAt != nil && !k.now().Before(*rec.ExpiresAt) {
		return Principal{}, ErrExpired
	}
	return rec.Principal(), nil
}

// Current returns the principal of key id while it is neither revoked nor expired; live
// connections and browser tokens made with a key check it on use.
func (k *Keys) Current(id string) (Principal, bool) {
	rec, ok := k.get(id)
	if !ok || (rec.ExpiresAt != nil && !k.now().Before(*rec.ExpiresAt)) {
		return Principal{}, false
	}
	return rec.Principal(), true
}

// IsKey reports whether s has the shape of a scoped key's secret (it may still be wrong).
func IsKey(s string) bool { return strings.HasPrefix(s, keyPrefix) }

// ParseKey returns the key ID inside a secret, or false when s cannot be a key secret.
func ParseKey(s string) (id string, ok bool) {
	if len(s) != KeyLen || !strings.HasPrefix(s, keyPrefix) || s[len(keyPrefix)+keyIDLen] != '_' {
		return "", false
	}
	id = s[len(keyPrefix) : len(keyPrefix)+keyIDLen]
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	if _, err := base64.RawURLEncoding.DecodeString(s[len(keyPrefix)+keyIDLen+1:]); err != nil {
		return "", false
	}
	return id, true
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
