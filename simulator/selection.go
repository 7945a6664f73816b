package simulator

import (
	"fmt"
	"regexp"
	"time"

	"github.com/tributary-iot/tributary/streams"
)

// Selection says which stored messages to read: a time range of the IOT stream narrowed by
// devices and topic filters, or a saved scenario.
type Selection struct {
	// From and To bound event times: [From, To). From is required unless Scenario is given; To
	// defaults to the time the selection is resolved.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Devices narrows to these devices' topics (devices/{id}/...). Every device must be
	// registered.
	Devices []string `json:"devices,omitempty"`
	// Topics narrows to MQTT-style filters ("devices/+/telemetry"). With Devices too, a
	// message must match both. With neither, the selection is "devices/#".
	Topics []string `json:"topics,omitempty"`
	// Scenario reads a saved scenario instead of the stream; it excludes the fields above.
	Scenario string `json:"scenario,omitempty"`
	// MaxSkew is how far outside [From, To) the hub may have received a message whose event
	// time is inside it (late sends, device clocks that are off). Default 1m, at most 24h.
	MaxSkew Duration `json:"max_skew,omitempty"`
}

// Limits on selections.
const (
	DefaultMaxSkew = time.Minute
	MaxMaxSkew     = 24 * time.Hour
	MaxDevices     = 1000
	MaxTopics      = 100
)

// SandboxTopicPrefix is the first topic level of replay output; it is never selected.
const SandboxTopicPrefix = "sandbox"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidName reports whether s can name a scenario or fleet: like a device ID, 1 to 64 letters,
// digits, '-' and '_', starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks the selection on its own (not against the registry or the stream) and names
// the first wrong field. now bounds From.
func (s Selection) Validate(now time.Time) error {
	if s.Scenario != "" {
		switch {
		case !ValidName(s.Scenario):
			return fmt.Errorf("%w: scenario: %q is not a valid name (1 to 64 letters, digits, '-' or '_')", ErrInvalid, s.Scenario)
		case !s.From.IsZero() || !s.To.IsZero() || len(s.Devices) > 0 || len(s.Topics) > 0:
			return fmt.Errorf("%w: scenario: cannot be combined with from, to, devices or topics", ErrInvalid)
		}
		return nil
	}
	switch {
	case s.From.IsZero():
		return fmt.Errorf("%w: from: required (an RFC 3339 time) unless scenario is given", ErrInvalid)
	case s.From.After(now):
		return fmt.Errorf("%w: from: %s is in the future", ErrInvalid, s.From.Format(time.RFC3339Nano))
	case !s.To.IsZero() && !s.To.After(s.From):
		return fmt.Errorf("%w: to: %s is not after from (%s)", ErrInvalid, s.To.Format(time.RFC3339Nano), s.From.Format(time.RFC3339Nano))
	case s.MaxSkew < 0 || time.Duration(s.MaxSkew) > MaxMaxSkew:
		return fmt.Errorf("%w: max_skew: %s out of range 0 to %s", ErrInvalid, time.Duration(s.MaxSkew), MaxMaxSkew)
	case len(s.Devices) > MaxDevices:
		return fmt.Errorf("%w: devices: %d given, at most %d", ErrInvalid, len(s.Devices), MaxDevices)
	case len(s.Topics) > MaxTopics:
		return fmt.Errorf("%w: topics: %d given, at most %d", ErrInvalid, len(s.Topics), MaxTopics)
	}
	seen := map[string]bool{}
	for i, d := range s.Devices {
		if !nameRE.MatchString(d) {
			return fmt.Errorf("%w: devices[%d]: %q is not a valid device ID", ErrInvalid, i, d)
		}
		if seen[d] {
			return fmt.Errorf("%w: devices[%d]: %q is listed twice", ErrInvalid, i, d)
		}
		seen[d] = true
	}
	for i, f := range s.Topics {
		if err := streams.ValidFilter(f); err != nil {
			return fmt.Errorf("%w: topics[%d]: %v", ErrInvalid, i, err)
		}
	}
	return nil
}

func (s Selection) maxSkew() time.Duration {
	if s.MaxSkew == 0 {
		return DefaultMaxSkew
	}
	return time.Duration(s.MaxSkew)
}
