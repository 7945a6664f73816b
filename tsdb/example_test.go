package tsdb_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/tsdb"
)

func ExampleParseQuery() {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	v, _ := url.ParseQuery("field=temperature&from=-6h&every=1h&agg=max")
	q, err := tsdb.ParseQuery("therm-1", v, now)
	fmt.Println(q.Field, q.From.Format(time.RFC3339), q.To.Format(time.RFC3339), q.Every, q.Agg, err)

	_, err = tsdb.ParseQuery("therm-1", url.Values{"field": {"t"}, "agg": {"median"}}, now)
	fmt.Println(err)
	// Output:
	// temperature 2024-05-01T06:00:00Z 2024-05-01T12:00:00Z 1h0m0s max <nil>
	// bad query: agg "median" is not one of mean, min, max, sum, count, first, last
}

func ExampleParseTime() {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"-30m", "now-1d", "1714564800000", "2024-05-01T10:00:00+02:00"} {
		t, _ := tsdb.ParseTime(s, now)
		fmt.Println(t.Format(time.RFC3339))
	}
	// Output:
	// 2024-05-01T11:30:00Z
	// 2024-04-30T12:00:00Z
	// 2024-05-01T12:00:00Z
	// 2024-05-01T08:00:00Z
}

// The hub runs one writer for device telemetry per configured InfluxDB and answers queries from
// InfluxDB, or from the stream when there is none.
func ExampleNewWriter() {
	ctx := context.Background()
	log := slog.Default()
	bus, err := streams.New(ctx, streams.Config{StoreDir: "./data/jetstream"}, log)
	if err != nil {
		panic(err)
	}
	defer bus.Close()
	cfg := tsdb.Config{URL: "http://localhost:8086", Bucket: "iot/autogen"}
	w, err := tsdb.NewWriter(bus, cfg, tsdb.TelemetryMapping(nil /* the device registry */, ""), log)
	if err != nil {
		panic(err)
	}
	go w.Run(ctx) // under the hub's errgroup

	q, err := tsdb.NewQuerier(cfg, bus, log)
	if err != nil {
		panic(err)
	}
	pts, err := q.Query(ctx, tsdb.Query{Device: "therm-1", Field: "temperature", Every: time.Minute, Agg: tsdb.AggMean})
	fmt.Println(len(pts), err, w.Status().Lag)
}
