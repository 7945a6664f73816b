package tsdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// StreamConfig tunes the stream-backed querier.
type StreamConfig struct {
	// Skew is how far ahead of the hub's clock device timestamps may run: a query reads the
	// device's messages stored from From - Skew on (default 1h). Messages that arrive late
	// (buffered by the device, or replayed) are found however late they are.
	Skew time.Duration `yaml:"skew" json:"skew"`
	// MaxScan bounds the values of the field held in memory to answer one query (default
	// 1,000,000); beyond it the query fails with ErrTooManyPoints.
	MaxScan int `yaml:"max_scan" json:"max_scan"`
	// QueryTimeout bounds one query (default 30s).
	QueryTimeout time.Duration `yaml:"query_timeout" json:"query_timeout"`
}

// StreamQuerier answers queries from the device's raw telemetry in the IOT stream, within its
// retention, with the semantics of InfluxQuerier, so a hub without InfluxDB is useful on its
// own. Each query reads the device's messages since From - Skew (Latest: all of them) with an
// ephemeral consumer and decodes them as the writer does (DecodeSamples).
//
// Field types follow InfluxDB: the first type a field is seen with is its type, and a
// measurement carrying a field of another type is skipped whole, as InfluxDB refuses its
// point. (InfluxDB fixes field types per measurement and shard for all devices together; the
// stream querier sees one device's messages from where it starts reading.)
type StreamQuerier struct {
	js  jetstream.JetStream
	cfg StreamConfig
	log *slog.Logger
}

var _ Querier = (*StreamQuerier)(nil)

// NewStreamQuerier builds a querier over bus's IOT stream.
func NewStreamQuerier(bus JetStreamer, cfg StreamConfig, log *slog.Logger) *StreamQuerier {
	if cfg.Skew <= 0 {
		cfg.Skew = time.Hour
	}
	if cfg.MaxScan <= 0 {
		cfg.MaxScan = 1_000_000
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	return &StreamQuerier{js: bus.JetStream(), cfg: cfg, log: log.With("component", "tsdb")}
}

// Query implements Querier.
func (s *StreamQuerier) Query(ctx context.Context, q Query) ([]Point, error) {
	q, err := q.Normalize(time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	from, to := q.From.UnixNano(), q.To.UnixNano()
	var vals []value
	err = s.scan(ctx, q.Device, q.From.Add(-s.cfg.Skew), func(seq uint64, smp Sample) error {
		v, ok := smp.Fields[q.Field]
		if !ok {
			return nil
		}
		t := smp.Time.UnixNano()
		if t < from || t >= to {
			return nil
		}
		if len(vals) >= s.cfg.MaxScan {
			return fmt.Errorf("%w: more than %d values of field %q to read from the stream; narrow from/to, or configure InfluxDB", ErrTooManyPoints, s.cfg.MaxScan, q.Field)
		}
		vals = append(vals, value{t: t, seq: seq, v: v})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return answer(q, vals)
}

// Latest implements Querier.
func (s *StreamQuerier) Latest(ctx context.Context, device string) (map[string]Point, error) {
	if err := checkDevice(device); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	best := map[string]value{}
	lo, hi := latestFrom.UnixNano(), latestTo.UnixNano()
	err := s.scan(ctx, device, time.Time{}, func(seq uint64, smp Sample) error {
		t := smp.Time.UnixNano()
		if t < lo || t >= hi {
			return nil
		}
		for f, v := range smp.Fields {
			if b, ok := best[f]; !ok || t > b.t || t == b.t && seq > b.seq {
				best[f] = value{t: t, seq: seq, v: v}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]Point, len(best))
	for f, b := range best {
		out[f] = Point{Time: time.Unix(0, b.t).UTC(), Value: b.v}
	}
	return out, nil
}

func checkDevice(device string) error {
	_, err := Query{Device: device, Field: "x"}.Normalize(time.Now())
	return err
}

// kind is a field's type as InfluxDB sees it.
type kind uint8

const (
	kindFloat kind = iota + 1
	kindBool
	kindString
	kindOther
)

func kindOf(v any) kind {
	switch v.(type) {
	case float64:
		return kindFloat
	case bool:
		return kindBool
	case string:
		return kindString
	}
	return kindOther
}

const scanChunk = 4096

// scan calls fn for each sample of device's telemetry stored from start on (zero: all), in
// stream order, skipping undecodable messages (the writer dead-letters them) and samples whose
// field types conflict with earlier ones.
func (s *StreamQuerier) scan(ctx context.Context, device string, start time.Time, fn func(seq uint64, smp Sample) error) error {
	subj, err := streams.TopicToSubject("devices/" + device + "/telemetry")
	if err != nil {
		return fmt.Errorf("%w: device %q: %v", ErrBadQuery, device, err)
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     subj,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second,
	}
	if !start.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := s.js.CreateConsumer(ctx, streams.StreamMessages, cfg)
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, streams.StreamMessages, cons.CachedInfo().Name)
	}()
	types := map[string]kind{}
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		b, err := cons.Fetch(int(min(pending, scanChunk)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			pending--
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.NumPending == 0 {
				pending = 0
			}
			env, err := streams.FromMsg(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				continue
			}
			samples, err := DecodeSamples(env)
			if err != nil {
				continue
			}
			for _, smp := range samples {
				if !admit(types, smp.Fields) {
					continue
				}
				if err := fn(md.Sequence.Stream, smp); err != nil {
					return err
				}
			}
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("read stream: %w", err)
		}
		if got == 0 {
			break // the rest was removed (retention) while reading
		}
	}
	return nil
}

// admit records the types of fields and reports whether none conflicts with an earlier type.
func admit(types map[string]kind, fields map[string]any) bool {
	for f, v := range fields {
		if k, ok := types[f]; ok && k != kindOf(v) {
			return false
		}
	}
	for f, v := range fields {
		if _, ok := types[f]; !ok {
			types[f] = kindOf(v)
		}
	}
	return true
}
