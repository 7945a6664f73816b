package payload

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrInvalid is wrapped by every error the decoders return: the payload is
// not valid for what it claims to be. Test for it with errors.Is.
var ErrInvalid = errors.New("invalid payload")

// Error is the error type returned by the decoders. Reason is a
// human-readable explanation naming what is wrong, fit to be sent back to
// the device (CoAP diagnostic payload, MQTT v5 reason string) and kept with
// the message in the dead-letter stream.
type Error struct {
	Reason string
}

// Error returns the reason.
func (e *Error) Error() string { return e.Reason }

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

func errorf(format string, args ...any) *Error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

func newError(reason string) *Error { return &Error{Reason: reason} }

// quoteName quotes a field name for an error message, shortening very long
// names so that the reason stays readable.
func quoteName(name string) string {
	const max = 40
	if len(name) > max {
		// Cut on a rune boundary is not needed for readability; %q escapes
		// any broken UTF-8 sequence.
		return strconv.Quote(name[:max]) + "…"
	}
	return strconv.Quote(name)
}
