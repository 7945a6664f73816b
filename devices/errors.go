package devices

import "errors"

var (
	// ErrNotFound: no device with that ID.
	ErrNotFound = errors.New("device not found")
	// ErrExists: a device with that ID already exists.
	ErrExists = errors.New("device already exists")
	// ErrUnauthorized: unknown device or wrong token (deliberately not told apart).
	ErrUnauthorized = errors.New("unknown device or wrong token")
	// ErrInvalid: the device record is not acceptable; the wrapping error says why.
	ErrInvalid = errors.New("invalid device")
	// ErrConflict: the record changed concurrently; retry.
	ErrConflict = errors.New("device changed concurrently")
)

var (
	// ErrTooLarge: a document (shadow state, command payload) is over its size limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: the hub's storage did not answer; the operation may be retried.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrForbidden: the credentials are valid but do not allow this (e.g. a provisioning key
	// restricted to other device IDs).
	ErrForbidden = errors.New("not allowed")
	// ErrExpired: a provisioning key or command past its expiry.
	ErrExpired = errors.New("expired")
	// ErrExhausted: a provisioning key whose use limit is reached.
	ErrExhausted = errors.New("use limit reached")
)
