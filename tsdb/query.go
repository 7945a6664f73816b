package tsdb

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices"
)

// Query asks for one field of one device's telemetry over [From, To), raw or downsampled.
// Both Queriers answer it with the same semantics (see the package documentation); Normalize
// fills in defaults and checks it.
type Query struct {
	Device string
	Field  string
	// From is inclusive, To exclusive.
	From, To time.Time
	// Every > 0 downsamples into windows of this length aligned to the Unix epoch; 0 returns raw
	// points, or with Agg a single aggregate over the whole range.
	Every time.Duration
	// Agg is one of Aggs; with Every > 0 it defaults to "mean".
	Agg string
}

// Point is one value of the answer. Value is float64, bool or string as stored, int64 for count.
type Point struct {
	Time  time.Time `json:"time"`
	Value any       `json:"value"`
}

// Querier answers telemetry queries. InfluxQuerier and StreamQuerier implement it identically.
type Querier interface {
	// Query returns the points of q in time order.
	Query(ctx context.Context, q Query) ([]Point, error)
	// Latest returns the newest value of each field the device has sent (by event time; on equal
	// times the later message wins), keyed by stored field name.
	Latest(ctx context.Context, device string) (map[string]Point, error)
}

// Aggregation functions.
const (
	AggMean  = "mean"
	AggMin   = "min"
	AggMax   = "max"
	AggSum   = "sum"
	AggCount = "count"
	AggFirst = "first"
	AggLast  = "last"
)

// Aggs lists the aggregation functions.
var Aggs = []string{AggMean, AggMin, AggMax, AggSum, AggCount, AggFirst, AggLast}

// numericAgg reports whether agg needs numbers (bool and string fields give ErrFieldType).
func numericAgg(agg string) bool {
	return agg == AggMean || agg == AggMin || agg == AggMax || agg == AggSum
}

// Limits shared by both Queriers, so they fail alike.
const (
	// MaxPoints is the most points one answer may hold (windows or raw points).
	MaxPoints = 100_000
	// DefaultRange is the range when From is not given: the hour before To.
	DefaultRange = time.Hour
)

// Bounds of the timestamps Latest considers.
var (
	latestFrom = time.Unix(0, 0).UTC()
	latestTo   = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Normalize fills in defaults (To: now; From: DefaultRange before To; Agg "mean" when Every is
// set), maps the field name as stored (StoredField) and checks everything, naming the
// parameter in ErrBadQuery errors.
func (q Query) Normalize(now time.Time) (Query, error) {
	if !devices.ValidID(q.Device) {
		return q, fmt.Errorf("%w: device %q is not a valid device ID", ErrBadQuery, q.Device)
	}
	if q.Field == "" {
		return q, fmt.Errorf("%w: field is required", ErrBadQuery)
	}
	q.Field = StoredField(q.Field)
	if q.To.IsZero() {
		q.To = now
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-DefaultRange)
	}
	q.From, q.To = q.From.UTC(), q.To.UTC()
	if q.From.Before(minStorable) || q.To.After(maxStorable) {
		return q, fmt.Errorf("%w: from and to must lie between %s and %s", ErrBadQuery, minStorable.Format(time.RFC3339), maxStorable.Format(time.RFC3339))
	}
	if !q.From.Before(q.To) {
		return q, fmt.Errorf("%w: from (%s) must be before to (%s)", ErrBadQuery, q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
	}
	if q.Every < 0 {
		return q, fmt.Errorf("%w: every must be positive", ErrBadQuery)
	}
	if q.Agg == "" && q.Every > 0 {
		q.Agg = AggMean
	}
	if q.Agg != "" && !slices.Contains(Aggs, q.Agg) {
		return q, fmt.Errorf("%w: agg %q is not one of %s", ErrBadQuery, q.Agg, strings.Join(Aggs, ", "))
	}
	if q.Every > 0 {
		if n := (windowStart(q.To.Add(-1), q.Every).Sub(windowStart(q.From, q.Every)))/q.Every + 1; n > MaxPoints || n <= 0 {
			return q, fmt.Errorf("%w: every %s over %s gives more than %d windows", ErrBadQuery, q.Every, q.To.Sub(q.From), MaxPoints)
		}
	}
	return q, nil
}

// windowStart is the start of the window of length every holding t, with windows aligned to
// the Unix epoch (like Flux's window and aggregateWindow).
func windowStart(t time.Time, every time.Duration) time.Time {
	ns, e := t.UnixNano(), int64(every)
	r := ns % e
	if r < 0 {
		r += e
	}
	return time.Unix(0, ns-r).UTC()
}

// ParseQuery reads the query parameters of GET /api/v1/devices/{id}/telemetry (field, from,
// to, every, agg) and normalizes the result.
func ParseQuery(device string, v url.Values, now time.Time) (Query, error) {
	q := Query{Device: device, Field: v.Get("field")}
	var err error
	if q.From, err = ParseTime(v.Get("from"), now); err != nil {
		return q, fmt.Errorf("%w: from: %v", ErrBadQuery, err)
	}
	if q.To, err = ParseTime(v.Get("to"), now); err != nil {
		return q, fmt.Errorf("%w: to: %v", ErrBadQuery, err)
	}
	if q.Every, err = ParseDuration(v.Get("every")); err != nil {
		return q, fmt.Errorf("%w: every: %v", ErrBadQuery, err)
	}
	if q.Agg, err = ParseAgg(v.Get("agg")); err != nil {
		return q, err
	}
	return q.Normalize(now)
}

// ParseTime reads a time: RFC 3339 ("2024-05-01T12:00:00Z"), Unix milliseconds
// ("1714564800000"), "now", or relative to now ("-1h", "-30m", "-7d", "now-2h", "+5m"; units
// ns, us, ms, s, m, h, d = 24h, w = 7d). Empty gives the zero time: unset.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, nil
	case s == "now":
		return now.UTC(), nil
	}
	if rel, ok := strings.CutPrefix(s, "now"); ok {
		s = rel
	}
	if s != "" && (s[0] == '-' || s[0] == '+') {
		d, err := ParseDuration(s[1:])
		if err != nil || s[1:] == "" {
			return time.Time{}, fmt.Errorf("%q is not a relative time like -1h", s)
		}
		if s[0] == '-' {
			d = -d
		}
		return now.Add(d).UTC(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms < minStorable.UnixMilli() || ms > maxStorable.UnixMilli() {
			return time.Time{}, fmt.Errorf("%s ms is out of range", s)
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not RFC 3339, Unix milliseconds, now, or a relative time like -1h", s)
	}
	return t.UTC(), nil
}

// ParseDuration reads a Go duration that may also use d (24h) and w (7d), e.g. "1d12h". Empty
// gives 0. Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	bad := fmt.Errorf("%q is not a duration like 30s, 5m, 1h or 1d", s)
	if s[0] == '-' {
		return 0, fmt.Errorf("%q is negative", s)
	}
	// Rewrite d and w terms as hours, then let time.ParseDuration check the rest.
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		k := j
		for k < len(s) && !(s[k] >= '0' && s[k] <= '9' || s[k] == '.') {
			k++
		}
		num, unit := s[i:j], s[j:k]
		if num == "" || unit == "" {
			return 0, bad
		}
		if unit == "d" || unit == "w" {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, bad
			}
			if unit == "w" {
				f *= 7
			}
			num, unit = strconv.FormatFloat(f*24, 'f', -1, 64), "h"
		}
		b.WriteString(num)
		b.WriteString(unit)
		i = k
	}
	d, err := time.ParseDuration(b.String())
	if err != nil {
		return 0, bad
	}
	return d, nil
}

// ParseAgg checks an aggregation name (case-insensitive); empty is allowed (no aggregation, or
// "mean" with every).
func ParseAgg(s string) (string, error) {
	a := strings.ToLower(strings.TrimSpace(s))
	if a == "" || slices.Contains(Aggs, a) {
		return a, nil
	}
	return "", fmt.Errorf("%w: agg %q is not one of %s", ErrBadQuery, s, strings.Join(Aggs, ", "))
}

// JetStreamer gives access to JetStream. *streams.Bus satisfies it.
type JetStreamer interface {
	JetStream() jetstream.JetStream
}

// NewQuerier answers from InfluxDB when cfg.URL is set, else from the IOT stream.
func NewQuerier(cfg Config, bus JetStreamer, log *slog.Logger) (Querier, error) {
	if cfg.URL != "" {
		return NewInfluxQuerier(cfg, log)
	}
	return NewStreamQuerier(bus, StreamConfig{QueryTimeout: cfg.QueryTimeout}, log), nil
}
