package tsdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
	lp "github.com/influxdata/line-protocol"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streams"
)

// Bus is what the writer needs of the hub's streams. *streams.Bus satisfies it.
type Bus interface {
	// JetStream gives access to the IOT stream, where the writer's durable consumer lives.
	JetStream() jetstream.JetStream
	// DeadLetter stores a message InfluxDB refused, with the reason.
	DeadLetter(ctx context.Context, env *streams.Envelope, reason string) error
}

// Writer stores messages of the IOT stream in InfluxDB through a durable JetStream consumer.
//
// A message is acknowledged only after the write request holding its points has succeeded, so
// nothing is lost when InfluxDB or the hub stops; points are idempotent (see Mapper), so what
// is written twice is stored once. While InfluxDB fails, the writer retries the same batch with
// exponential backoff and jitter and fetches nothing more: the consumer lags (Lag, Status,
// tributary_tsdb_consumer_lag) and at most MaxAckPending messages are held in memory. When
// InfluxDB refuses points (HTTP 400/422 "partial write", "unable to parse", or 413), the batch is
// split in halves until the refused message is alone; that message goes to dead letters with
// InfluxDB's reason and the rest is stored.
type Writer struct {
	cfg    Config
	m      Mapping
	bus    Bus
	log    *slog.Logger
	name   string
	client influxdb2.Client
	api    api.WriteAPIBlocking
	ready  chan struct{}

	mPoints, mMessages, mDead, mUnavail, mRejected prometheus.Counter
	mWrite                                         prometheus.Observer
	mLag, mUp                                      prometheus.Gauge

	mu     sync.Mutex
	cons   jetstream.Consumer
	status Status
}

// Status is the writer's state for /readyz detail.
type Status struct {
	Consumer string `json:"consumer"`
	Subject  string `json:"subject"`
	// Running: the consumer is set up and messages are being consumed.
	Running bool `json:"running"`
	// Lag is the number of messages not yet written, as of the last refresh.
	Lag uint64 `json:"lag"`
	// Healthy is false while writes to InfluxDB fail; LastError says why.
	Healthy      bool      `json:"healthy"`
	LastError    string    `json:"last_error,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	LastWrite    time.Time `json:"last_write,omitzero"`
	// Written and DeadLettered count messages since the writer started.
	Written      uint64 `json:"written"`
	DeadLettered uint64 `json:"dead_lettered"`
}

// NewWriter builds a writer for m into the InfluxDB of cfg (cfg.URL is required).
func NewWriter(bus Bus, cfg Config, m Mapping, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	switch {
	case cfg.URL == "":
		return nil, errors.New("tsdb: influx_url is required for a writer")
	case m.Map == nil:
		return nil, errors.New("tsdb: mapping has no Map function")
	case m.Subject == "" || strings.ContainsAny(m.Subject, " \t\r\n"):
		return nil, fmt.Errorf("tsdb: mapping subject %q is not a NATS subject filter", m.Subject)
	}
	name := m.Durable
	if name == "" {
		name = consumerName(cfg, m.Subject)
	}
	opts := influxdb2.DefaultOptions().
		SetPrecision(time.Nanosecond).
		SetHTTPRequestTimeout(uint(max(1, (cfg.WriteTimeout+time.Second-1)/time.Second)))
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, opts)
	w := &Writer{
		cfg: cfg, m: m, bus: bus, name: name, client: client,
		api:   client.WriteAPIBlocking(cfg.Org, cfg.Bucket),
		log:   log.With("component", "tsdb", "consumer", name),
		ready: make(chan struct{}),

		mPoints:   metricPoints.WithLabelValues(name),
		mMessages: metricMessages.WithLabelValues(name),
		mDead:     metricDeadLettered.WithLabelValues(name),
		mUnavail:  metricWriteErrors.WithLabelValues(name, "unavailable"),
		mRejected: metricWriteErrors.WithLabelValues(name, "rejected"),
		mWrite:    metricWriteSeconds.WithLabelValues(name),
		mLag:      metricLag.WithLabelValues(name),
		mUp:       metricUp.WithLabelValues(name),
	}
	w.status = Status{Consumer: name, Subject: m.Subject, Healthy: true}
	w.mUp.Set(1)
	return w, nil
}

// Consumer is the durable consumer's name.
func (w *Writer) Consumer() string { return w.name }

// Ready is closed once the consumer is set up.
func (w *Writer) Ready() <-chan struct{} { return w.ready }

// Status returns the writer's state; Lag is as of the last refresh (Config.LagInterval).
func (w *Writer) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Lag asks JetStream how many messages are not yet written: those not yet delivered plus those
// delivered and not yet acknowledged.
func (w *Writer) Lag(ctx context.Context) (uint64, error) {
	w.mu.Lock()
	cons := w.cons
	w.mu.Unlock()
	if cons == nil {
		return 0, errors.New("tsdb: writer not running")
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", w.name, err)
	}
	lag := info.NumPending + uint64(info.NumAckPending)
	w.mLag.Set(float64(lag))
	w.mu.Lock()
	w.status.Lag = lag
	w.mu.Unlock()
	return lag, nil
}

// Run consumes and writes until ctx ends. A write in progress is finished (within
// WriteTimeout) and acknowledged; messages still held are handed back to JetStream at once.
func (w *Writer) Run(ctx context.Context) error {
	defer w.client.Close()
	cons, err := w.setup(ctx)
	if err != nil {
		return nil // ctx ended while JetStream was unavailable
	}
	w.mu.Lock()
	w.cons = cons
	w.status.Running = true
	w.mu.Unlock()
	close(w.ready)
	w.log.Info("writing to influxdb", "influx", w.cfg, "subject", w.m.Subject)

	// Three stages overlap: fetch, decode and encode, write. Channels are unbuffered, so at
	// most three batches are held, one per stage.
	fetched, prepared := make(chan *batch), make(chan *batch)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		w.pollLag(ctx)
	}()
	go func() {
		defer wg.Done()
		defer close(fetched)
		w.fetchLoop(ctx, cons, fetched)
	}()
	go func() {
		defer wg.Done()
		defer close(prepared)
		for b := range fetched {
			w.prepare(b)
			if !w.hand(ctx, b, prepared) {
				b.nakRest()
			}
		}
	}()
	for b := range prepared {
		if ctx.Err() != nil || !w.writeBatch(ctx, b) {
			b.nakRest()
		}
	}
	wg.Wait()
	w.mu.Lock()
	w.status.Running = false
	w.mu.Unlock()
	return nil
}

func (w *Writer) setup(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       w.name,
		Description:   "tributary: " + w.m.Subject + " into InfluxDB " + w.cfg.URL + " " + w.cfg.Bucket,
		FilterSubject: w.m.Subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: w.cfg.MaxAckPending,
	}
	backoff := w.cfg.MinBackoff
	for {
		cons, err := w.bus.JetStream().CreateOrUpdateConsumer(ctx, streams.StreamMessages, cfg)
		if err == nil {
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		w.log.Warn("cannot set up consumer; retrying", "err", err)
		if !sleepCtx(ctx, jitter(backoff)) {
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, w.cfg.MaxBackoff)
	}
}

func (w *Writer) pollLag(ctx context.Context) {
	t := time.NewTicker(w.cfg.LagInterval)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, w.cfg.LagInterval)
		if _, err := w.Lag(lctx); err != nil && ctx.Err() == nil {
			w.log.Debug("consumer lag", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// item is one message with its encoded points.
type item struct {
	msg    jetstream.Msg
	env    *streams.Envelope
	lines  string // line protocol, one line per point, each ending in '\n'
	points int
	err    error // the message could not be mapped
	done   bool  // acknowledged, dead-lettered or handed back
}

type batch struct {
	items   []item
	touched time.Time // last time the messages' AckWait was reset
}

// keepAlive resets AckWait of the messages not yet done, so JetStream does not redeliver
// messages that are held through an outage.
func (b *batch) keepAlive() {
	for i := range b.items {
		if !b.items[i].done {
			_ = b.items[i].msg.InProgress()
		}
	}
	b.touched = time.Now()
}

// nakRest hands the messages not yet done back to JetStream for immediate redelivery.
func (b *batch) nakRest() {
	for i := range b.items {
		if it := &b.items[i]; !it.done {
			_ = it.msg.Nak()
			it.done = true
		}
	}
}

const idleWait = 5 * time.Second

func (w *Writer) fetchLoop(ctx context.Context, cons jetstream.Consumer, out chan<- *batch) {
	backoff := w.cfg.MinBackoff
	for ctx.Err() == nil {
		msgs, err := w.fetch(ctx, cons)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("fetch from stream failed; retrying", "err", err)
			if !sleepCtx(ctx, jitter(backoff)) {
				break
			}
			backoff = min(2*backoff, w.cfg.MaxBackoff)
		} else {
			backoff = w.cfg.MinBackoff
		}
		if len(msgs) == 0 {
			continue
		}
		b := newBatch(msgs)
		if !w.hand(ctx, b, out) {
			b.nakRest()
			return
		}
	}
}

// fetch takes what is pending at once; when nothing is, it waits for the first message, then
// gives the batch FlushInterval to fill.
func (w *Writer) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	size := w.cfg.BatchSize
	msgs, err := collect(cons.FetchNoWait(size))
	if err != nil || len(msgs) == size {
		return msgs, err
	}
	if len(msgs) == 0 {
		wctx, cancel := context.WithTimeout(ctx, idleWait)
		msgs, err = collect(cons.Fetch(1, jetstream.FetchContext(wctx)))
		cancel()
		if len(msgs) == 0 {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				err = nil
			}
			return nil, err
		}
	}
	if size == len(msgs) {
		return msgs, nil
	}
	var more []jetstream.Msg
	if w.cfg.FlushInterval > 0 {
		more, err = collect(cons.Fetch(size-len(msgs), jetstream.FetchMaxWait(w.cfg.FlushInterval)))
	} else {
		more, err = collect(cons.FetchNoWait(size - len(msgs)))
	}
	if err != nil {
		w.log.Debug("fetch", "err", err)
	}
	return append(msgs, more...), nil
}

func collect(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return msgs, err
	}
	return msgs, nil
}

func newBatch(msgs []jetstream.Msg) *batch {
	b := &batch{items: make([]item, len(msgs)), touched: time.Now()}
	for i, m := range msgs {
		b.items[i].msg = m
	}
	return b
}

// prepare decodes and encodes the batch's messages, in parallel for large batches.
func (w *Writer) prepare(b *batch) {
	workers := min(runtime.GOMAXPROCS(0), 8, (len(b.items)+511)/512)
	if workers <= 1 {
		w.prepareRange(b.items)
		return
	}
	var wg sync.WaitGroup
	per := (len(b.items) + workers - 1) / workers
	for lo := 0; lo < len(b.items); lo += per {
		hi := min(lo+per, len(b.items))
		wg.Go(func() { w.prepareRange(b.items[lo:hi]) })
	}
	wg.Wait()
}

func (w *Writer) prepareRange(items []item) {
	var buf bytes.Buffer
	enc := lp.NewEncoder(&buf)
	enc.SetFieldTypeSupport(lp.UintSupport)
	enc.FailOnFieldErr(true)
	enc.SetPrecision(time.Nanosecond)
	for i := range items {
		it := &items[i]
		msg := it.msg
		env, err := streams.FromMsg(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			it.env = &streams.Envelope{Topic: msg.Subject(), Payload: msg.Data()}
			it.err = fmt.Errorf("undecodable message: %w", err)
			continue
		}
		if md, err := msg.Metadata(); err == nil {
			env.Seq = md.Sequence.Stream
		}
		it.env = env
		pts, err := w.m.Map(env)
		if err != nil {
			it.err = err
			continue
		}
		buf.Reset()
		for _, p := range pts {
			if _, err := enc.Encode(p); err != nil {
				it.err = fmt.Errorf("encode point: %w", err)
				break
			}
		}
		if it.err == nil {
			it.lines, it.points = buf.String(), len(pts)
		}
	}
}

// hand passes b to the next stage, keeping its messages alive while it waits.
func (w *Writer) hand(ctx context.Context, b *batch, out chan<- *batch) bool {
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case out <- b:
			return true
		case <-t.C:
			b.keepAlive()
		case <-ctx.Done():
			return false
		}
	}
}

// writeBatch stores b; false means ctx ended before everything was done.
func (w *Writer) writeBatch(ctx context.Context, b *batch) bool {
	var ok []*item
	for i := range b.items {
		it := &b.items[i]
		switch {
		case it.err != nil:
			w.deadLetter(ctx, it, "tsdb: cannot store message: "+it.err.Error())
		case it.points == 0:
			_ = it.msg.Ack()
			it.done = true
		default:
			ok = append(ok, it)
		}
	}
	return len(ok) == 0 || w.write(ctx, b, ok)
}

// write stores items (a part of b) with retries, splitting on rejected points.
func (w *Writer) write(ctx context.Context, b *batch, items []*item) bool {
	var body strings.Builder
	n, points := 0, 0
	for _, it := range items {
		n += len(it.lines)
		points += it.points
	}
	body.Grow(n)
	for _, it := range items {
		body.WriteString(it.lines)
	}
	backoff := w.cfg.MinBackoff
	for {
		if time.Since(b.touched) > w.cfg.AckWait/3 {
			b.keepAlive()
		}
		start := time.Now()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.WriteTimeout)
		err := w.api.WriteRecord(wctx, body.String())
		cancel()
		if err == nil {
			w.mWrite.Observe(time.Since(start).Seconds())
			for _, it := range items {
				_ = it.msg.Ack()
				it.done = true
			}
			w.mPoints.Add(float64(points))
			w.mMessages.Add(float64(len(items)))
			w.noteSuccess(len(items))
			return true
		}
		if reason, rejected := rejection(err); rejected {
			w.mRejected.Inc()
			if len(items) == 1 {
				w.deadLetter(ctx, items[0], "influxdb rejected the point: "+reason)
				return true
			}
			mid := len(items) / 2
			return w.write(ctx, b, items[:mid]) && w.write(ctx, b, items[mid:])
		}
		w.mUnavail.Inc()
		w.noteFailure(err)
		if ctx.Err() != nil || !w.sleep(ctx, b, jitter(backoff)) {
			return false
		}
		backoff = min(2*backoff, w.cfg.MaxBackoff)
	}
}

// rejection tells refused points (dead-lettered once alone) from failures of InfluxDB or of the
// configuration (retried): a wrong org or bucket must not send every message to dead letters.
func rejection(err error) (string, bool) {
	var he *ihttp.Error
	if !errors.As(err, &he) {
		return "", false
	}
	reason := he.Message
	if reason == "" {
		reason = he.Error()
	}
	switch he.StatusCode {
	case 413:
		return "request too large: " + reason, true
	case 400, 422:
		l := strings.ToLower(reason)
		for _, s := range []string{"partial write", "unable to parse", "failed to parse", "field type conflict"} {
			if strings.Contains(l, s) {
				return reason, true
			}
		}
	}
	return "", false
}

func (w *Writer) deadLetter(ctx context.Context, it *item, reason string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.WriteTimeout)
	defer cancel()
	if err := w.bus.DeadLetter(dctx, it.env, reason); err != nil {
		w.log.Error("dead letter not stored; the message will be retried", "msg", it.env.String(), "reason", reason, "err", err)
		_ = it.msg.NakWithDelay(w.cfg.MaxBackoff)
		it.done = true
		return
	}
	w.log.Warn("message dead-lettered", "msg", it.env.String(), "reason", reason)
	_ = it.msg.Ack()
	it.done = true
	w.mDead.Inc()
	w.mu.Lock()
	w.status.DeadLettered++
	w.mu.Unlock()
}

// sleep waits d unless ctx ends, keeping b's messages alive.
func (w *Writer) sleep(ctx context.Context, b *batch, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if time.Since(b.touched) > w.cfg.AckWait/3 {
			b.keepAlive()
		}
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		if !sleepCtx(ctx, min(left, w.cfg.AckWait/3)) {
			return false
		}
	}
}

func (w *Writer) noteSuccess(msgs int) {
	w.mu.Lock()
	recovered := !w.status.Healthy
	since := w.status.FailingSince
	w.status.Healthy, w.status.LastError, w.status.FailingSince = true, "", time.Time{}
	w.status.LastWrite = time.Now()
	w.status.Written += uint64(msgs)
	w.mu.Unlock()
	if recovered {
		w.mUp.Set(1)
		w.log.Info("influxdb writes succeed again", "after", time.Since(since).Round(time.Millisecond))
	}
}

func (w *Writer) noteFailure(err error) {
	w.mu.Lock()
	first := w.status.Healthy
	w.status.Healthy, w.status.LastError = false, err.Error()
	if first {
		w.status.FailingSince = time.Now()
	}
	w.mu.Unlock()
	if first {
		w.mUp.Set(0)
		w.log.Warn("influxdb write failed; retrying with backoff, the stream holds the messages", "err", err)
	}
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
