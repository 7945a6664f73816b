package devices

import (
	"fmt"
	"math"
)

// Limits are admission limits set on a device or on a device type (see protocols/admission).
// For each field the most specific setting wins: the device's, else its type's, else the
// hub's flags. Zero means "not set here" (inherit); a negative value means "unlimited",
// overriding a limit set further out.
type Limits struct {
	// Rate is the sustained number of messages per second the device may publish.
	Rate float64 `json:"rate,omitempty" yaml:"rate,omitempty"`
	// Burst is how many messages may come at once above Rate (default: one second's worth).
	Burst int `json:"burst,omitempty" yaml:"burst,omitempty"`
	// BytesRate is the sustained payload bytes per second.
	BytesRate float64 `json:"bytes_rate,omitempty" yaml:"bytes_rate,omitempty"`
	// BytesBurst is how many payload bytes may come at once (default: one second's worth,
	// and never less than the largest payload accepted).
	BytesBurst int `json:"bytes_burst,omitempty" yaml:"bytes_burst,omitempty"`
	// MaxConnections bounds the device's concurrent MQTT connections (1 allows one client at
	// a time; a reconnect with the same client ID takes the session over and is always let in).
	MaxConnections int `json:"max_connections,omitempty" yaml:"max_connections,omitempty"`
}

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// Validate names the first field that is out of range.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"rate", l.Rate}, {"bytes_rate", l.BytesRate}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v > 1e9 {
			return fmt.Errorf("%w: limits.%s %v: want a number of at most 1e9 per second (negative: unlimited)", ErrInvalid, f.name, f.v)
		}
	}
	switch {
	case l.Burst < 0 || l.Burst > 1e9:
		return fmt.Errorf("%w: limits.burst %d out of range 0..1e9", ErrInvalid, l.Burst)
	case l.BytesBurst < 0 || l.BytesBurst > 1<<40:
		return fmt.Errorf("%w: limits.bytes_burst %d out of range 0..%d", ErrInvalid, l.BytesBurst, int64(1)<<40)
	case l.MaxConnections > 1e6:
		return fmt.Errorf("%w: limits.max_connections %d: at most 1000000 (negative: unlimited)", ErrInvalid, l.MaxConnections)
	}
	return nil
}

// Over returns l with every field set in over replacing its own: over is more specific.
func (l Limits) Over(over Limits) Limits {
	if over.Rate != 0 {
		l.Rate = over.Rate
	}
	if over.Burst != 0 {
		l.Burst = over.Burst
	}
	if over.BytesRate != 0 {
		l.BytesRate = over.BytesRate
	}
	if over.BytesBurst != 0 {
		l.BytesBurst = over.BytesBurst
	}
	if over.MaxConnections != 0 {
		l.MaxConnections = over.MaxConnections
	}
	return l
}
