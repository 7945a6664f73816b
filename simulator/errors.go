package simulator

import "errors"

// Sentinel errors shared by the simulator packages; the HTTP API maps them to status codes. The
// wrapping error says what is wrong and names the field.
var (
	// ErrInvalid: the request or file is malformed (400).
	ErrInvalid = errors.New("invalid")
	// ErrEmpty: the selection matches no stored message (422).
	ErrEmpty = errors.New("empty selection")
	// ErrNotFound: no replay, scenario or simulation with that name (404).
	ErrNotFound = errors.New("not found")
	// ErrExists: a scenario or device with that name already exists (409).
	ErrExists = errors.New("already exists")
	// ErrState: the job is not in a state that allows the operation (409).
	ErrState = errors.New("wrong state")
)
