package auth

import "errors"

var (
	// ErrUnknownKey: no key has this secret (never created, revoked, or malformed).
	ErrUnknownKey = errors.New("invalid API key")
	// ErrExpired: the key's expiry has passed.
	ErrExpired = errors.New("API key expired")
	// ErrNotFound: no key or tenant with this ID or name.
	ErrNotFound = errors.New("not found")
	// ErrExists: a tenant of that name exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: a key or tenant specification is wrong; the wrapped message says how.
	ErrInvalid = errors.New("invalid")
)
