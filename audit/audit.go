// Package audit records security-relevant events (logins, key changes, device token
// rotations, ACL denials) on the JetStream stream AUDIT, one subject per event type under
// "audit.>", and reads them back for GET /api/v1/audit.
//
// Recording never blocks the caller: events are published asynchronously, and repeated
// logins (failed or successful) of one principal from one source address are folded into one
// event per minute with a count, so a flood of guesses — or of API requests — cannot flood the
// log.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tributary-iot/tributary/streams"
)

// Stream is the JetStream stream of audit events; SubjectPrefix + "." + type is each event's
// subject.
const (
	Stream        = "AUDIT"
	SubjectPrefix = "audit"
)

// Event types.
const (
	TypeLogin         = "login"          // a credential presented (API key, MQTT, CoAP/DTLS)
	TypeKeyCreated    = "key.created"    // an API key was created
	TypeKeyRevoked    = "key.revoked"    // an API key was revoked
	TypeTenantChanged = "tenant.changed" // a tenant was created or its quotas changed
	TypeTokenRotated  = "device.token"   // a device token was rotated
	TypeDenied        = "acl.denied"     // a valid credential tried what it may not
)

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
)

// Event is one audit record.
type Event struct {
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// Protocol is where it happened: "http", "mqtt", "coap", "coaps".
	Protocol string `json:"protocol,omitempty"`
	// Source is the remote address of the client.
	Source string `json:"source,omitempty"`
	// Principal is who acted ("admin-key", "key:<id>", "device:<id>", "app", or what was
	// claimed for a failed login).
	Principal string `json:"principal,omitempty"`
	// Tenant the principal or the object belongs to ("" for hub-wide).
	Tenant  string `json:"tenant,omitempty"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// Object is what was acted on (key ID, device ID, route, topic).
	Object string `json:"object,omitempty"`
	// Count, when set, is how many further identical logins (same principal, source, outcome
	// and reason) happened within one minute of Time; the first was recorded on its own.
	Count int `json:"count,omitempty"`
	// Seq is the stream sequence (set when read).
	Seq uint64 `json:"seq,omitempty"`
}

var (
	metricEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_audit_events_total",
		Help: "Audit events recorded, by type and outcome (folded failed logins count once per fold).",
	}, []string{"type", "outcome"})
	metricDropped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_audit_dropped_total",
		Help: "Audit events that could not be stored.",
	})
)

// Config of the audit log.
type Config struct {
	// Retention of the AUDIT stream (default 90 days).
	Retention time.Duration
	// Replicas of the stream (default 1).
	Replicas int
	// FoldWindow is how long failed logins from one source are folded (default 1 minute).
	FoldWindow time.Duration
}

// Log records and reads audit events.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	log    *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	folds map[foldKey]*fold
}

type foldKey struct{ typ, protocol, source, principal, outcome, reason string }

type fold struct {
	first time.Time
	count int // failures after the first, not yet recorded
	proto Event
}

// New creates (or updates) the AUDIT stream.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Log, error) {
	if cfg.Retention == 0 {
		cfg.Retention = 90 * 24 * time.Hour
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.FoldWindow == 0 {
		cfg.FoldWindow = time.Minute
	}
	st, err := streams.OpenStream(ctx, js, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Security-relevant events: logins, key changes, token rotations, ACL denials",
		Subjects:    []string{SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		MaxAge:      cfg.Retention,
		Replicas:    cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &Log{js: js, stream: st, cfg: cfg, log: log.With("component", "audit"), now: time.Now, folds: map[foldKey]*fold{}}, nil
}

// Record stores e without waiting. A login (failed or not) by the same principal from the same
// source with the same outcome and reason as one recorded within the fold window is counted
// instead, and the count written as one event when the window ends.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	if e.Type == TypeLogin {
		k := foldKey{e.Type, e.Protocol, e.Source, e.Principal, e.Outcome, e.Reason}
		l.mu.Lock()
		if f, ok := l.folds[k]; ok {
			f.count++
			l.mu.Unlock()
			return
		}
		l.folds[k] = &fold{first: e.Time, proto: e}
		l.mu.Unlock()
	}
	l.publish(e)
}

func (l *Log) publish(e Event) {
	data, err := json.Marshal(e)
	if err != nil {
		return
	}
	metricEvents.WithLabelValues(e.Type, e.Outcome).Inc()
	if _, err := l.js.PublishAsync(SubjectPrefix+"."+e.Type, data); err != nil {
		metricDropped.Inc()
		l.log.Warn("audit event not stored", "type", e.Type, "err", err)
	}
}

// Run writes folded failures as their windows end, until ctx ends (then writes what is left).
func (l *Log) Run(ctx context.Context) error {
	t := time.NewTicker(l.cfg.FoldWindow / 6)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.flush(time.Time{})
			return nil
		case <-t.C:
			l.flush(l.now())
		}
	}
}

// flush writes the folds whose window ended by now (every fold when now is zero).
func (l *Log) flush(now time.Time) {
	l.mu.Lock()
	var out []Event
	for k, f := range l.folds {
		if !now.IsZero() && now.Sub(f.first) < l.cfg.FoldWindow {
			continue
		}
		delete(l.folds, k)
		if f.count > 0 {
			e := f.proto
			e.Count = f.count
			e.Reason = strings.TrimSpace(e.Reason + fmt.Sprintf(" (%d more within %s)", f.count, l.cfg.FoldWindow))
			out = append(out, e)
		}
	}
	l.mu.Unlock()
	for _, e := range out {
		l.publish(e)
	}
}

// Query selects events in Read.
type Query struct {
	// Since keeps events at or after this time (zero: from the beginning).
	Since time.Time
	// Type keeps one type ("login") or a type family ("key" matches key.created and
	// key.revoked); "" keeps all.
	Type string
	// Tenant keeps events of one tenant ("" keeps all).
	Tenant string
	// Limit caps the answer (default 100, at most 1000); the newest are kept.
	Limit int
}

// MaxRead is the most events one Read returns.
const MaxRead = 1000

// Read returns the matching events, oldest first.
func (l *Log) Read(ctx context.Context, q Query) ([]Event, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, MaxRead)
	subjects := []string{SubjectPrefix + ".>"}
	if q.Type != "" {
		subjects = []string{SubjectPrefix + "." + q.Type}
		if !strings.Contains(q.Type, ".") {
			subjects = append(subjects, SubjectPrefix+"."+q.Type+".>")
		}
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects}
	if !q.Since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		since := q.Since
		cfg.OptStartTime = &since
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := l.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	var out []Event
	last := info.State.LastSeq
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return nil, fmt.Errorf("read audit: %w", err)
		}
		n := 0
		done := false
		for m := range batch.Messages() {
			n++
			var e Event
			md, _ := m.Metadata()
			if json.Unmarshal(m.Data(), &e) != nil {
				continue
			}
			if md != nil {
				e.Seq = md.Sequence.Stream
				if e.Seq >= last {
					done = true
				}
			}
			if q.Tenant != "" && e.Tenant != q.Tenant {
				continue
			}
			out = append(out, e)
			if len(out) > q.Limit {
				out = out[1:]
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("read audit: %w", err)
		}
		if done || n == 0 {
			return out, nil
		}
	}
}
