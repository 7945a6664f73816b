// Package tsdbbench measures the InfluxDB writer: sustained points/s from the stream into
// InfluxDB against the database's own ceiling (direct batch writes of the same points with
// influxdb-client-go), the delay from publish until a point is queryable, and the catch-up
// after an outage. The tsdb benchmarks and the whole-system benchmark command call it.
package tsdbbench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/tsdb"
)

// Bus is what the benchmarks need of the hub's streams. *streams.Bus satisfies it.
type Bus interface {
	tsdb.Bus
	Publish(ctx context.Context, env *streams.Envelope) (uint64, error)
	PublishAsync(env *streams.Envelope) error
}

// Fields of every benchmark message: a typical sensor reading, one point of three fields.
const Payload = `{"temperature":%.2f,"humidity":%.1f,"battery":%.3f}`

// epoch is the event time of message 0; message i is at epoch + i µs.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func device(i, devices int) string { return fmt.Sprintf("bench-%d", i%devices) }

func values(i int) (float64, float64, float64) {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	return 15 + 10*r.Float64(), 30 + 40*r.Float64(), 3 + r.Float64()
}

// Message is benchmark message i, as a device would send it.
func Message(i, devices int) *streams.Envelope {
	dev := device(i, devices)
	t, h, b := values(i)
	env := &streams.Envelope{
		DeviceID: dev, Topic: "devices/" + dev + "/telemetry", ContentType: "application/json", Protocol: "mqtt",
		EventTime: epoch.Add(time.Duration(i) * time.Microsecond),
		Payload:   fmt.Appendf(nil, Payload, t, h, b),
	}
	env.Stamp(time.Now())
	return env
}

// Point is the point the writer makes of Message(i, devices) for a device without registry entry.
func Point(measurement string, i, devices int) *write.Point {
	t, h, b := values(i)
	// Round-trip through JSON as the device payload does, so the values are identical.
	var f map[string]float64
	_ = json.Unmarshal(fmt.Appendf(nil, Payload, t, h, b), &f)
	return write.NewPoint(measurement, map[string]string{tsdb.TagDevice: device(i, devices)},
		map[string]any{"temperature": f["temperature"], "humidity": f["humidity"], "battery": f["battery"]},
		epoch.Add(time.Duration(i)*time.Microsecond))
}

// Rate is an amount of points over a duration.
type Rate struct {
	Points  int
	Elapsed time.Duration
}

// PerSecond is Points / Elapsed.
func (r Rate) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Points) / r.Elapsed.Seconds()
}

func (r Rate) String() string {
	return fmt.Sprintf("%d points in %v = %.0f points/s", r.Points, r.Elapsed.Round(time.Millisecond), r.PerSecond())
}

// Bench is a running writer to measure, with the bus it consumes.
type Bench struct {
	bus     Bus
	cfg     tsdb.Config
	w       *tsdb.Writer
	stop    func()
	devices int
	next    int // index of the next message to publish
}

var runs atomic.Int64

// Start runs a writer of cfg with a consumer of its own (removed by Close), which starts at the
// end of the stream's current content.
func Start(ctx context.Context, bus Bus, cfg tsdb.Config, devices int, log *slog.Logger) (*Bench, error) {
	if devices <= 0 {
		devices = 100
	}
	m := tsdb.TelemetryMapping(nil, cfg.Measurement)
	m.Durable = fmt.Sprintf("tsdbbench-%d-%d", time.Now().UnixNano()%1e9, runs.Add(1))
	w, err := tsdb.NewWriter(bus, cfg, m, log)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(wctx)
	}()
	b := &Bench{bus: bus, cfg: cfg, w: w, devices: devices, next: int(runs.Load()) << 32}
	b.stop = func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = bus.JetStream().DeleteConsumer(dctx, streams.StreamMessages, m.Durable)
	}
	select {
	case <-w.Ready():
	case <-time.After(30 * time.Second):
		b.stop()
		return nil, errors.New("writer not ready within 30s")
	}
	// Messages already in the stream are written first; wait for them.
	lag, err := w.Lag(ctx)
	if err == nil {
		err = b.waitWritten(ctx, lag, 10*time.Minute)
	}
	if err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// Close stops the writer and removes its consumer.
func (b *Bench) Close() { b.stop() }

// Writer is the writer being measured.
func (b *Bench) Writer() *tsdb.Writer { return b.w }

func (b *Bench) handled() uint64 {
	st := b.w.Status()
	return st.Written + st.DeadLettered
}

// waitWritten polls until the writer has handled want messages in all.
func (b *Bench) waitWritten(ctx context.Context, want uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for b.handled() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("writer handled %d of %d messages within %v (last error %q)", b.handled(), want, timeout, b.w.Status().LastError)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
	return nil
}

// publishAll publishes messages [from, to) asynchronously from several goroutines, as many
// devices would, and waits until JetStream has stored them.
func (b *Bench) publishAll(ctx context.Context, from, to int) error {
	const publishers = 4
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := from + p; i < to; i += publishers {
				if ctx.Err() != nil {
					return
				}
				if err := b.bus.PublishAsync(Message(i, b.devices)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return waitAsync(ctx, b.bus)
}

func waitAsync(ctx context.Context, bus Bus) error {
	select {
	case <-bus.JetStream().PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return errors.New("asynchronous publishes not acknowledged within a minute")
	}
}

// Hub publishes n messages (one point each) as fast as JetStream takes them while the writer
// stores them, and measures from the first publish until the writer has written the last.
func (b *Bench) Hub(ctx context.Context, n int) (Rate, error) {
	before := b.handled()
	from := b.next
	b.next += n
	start := time.Now()
	if err := b.publishAll(ctx, from, from+n); err != nil {
		return Rate{}, err
	}
	if err := b.waitWritten(ctx, before+uint64(n), 10*time.Minute); err != nil {
		return Rate{}, err
	}
	return Rate{Points: n, Elapsed: time.Since(start)}, nil
}

// Publish stores messages [from, from+n) in the stream without a writer running.
func Publish(ctx context.Context, bus Bus, from, n, devices int) error {
	return (&Bench{bus: bus, devices: devices}).publishAll(ctx, from, from+n)
}

// Drain measures how fast a new writer (a consumer of its own, starting at the beginning of
// the stream) writes everything the stream holds: the writer's own rate, with no publishing
// competing for CPU.
func Drain(ctx context.Context, bus Bus, cfg tsdb.Config, devices int, log *slog.Logger) (Rate, error) {
	held, err := streamMessages(ctx, bus)
	if err != nil {
		return Rate{}, err
	}
	start := time.Now()
	b, err := Start(ctx, bus, cfg, devices, log)
	if err != nil {
		return Rate{}, err
	}
	elapsed := time.Since(start)
	b.Close()
	return Rate{Points: held, Elapsed: elapsed}, nil
}

func streamMessages(ctx context.Context, bus Bus) (int, error) {
	s, err := bus.JetStream().Stream(ctx, streams.StreamMessages)
	if err != nil {
		return 0, err
	}
	return int(s.CachedInfo().State.Msgs), nil
}

// StreamCeiling reads and acknowledges everything the stream holds with a new durable
// consumer, the way the writer does (batches of batch, an ack per message) but without
// decoding or InfluxDB: the ceiling the stream sets for the writer on this machine.
func StreamCeiling(ctx context.Context, bus Bus, batch int) (Rate, error) {
	name := fmt.Sprintf("tsdbbench-ceiling-%d", runs.Add(1))
	js := bus.JetStream()
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.StreamMessages, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4 * batch, FilterSubject: tsdb.TelemetrySubject})
	if err != nil {
		return Rate{}, err
	}
	defer js.DeleteConsumer(context.WithoutCancel(ctx), streams.StreamMessages, name)
	want := int(cons.CachedInfo().NumPending)
	start := time.Now()
	for got := 0; got < want; {
		b, err := cons.Fetch(batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return Rate{}, err
		}
		for m := range b.Messages() {
			_ = m.Ack()
			got++
		}
		if err := ctx.Err(); err != nil {
			return Rate{}, err
		}
	}
	return Rate{Points: want, Elapsed: time.Since(start)}, nil
}

// DirectThroughput writes the points of messages [first, first+n) straight into cfg's bucket
// with influxdb-client-go's blocking write API in batches of cfg.BatchSize, one request after
// the other like the writer: the database's ceiling for one writer. Points are built before
// the clock starts; encoding them is part of the measured work.
func DirectThroughput(ctx context.Context, cfg tsdb.Config, first, n, devices int) (Rate, error) {
	batch := cfg.BatchSize
	if batch <= 0 {
		batch = tsdb.DefaultBatchSize
	}
	measurement := cmpOr(cfg.Measurement, tsdb.DefaultMeasurement)
	pts := make([]*write.Point, n)
	for i := range pts {
		pts[i] = Point(measurement, first+i, devices)
	}
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, influxdb2.DefaultOptions().SetPrecision(time.Nanosecond))
	defer client.Close()
	api := client.WriteAPIBlocking(cfg.Org, cfg.Bucket)
	start := time.Now()
	for lo := 0; lo < n; lo += batch {
		if err := api.WritePoint(ctx, pts[lo:min(lo+batch, n)]...); err != nil {
			return Rate{}, fmt.Errorf("direct write: %w", err)
		}
	}
	return Rate{Points: n, Elapsed: time.Since(start)}, nil
}

// Latency publishes samples messages one at a time and measures each until a Flux query finds
// its point; it returns the 50th and 99th percentiles.
func (b *Bench) Latency(ctx context.Context, samples int) (p50, p99 time.Duration, err error) {
	client := influxdb2.NewClient(b.cfg.URL, b.cfg.Token)
	defer client.Close()
	qapi := client.QueryAPI(b.cfg.Org)
	measurement := cmpOr(b.cfg.Measurement, tsdb.DefaultMeasurement)
	var delays []time.Duration
	for range samples {
		i := b.next
		b.next++
		env := Message(i, 1)
		env.DeviceID, env.Topic = "latency-probe", "devices/latency-probe/telemetry"
		at := env.EventTime
		flux := fmt.Sprintf(`from(bucket: %q) |> range(start: %s, stop: %s) |> filter(fn: (r) => r._measurement == %q and r.device == "latency-probe" and r._field == "battery")`,
			b.cfg.Bucket, at.Format(time.RFC3339Nano), at.Add(time.Microsecond).Format(time.RFC3339Nano), measurement)
		start := time.Now()
		if _, err := b.bus.Publish(ctx, env); err != nil {
			return 0, 0, err
		}
		for {
			res, err := qapi.Query(ctx, flux)
			if err != nil {
				return 0, 0, fmt.Errorf("latency probe: %w", err)
			}
			found := res.Next()
			res.Close()
			if found {
				break
			}
			if time.Since(start) > time.Minute {
				return 0, 0, errors.New("latency probe not queryable within a minute")
			}
		}
		delays = append(delays, time.Since(start))
	}
	slices.Sort(delays)
	return delays[len(delays)*50/100], delays[min(len(delays)-1, len(delays)*99/100)], nil
}

// CatchUpReport describes recovery from an outage.
type CatchUpReport struct {
	Outage time.Duration
	// Backlog is what was published during the outage, at PublishRate points/s.
	Backlog     int
	PublishRate int
	// Recovery is the time from InfluxDB answering again until the first successful write
	// (the writer's backoff); Drain the rate from then until the backlog was written.
	Recovery time.Duration
	Drain    Rate
}

// CatchUp stops InfluxDB with stop, publishes at rate messages/s for outage, starts it again
// with start and measures how fast the writer catches up.
func (b *Bench) CatchUp(ctx context.Context, outage time.Duration, rate int, stop, start func() error) (CatchUpReport, error) {
	before := b.handled()
	if err := stop(); err != nil {
		return CatchUpReport{}, err
	}
	rep := CatchUpReport{Outage: outage, PublishRate: rate}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(1, rate/100)
	for t0 := time.Now(); time.Since(t0) < outage; {
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-tick.C:
		}
		for range per {
			if err := b.bus.PublishAsync(Message(b.next, b.devices)); err != nil {
				return rep, err
			}
			b.next++
			rep.Backlog++
		}
	}
	if err := waitAsync(ctx, b.bus); err != nil {
		return rep, err
	}
	if err := start(); err != nil {
		return rep, err
	}
	up := time.Now()
	for b.handled() == before {
		if time.Since(up) > 5*time.Minute {
			return rep, errors.New("no write within 5 minutes of InfluxDB's return")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	drainStart := time.Now()
	rep.Recovery = drainStart.Sub(up)
	if err := b.waitWritten(ctx, before+uint64(rep.Backlog), 10*time.Minute); err != nil {
		return rep, err
	}
	rep.Drain = Rate{Points: rep.Backlog, Elapsed: time.Since(drainStart)}
	return rep, nil
}

// Report is the outcome of Run.
type Report struct {
	// Hub: devices publishing while the writer stores (sustained, end to end). Direct: the
	// same points written straight to InfluxDB (its ceiling). Drain: the writer alone, writing
	// a backlog. Stream: reading and acknowledging the backlog without decoding or InfluxDB.
	Hub, Direct, Drain, Stream Rate
	// Ratio is Hub / Direct points per second; DrainRatio is Drain / Direct.
	Ratio, DrainRatio float64
	P50, P99          time.Duration
	CatchUp           *CatchUpReport
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hub → influxdb:   %s\n", r.Hub)
	fmt.Fprintf(&b, "direct (ceiling): %s\n", r.Direct)
	fmt.Fprintf(&b, "ratio:            %.2f (target ≥ 0.80)\n", r.Ratio)
	fmt.Fprintf(&b, "writer alone, draining a backlog: %s (%.2f of direct)\n", r.Drain, r.DrainRatio)
	fmt.Fprintf(&b, "stream read+ack alone (no InfluxDB): %s\n", r.Stream)
	fmt.Fprintf(&b, "publish → queryable: p50 %v, p99 %v\n", r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond))
	if c := r.CatchUp; c != nil {
		fmt.Fprintf(&b, "catch-up after a %v outage: backlog %d points (published at %d/s), first write %v after InfluxDB returned, drained at %.0f points/s (%v)\n",
			c.Outage, c.Backlog, c.PublishRate, c.Recovery.Round(time.Millisecond), c.Drain.PerSecond(), c.Drain.Elapsed.Round(time.Millisecond))
	}
	return b.String()
}

// Options for Run.
type Options struct {
	Bus Bus
	// Hub and Direct are writer configs for two fresh buckets of the same InfluxDB.
	Hub, Direct tsdb.Config
	Points      int // default 200,000
	Devices     int // default 100
	Samples     int // latency samples, default 200
	// Outage > 0 with Stop and Start measures catch-up, publishing at OutageRate (default 5000/s).
	Outage      time.Duration
	OutageRate  int
	Stop, Start func() error
	Log         *slog.Logger
}

// Run measures everything in one go.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Points <= 0 {
		o.Points = 200_000
	}
	if o.Devices <= 0 {
		o.Devices = 100
	}
	if o.Samples <= 0 {
		o.Samples = 200
	}
	if o.OutageRate <= 0 {
		o.OutageRate = 5000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var rep Report
	var err error
	if rep.Direct, err = DirectThroughput(ctx, o.Direct, 0, o.Points, o.Devices); err != nil {
		return rep, err
	}
	b, err := Start(ctx, o.Bus, o.Hub, o.Devices, o.Log)
	if err != nil {
		return rep, err
	}
	defer b.Close()
	b.next = 0
	if rep.Hub, err = b.Hub(ctx, o.Points); err != nil {
		return rep, err
	}
	rep.Ratio = rep.Hub.PerSecond() / rep.Direct.PerSecond()
	if rep.Drain, err = Drain(ctx, o.Bus, o.Hub, o.Devices, o.Log); err != nil {
		return rep, err
	}
	rep.DrainRatio = rep.Drain.PerSecond() / rep.Direct.PerSecond()
	if rep.Stream, err = StreamCeiling(ctx, o.Bus, cmp.Or(o.Hub.BatchSize, tsdb.DefaultBatchSize)); err != nil {
		return rep, err
	}
	if rep.P50, rep.P99, err = b.Latency(ctx, o.Samples); err != nil {
		return rep, err
	}
	if o.Outage > 0 && o.Stop != nil && o.Start != nil {
		c, err := b.CatchUp(ctx, o.Outage, o.OutageRate, o.Stop, o.Start)
		if err != nil {
			return rep, err
		}
		rep.CatchUp = &c
	}
	return rep, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
