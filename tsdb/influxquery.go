package tsdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// InfluxQuerier answers queries with Flux from InfluxDB 2.x, or 1.8+ with flux-enabled.
//
// The Flux is written to give the same answers on InfluxDB 1.8 (Flux 0.65), whose range()
// includes its stop time: [From, To) is applied again with a filter on _time. Series of the
// device (its tags may have changed) are merged before aggregating, and windows are stamped
// with their aligned start even when From cuts the first one short.
type InfluxQuerier struct {
	cfg    Config
	client influxdb2.Client
	api    api.QueryAPI
	log    *slog.Logger
}

var _ Querier = (*InfluxQuerier)(nil)

// NewInfluxQuerier connects to the InfluxDB of cfg (cfg.URL is required). Close releases it.
func NewInfluxQuerier(cfg Config, log *slog.Logger) (*InfluxQuerier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if cfg.URL == "" {
		return nil, errors.New("tsdb: influx_url is required for the InfluxDB querier")
	}
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, influxdb2.DefaultOptions().
		SetHTTPRequestTimeout(uint(max(1, (cfg.QueryTimeout+time.Second-1)/time.Second))))
	return &InfluxQuerier{cfg: cfg, client: client, api: client.QueryAPI(cfg.Org), log: log.With("component", "tsdb")}, nil
}

// Close releases the client's connections.
func (iq *InfluxQuerier) Close() error {
	iq.client.Close()
	return nil
}

// Query implements Querier.
func (iq *InfluxQuerier) Query(ctx context.Context, q Query) ([]Point, error) {
	q, err := q.Normalize(time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, iq.cfg.QueryTimeout)
	defer cancel()
	pts, err := iq.run(ctx, iq.queryFlux(q), q)
	if err != nil {
		if numericAgg(q.Agg) {
			// Flux refuses mean/sum/min/max of strings and booleans with errors of its own:
			// look at the field's type to give ErrFieldType instead.
			if v, ok := iq.sampleValue(ctx, q); ok && !isNumber(v) {
				return nil, fieldTypeError(q, v)
			}
		}
		return nil, err
	}
	if numericAgg(q.Agg) {
		for _, p := range pts {
			if !isNumber(p.Value) {
				return nil, fieldTypeError(q, p.Value)
			}
		}
	}
	return pts, nil
}

// queryFlux builds the Flux for q (already normalized).
func (iq *InfluxQuerier) queryFlux(q Query) string {
	var b strings.Builder
	fmt.Fprintf(&b, "from(bucket: %s)\n", fluxString(iq.cfg.Bucket))
	fmt.Fprintf(&b, "  |> range(start: %s, stop: %s)\n", fluxTime(q.From), fluxTime(q.To))
	fmt.Fprintf(&b, "  |> filter(fn: (r) => r._measurement == %s and r.%s == %s and r._field == %s)\n",
		fluxString(iq.cfg.Measurement), TagDevice, fluxString(q.Device), fluxString(q.Field))
	fmt.Fprintf(&b, "  |> filter(fn: (r) => r._time >= %s and r._time < %s)\n", fluxTime(q.From), fluxTime(q.To))
	b.WriteString("  |> group()\n")
	if q.Agg == "" || q.Agg == AggFirst || q.Agg == AggLast {
		b.WriteString("  |> sort(columns: [\"_time\"])\n")
	}
	switch {
	case q.Every > 0:
		fmt.Fprintf(&b, "  |> aggregateWindow(every: %dns, fn: %s, createEmpty: false, timeSrc: \"_start\")\n", int64(q.Every), q.Agg)
	case q.Agg != "":
		fmt.Fprintf(&b, "  |> %s()\n", q.Agg)
	}
	fmt.Fprintf(&b, "  |> limit(n: %d)\n", MaxPoints+1)
	return b.String()
}

// run executes flux and converts records to points: windows are stamped with their start, a
// whole-range aggregate with From.
func (iq *InfluxQuerier) run(ctx context.Context, flux string, q Query) ([]Point, error) {
	res, err := iq.api.Query(ctx, flux)
	if err != nil {
		return nil, queryError(err)
	}
	defer res.Close()
	var pts []Point
	for res.Next() {
		r := res.Record()
		t := r.Time()
		switch {
		case q.Every > 0:
			t = windowStart(t, q.Every)
		case q.Agg != "":
			t = q.From
		}
		pts = append(pts, Point{Time: t.UTC(), Value: r.Value()})
		if len(pts) > MaxPoints {
			return nil, fmt.Errorf("%w: more than %d points of field %q in range; downsample with every and agg", ErrTooManyPoints, MaxPoints, q.Field)
		}
	}
	if err := res.Err(); err != nil {
		return nil, queryError(err)
	}
	slices.SortStableFunc(pts, func(a, b Point) int { return a.Time.Compare(b.Time) })
	return pts, nil
}

// sampleValue returns one stored value of the field in range, to learn its type.
func (iq *InfluxQuerier) sampleValue(ctx context.Context, q Query) (any, bool) {
	raw := Query{Device: q.Device, Field: q.Field, From: q.From, To: q.To}
	flux := iq.queryFlux(raw) + "  |> limit(n: 1)\n"
	pts, err := iq.run(ctx, flux, raw)
	if err != nil || len(pts) == 0 {
		return nil, false
	}
	return pts[0].Value, true
}

// Latest implements Querier.
func (iq *InfluxQuerier) Latest(ctx context.Context, device string) (map[string]Point, error) {
	if err := checkDevice(device); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, iq.cfg.QueryTimeout)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "from(bucket: %s)\n", fluxString(iq.cfg.Bucket))
	fmt.Fprintf(&b, "  |> range(start: %s, stop: %s)\n", fluxTime(latestFrom), fluxTime(latestTo))
	fmt.Fprintf(&b, "  |> filter(fn: (r) => r._measurement == %s and r.%s == %s)\n",
		fluxString(iq.cfg.Measurement), TagDevice, fluxString(device))
	fmt.Fprintf(&b, "  |> filter(fn: (r) => r._time < %s)\n", fluxTime(latestTo))
	b.WriteString("  |> last()\n  |> group(columns: [\"_field\"])\n  |> sort(columns: [\"_time\"])\n  |> last()\n")
	res, err := iq.api.Query(ctx, b.String())
	if err != nil {
		return nil, queryError(err)
	}
	defer res.Close()
	out := map[string]Point{}
	for res.Next() {
		r := res.Record()
		out[r.Field()] = Point{Time: r.Time().UTC(), Value: r.Value()}
	}
	if err := res.Err(); err != nil {
		return nil, queryError(err)
	}
	return out, nil
}

// queryError marks network failures and 502/503/504 as ErrUnavailable.
func queryError(err error) error {
	var he *ihttp.Error
	if errors.As(err, &he) {
		switch he.StatusCode {
		case 0, 502, 503, 504:
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return fmt.Errorf("influxdb query: %v", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("influxdb query: %w", err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// fluxString quotes s as a Flux string literal. Flux has no escape for "${" (interpolation), so
// it is split into two concatenated literals.
func fluxString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '$':
			b.WriteByte('$')
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteString(`" + "`)
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func fluxTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
