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
