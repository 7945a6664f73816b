package protocols

import (
	"errors"
	"fmt"
)

// Sentinels for rejected messages. Adapters translate them at the edge:
//
//	error             MQTT v5 reason            CoAP
//	ErrNotAuthorized  0x87 not authorized       4.01
//	ErrForbidden      0x87 not authorized       4.03
//	ErrUnknownTopic   0x90 topic name invalid   4.04
//	ErrInvalidPayload 0x99 payload format inv.  4.00
//	ErrTooLarge       0x95 packet too large     4.13
//	ErrUnavailable    0x83 implementation spec. 5.03
var (
	ErrNotAuthorized  = errors.New("not authorized")
	ErrForbidden      = errors.New("forbidden")
	ErrUnknownTopic   = errors.New("unknown topic")
	ErrInvalidPayload = errors.New("invalid payload")
	ErrTooLarge       = errors.New("payload too large")
	ErrUnavailable    = errors.New("storage unavailable")
)

// Rejection is a refused message: Kind is one of the sentinels above and Reason says what is
// wrong in words a device developer can act on. errors.Is(r, ErrInvalidPayload) works.
type Rejection struct {
	Kind   error
	Reason string
}

func (r *Rejection) Error() string { return fmt.Sprintf("%v: %s", r.Kind, r.Reason) }
func (r *Rejection) Unwrap() error { return r.Kind }

func reject(kind error, format string, args ...any) *Rejection {
	return &Rejection{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// ReasonCode names a rejection for metrics and dead letters: "forbidden", "invalid_payload", ...
func ReasonCode(err error) string {
	switch {
	case errors.Is(err, ErrNotAuthorized):
		return "not_authorized"
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	case errors.Is(err, ErrUnknownTopic):
		return "unknown_topic"
	case errors.Is(err, ErrInvalidPayload):
		return "invalid_payload"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	}
	return "other"
}
