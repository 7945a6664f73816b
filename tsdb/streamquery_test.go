package tsdb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
)

func TestStreamQuerierLimitsAndErrors(t *testing.T) {
	bus := streamstest.New(t)
	for i := range 5 {
		publish(t, bus, telemetry("d1", base.Add(time.Duration(i)*time.Minute), map[string]any{"v": i}))
	}
	ctx := context.Background()
	q := tsdb.Query{Device: "d1", Field: "v", From: base, To: base.Add(time.Hour)}
	small := tsdb.NewStreamQuerier(bus, tsdb.StreamConfig{MaxScan: 2}, streamstest.Logger(t))
	if _, err := small.Query(ctx, q); !errors.Is(err, tsdb.ErrTooManyPoints) {
		t.Errorf("got %v beyond MaxScan, want ErrTooManyPoints", err)
	}
	sq := tsdb.NewStreamQuerier(bus, tsdb.StreamConfig{}, streamstest.Logger(t))
	pts, err := sq.Query(ctx, q)
	if err != nil || len(pts) != 5 || pts[4].Value != 4.0 {
		t.Errorf("got %v, %v, want 5 points ending with 4", pts, err)
	}
	// Data from before the query's start, stored now, is found: the stream is read by store time.
	q.From, q.To = base.Add(3*time.Minute), base.Add(4*time.Minute+1)
	if pts, err := sq.Query(ctx, q); err != nil || len(pts) != 2 {
		t.Errorf("got %v, %v, want the points at 3 and 4 minutes", pts, err)
	}
	if _, err := sq.Query(ctx, tsdb.Query{Device: "d1.x", Field: "v"}); !errors.Is(err, tsdb.ErrBadQuery) {
		t.Errorf("got %v for a bad device, want ErrBadQuery", err)
	}
	if _, err := sq.Latest(ctx, "a/b"); !errors.Is(err, tsdb.ErrBadQuery) {
		t.Errorf("got %v for a bad device, want ErrBadQuery", err)
	}
}

func TestInfluxQuerierUnavailable(t *testing.T) {
	iq, err := tsdb.NewInfluxQuerier(tsdb.Config{URL: "http://127.0.0.1:1", Bucket: "db/autogen"}, streamstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer iq.Close()
	ctx := context.Background()
	if _, err := iq.Query(ctx, tsdb.Query{Device: "d1", Field: "v"}); !errors.Is(err, tsdb.ErrUnavailable) {
		t.Errorf("Query: got %v, want ErrUnavailable", err)
	}
	if _, err := iq.Latest(ctx, "d1"); !errors.Is(err, tsdb.ErrUnavailable) {
		t.Errorf("Latest: got %v, want ErrUnavailable", err)
	}
}

func TestNewQuerierChoosesBackend(t *testing.T) {
	bus := streamstest.New(t)
	log := streamstest.Logger(t)
	q, err := tsdb.NewQuerier(tsdb.Config{}, bus, log)
	if _, ok := q.(*tsdb.StreamQuerier); err != nil || !ok {
		t.Errorf("without a URL: got %T, %v, want *tsdb.StreamQuerier", q, err)
	}
	q, err = tsdb.NewQuerier(tsdb.Config{URL: "http://127.0.0.1:1"}, bus, log)
	if _, ok := q.(*tsdb.InfluxQuerier); err != nil || !ok {
		t.Errorf("with a URL: got %T, %v, want *tsdb.InfluxQuerier", q, err)
	}
}
