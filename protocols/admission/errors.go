package admission

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels of refusals; an *Exceeded unwraps to one of them. Adapters translate them:
//
//	error                 MQTT v5 (QoS 1/2)            CoAP              HTTP
//	ErrRateLimited        DISCONNECT 0x96              4.29 + Max-Age    429 + Retry-After
//	ErrQuotaExceeded      DISCONNECT 0x97              4.29 + Max-Age    429 + Retry-After
//	ErrTooManyConnections CONNACK 0x97 (v3: 0x03)      -                 -
//	ErrAuthThrottled      CONNACK 0x9F (v3: 0x03)      4.29 + Max-Age    429 + Retry-After
var (
	// ErrRateLimited: the device publishes more messages per second than it may.
	ErrRateLimited = errors.New("message rate too high")
	// ErrQuotaExceeded: a byte rate (device or tenant) or the tenant's message rate is used up.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrTooManyConnections: a connection limit (device, tenant or hub) is reached.
	ErrTooManyConnections = errors.New("too many connections")
	// ErrAuthThrottled: too many failed authentications came from the source address.
	ErrAuthThrottled = errors.New("too many failed authentication attempts")
)

// Exceeded is a refusal by a limit: which one, and when trying again can succeed.
type Exceeded struct {
	Kind error // ErrRateLimited, ErrQuotaExceeded, ErrTooManyConnections or ErrAuthThrottled
	// Limit names the limit in words: "device message rate 10/s", "tenant acme connections 100".
	Limit string
	// RetryAfter is how long until the request could pass (0: unknown or never as sent,
	// e.g. one message larger than the byte burst).
	RetryAfter time.Duration
}

func (e *Exceeded) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v: %s; retry in %v", e.Kind, e.Limit, e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v: %s", e.Kind, e.Limit)
}

func (e *Exceeded) Unwrap() error { return e.Kind }

// RetryAfterSeconds rounds up to whole seconds, at least 1: what Retry-After and CoAP Max-Age
// carry.
func RetryAfterSeconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	if s < 1 {
		s = 1
	}
	if s > 1<<31 {
		s = 1 << 31
	}
	return uint32(s)
}
