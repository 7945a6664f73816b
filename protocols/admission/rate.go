package admission

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a number of events per second that reads like "100/s", "6000/m", "10/h" or a bare
// number (per second); "0" or "off" means no limit. It is a flag.Value and reads from YAML and
// environment variables as text.
type Rate float64

// ParseRate reads a Rate.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "off" || s == "0" {
		return 0, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	per := time.Second
	if hasUnit {
		switch strings.TrimSpace(unit) {
		case "s", "sec", "second":
		case "m", "min", "minute":
			per = time.Minute
		case "h", "hour":
			per = time.Hour
		default:
			return 0, fmt.Errorf("rate %q: unit after / must be s, m or h", s)
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || !(v >= 0 && v <= 1e9) { // also refuses NaN
		return 0, fmt.Errorf("rate %q: want a number from 0 to 1e9 with an optional /s, /m or /h, such as 100/s", s)
	}
	return Rate(v / per.Seconds()), nil
}

// String writes the rate per second ("100/s"), "0" when off.
func (r Rate) String() string {
	if r <= 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(r), 'g', -1, 64) + "/s"
}

// Set implements flag.Value.
func (r *Rate) Set(s string) error {
	v, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// UnmarshalText reads the text forms (YAML, environment).
func (r *Rate) UnmarshalText(b []byte) error { return r.Set(string(b)) }

// MarshalText writes String.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }
