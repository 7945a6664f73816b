package tsdb_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
	"github.com/tributary-iot/tributary/tsdb/tsdbbench"
)

var (
	benchPoints = flag.Int("tsdb.points", 200_000, "points per throughput run of BenchmarkReport")
	benchOutage = flag.Duration("tsdb.outage", 60*time.Second, "InfluxDB outage of BenchmarkReport's catch-up run (0: skip)")
)

func benchConfig(db influxtest.DB) tsdb.Config {
	return tsdb.Config{URL: db.URL, Org: db.Org, Token: db.Token, Bucket: db.Bucket, MaxBackoff: 2 * time.Second}
}

// BenchmarkWriterThroughput: points/s from the stream through the writer into InfluxDB, one
// point (three fields) per message, b.N messages published while the writer runs.
func BenchmarkWriterThroughput(b *testing.B) {
	bus := streamstest.New(b)
	db := influxtest.Shared(b).NewDB(b)
	ctx := context.Background()
	bench, err := tsdbbench.Start(ctx, bus, benchConfig(db), 100, streamstest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer bench.Close()
	b.ResetTimer()
	rate, err := bench.Hub(ctx, b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate.PerSecond(), "points/s")
}

// BenchmarkWriterDrain: points/s of the writer alone, writing b.N messages already in the
// stream.
func BenchmarkWriterDrain(b *testing.B) {
	bus := streamstest.New(b)
	db := influxtest.Shared(b).NewDB(b)
	ctx := context.Background()
	if err := tsdbbench.Publish(ctx, bus, 0, b.N, 100); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rate, err := tsdbbench.Drain(ctx, bus, benchConfig(db), 100, streamstest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate.PerSecond(), "points/s")
}

// BenchmarkDirectWrite: the same points written straight to InfluxDB with influxdb-client-go in
// batches of 5000: the ceiling for BenchmarkWriterThroughput.
func BenchmarkDirectWrite(b *testing.B) {
	db := influxtest.Shared(b).NewDB(b)
	rate, err := tsdbbench.DirectThroughput(context.Background(), benchConfig(db), 0, b.N, 100)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate.PerSecond(), "points/s")
}

// BenchmarkStreamQuery: a downsampled query answered from the stream (no InfluxDB), over
// 10,000 messages of one device.
func BenchmarkStreamQuery(b *testing.B) {
	bus := streamstest.New(b)
	const n = 10_000
	for i := range n {
		env := tsdbbench.Message(i, 1)
		if err := bus.PublishAsync(env); err != nil {
			b.Fatal(err)
		}
	}
	<-bus.JetStream().PublishAsyncComplete()
	sq := tsdb.NewStreamQuerier(bus, tsdb.StreamConfig{}, streamstest.Logger(b))
	at := tsdbbench.Message(0, 1).EventTime
	q := tsdb.Query{Device: "bench-0", Field: "temperature", From: at, To: at.Add(time.Second), Every: time.Millisecond, Agg: "mean"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		pts, err := sq.Query(ctx, q)
		if err != nil || len(pts) != 10 {
			b.Fatalf("got %d points, %v; want 10", len(pts), err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkReport runs the whole measurement once and prints it: hub vs direct throughput and
// their ratio, publish-to-queryable latency, and catch-up after an outage of -tsdb.outage.
//
//	go test -run '^$' -bench Report -benchtime 1x ./tsdb/
func BenchmarkReport(b *testing.B) {
	if b.N > 1 {
		b.Skip("runs once")
	}
	bus := streamstest.New(b)
	srv := influxtest.Start(b)
	hub, direct := srv.NewDB(b), srv.NewDB(b)
	rep, err := tsdbbench.Run(context.Background(), tsdbbench.Options{
		Bus: bus, Hub: benchConfig(hub), Direct: benchConfig(direct),
		Points: *benchPoints, Outage: *benchOutage,
		Stop:  func() error { srv.Stop(); return nil },
		Start: func() error { srv.Restart(); return nil },
		Log:   streamstest.Logger(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	fmt.Print(rep)
	b.ReportMetric(rep.Hub.PerSecond(), "hub-points/s")
	b.ReportMetric(rep.Direct.PerSecond(), "direct-points/s")
	b.ReportMetric(rep.Ratio, "ratio")
	b.ReportMetric(rep.Drain.PerSecond(), "drain-points/s")
}
