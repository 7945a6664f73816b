package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// WebhookStats count a rule's webhook deliveries since it started on this instance.
type WebhookStats struct {
	Delivered uint64 `json:"delivered"`
	// FailedAttempts counts requests that failed (each retry counts).
	FailedAttempts uint64 `json:"failed_attempts"`
	// DeadLettered counts notifications given up on after the last attempt.
	DeadLettered uint64 `json:"dead_lettered"`
	// Pending is the number of notifications waiting for delivery.
	Pending   uint64 `json:"pending"`
	LastError string `json:"last_error,omitempty"`
}

// dispatcher delivers a rule's notifications to its webhooks. It reads rules/<name>/alerts
// with a durable consumer, so delivery survives restarts, never blocks the rule, and is
// shared by hub instances; the stream is its queue and at most MaxAckPending notifications
// are in memory. Notifications are delivered in order, one at a time, to every webhook of the
// rule in parallel; a notification is acknowledged once each webhook has it or has had it
// dead-lettered.
type dispatcher struct {
	m     *Manager
	rule  string
	hooks []Output
	cons  jetstream.Consumer
	log   *slog.Logger

	delivered, failed, dead, pending atomic.Uint64
	mu                               sync.Mutex
	lastErr                          string
}

// webhookConsumer names the durable consumer of a rule's webhooks (names are limited in
// length and characters, so it is a hash of the rule's name).
func webhookConsumer(rule string) string {
	sum := sha256.Sum256([]byte(rule))
	return "rules-wh-" + hex.EncodeToString(sum[:8])
}

func alertsSubject(rule string) string { return streams.SubjectPrefix + ".rules." + rule + ".alerts" }

func (m *Manager) newDispatcher(ctx context.Context, rule string, hooks []Output) (*dispatcher, error) {
	cons, err := m.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       webhookConsumer(rule),
		Description:   "webhooks of rule " + rule,
		FilterSubject: alertsSubject(rule),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 64,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook consumer of rule %s: %w", rule, err)
	}
	return &dispatcher{m: m, rule: rule, hooks: hooks, cons: cons, log: m.log.With("rule", rule, "part", "webhooks")}, nil
}

func (m *Manager) deleteWebhookConsumer(ctx context.Context, rule string) {
	err := m.stream.DeleteConsumer(ctx, webhookConsumer(rule))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		m.log.Debug("delete webhook consumer", "rule", rule, "err", err)
	}
}

func (d *dispatcher) stats() WebhookStats {
	d.mu.Lock()
	last := d.lastErr
	d.mu.Unlock()
	return WebhookStats{Delivered: d.delivered.Load(), FailedAttempts: d.failed.Load(),
		DeadLettered: d.dead.Load(), Pending: d.pending.Load(), LastError: last}
}

func (d *dispatcher) run(ctx context.Context) {
	it, err := d.cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		d.log.Warn("webhook delivery not started", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			continue
		}
		if md, err := msg.Metadata(); err == nil {
			d.pending.Store(md.NumPending + 1)
		}
		d.deliver(ctx, msg)
		if md, err := msg.Metadata(); err == nil {
			d.pending.Store(md.NumPending)
		}
	}
}

// deliver sends one notification to every webhook and acknowledges it, or hands it back to
// JetStream if the rule stops first (it is then delivered again: at least once).
func (d *dispatcher) deliver(ctx context.Context, msg jetstream.Msg) {
	env, err := streams.FromMsg(msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		_ = msg.Term()
		return
	}
	keep, stopKeep := context.WithCancel(ctx)
	go func() { // keep the message ours while retries wait
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-keep.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	var wg sync.WaitGroup
	for _, h := range d.hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.post(ctx, h, env)
		}()
	}
	wg.Wait()
	stopKeep()
	if ctx.Err() != nil {
		_ = msg.Nak()
		return
	}
	_ = msg.Ack()
}

// post delivers env to one webhook with retries, and dead-letters it after the last failure.
func (d *dispatcher) post(ctx context.Context, h Output, env *streams.Envelope) {
	backoff := dur(h.Backoff, DefaultBackoff)
	attempts := cmpInt(h.MaxAttempts, DefaultAttempts)
	var lastErr error
	n := 0
	for n < attempts {
		n++
		retry, err := d.try(ctx, h, env, n)
		if err == nil {
			d.delivered.Add(1)
			metricWebhooks.WithLabelValues(d.rule, "delivered").Inc()
			return
		}
		if ctx.Err() != nil {
			return
		}
		lastErr = err
		d.failed.Add(1)
		metricWebhooks.WithLabelValues(d.rule, "failed").Inc()
		d.mu.Lock()
		d.lastErr = fmt.Sprintf("%s: %v", h.URL, err)
		d.mu.Unlock()
		if !retry || n == attempts {
			break
		}
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	dl := *env
	dl.Meta = maps.Clone(env.Meta)
	if dl.Meta == nil {
		dl.Meta = map[string]string{}
	}
	dl.Meta["webhook"] = h.URL
	dl.Meta["attempts"] = strconv.Itoa(n)
	reason := fmt.Sprintf("webhook %s: %v (after %d attempts)", h.URL, lastErr, n)
	if err := d.m.bus.DeadLetter(ctx, &dl, reason); err != nil {
		d.log.Error("webhook notification lost: dead letter not stored", "url", h.URL, "id", env.ID, "reason", reason, "err", err)
		return
	}
	d.dead.Add(1)
	metricWebhooks.WithLabelValues(d.rule, "dead_lettered").Inc()
	d.log.Warn("webhook notification dead-lettered", "url", h.URL, "id", env.ID, "reason", reason)
}

func cmpInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// try makes one request. It reports whether a failure is worth retrying: network errors,
// timeouts, 408, 425, 429 and 5xx are; other answers are not.
func (d *dispatcher) try(ctx context.Context, h Output, env *streams.Envelope, attempt int) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, dur(h.Timeout, DefaultTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, h.URL, bytes.NewReader(env.Payload))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tributary-rules")
	req.Header.Set("X-Tributary-Rule", d.rule)
	req.Header.Set("X-Tributary-Id", env.ID)
	req.Header.Set("Idempotency-Key", env.ID)
	req.Header.Set("X-Tributary-Attempt", strconv.Itoa(attempt))
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	resp, err := d.m.http.Do(req)
	if err != nil {
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}
	c := resp.StatusCode
	return c == 408 || c == 425 || c == 429 || c >= 500, fmt.Errorf("HTTP %d", c)
}
