package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var metricRetentionPurged = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "tributary_retention_purged_total",
	Help: "Messages purged from the IOT stream because they were older than their tenant's retention quota.",
}, []string{"tenant"})

// TenantRetention is one tenant's retention quota and the devices it owns.
type TenantRetention struct {
	Tenant    string
	Retention time.Duration
	Devices   []string
}

// Leases runs work once cluster-wide. *lease.Store satisfies it.
type Leases interface {
	Hold(ctx context.Context, name string, work func(ctx context.Context)) error
}

// RetentionLease is the name of the lease under which one instance enforces tenant retention.
const RetentionLease = "retention"

// DefaultRetentionInterval is how often tenant retention is enforced when none is configured.
const DefaultRetentionInterval = time.Minute

// Retainer enforces per-tenant retention on the IOT stream: each interval, for every tenant
// whose retention is shorter than the stream's MaxAge, it purges the messages of the tenant's
// devices (subjects iot.devices.<id>.>) stored before now minus the tenant retention. A
// retention at or above the stream's cannot keep messages longer: MaxAge removes them first.
//
// Purges are idempotent (a second purge of the same range removes nothing), so running on
// several instances would be harmless; with UseLeases only the lease holder runs them, which
// saves the duplicate work and keeps the purged-message metric counted once.
type Retainer struct {
	bus      *Bus
	interval time.Duration
	tenants  func() []TenantRetention
	leases   Leases
	log      *slog.Logger
	now      func() time.Time
}

// NewRetainer returns a Retainer that asks tenants, each interval (0: a minute), which tenants
// have which retention and devices.
func NewRetainer(b *Bus, interval time.Duration, tenants func() []TenantRetention, log *slog.Logger) *Retainer {
	if interval <= 0 {
		interval = DefaultRetentionInterval
	}
	return &Retainer{bus: b, interval: interval, tenants: tenants, log: log.With("component", "retention"), now: time.Now}
}

// UseLeases makes the purges run on the one instance holding RetentionLease.
func (r *Retainer) UseLeases(l Leases) { r.leases = l }

// Run enforces retention every interval until ctx ends.
func (r *Retainer) Run(ctx context.Context) error {
	if r.leases == nil {
		r.loop(ctx)
		return nil
	}
	return r.leases.Hold(ctx, RetentionLease, r.loop)
}

func (r *Retainer) loop(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.Enforce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("tenant retention not fully enforced; next try in one interval", "err", err)
		}
	}
}

// Enforce runs one pass over every tenant and returns how many messages it purged. It goes on
// past a device it cannot purge and returns the first such error.
func (r *Retainer) Enforce(ctx context.Context) (int, error) {
	var first error
	total := 0
	// The stream's state before looking for any first message at a cutoff: when a device has
	// none, every message of its subject up to LastSeq is older (a message stored meanwhile
	// has a higher sequence and is not purged).
	var info *jetstream.StreamInfo
	for _, tr := range r.tenants() {
		if tr.Retention <= 0 || tr.Retention >= r.bus.cfg.Retention {
			continue // no quota, or the stream's MaxAge removes the messages first
		}
		if info == nil {
			var err error
			if info, err = r.bus.messages.Info(ctx); err != nil {
				return 0, fmt.Errorf("stream %s info: %w", StreamMessages, err)
			}
		}
		cutoff := r.now().Add(-tr.Retention)
		n := 0
		for _, id := range tr.Devices {
			if ctx.Err() != nil {
				return total + n, ctx.Err()
			}
			p, err := r.purgeBefore(ctx, "devices/"+id+"/#", cutoff, info.State)
			n += p
			if err != nil && first == nil {
				first = fmt.Errorf("tenant %s device %s: %w", tr.Tenant, id, err)
			}
		}
		if n > 0 {
			metricRetentionPurged.WithLabelValues(tr.Tenant).Add(float64(n))
			r.log.Info("purged messages past the tenant's retention", "tenant", tr.Tenant, "retention", tr.Retention,
				"before", cutoff.UTC().Format(time.RFC3339), "messages", n)
		}
		total += n
	}
	return total, first
}

// errNoMessage is JetStream's "no message found" (err_code 10037).
var errNoMessage = errors.New("no message found")

type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) err() error {
	if e == nil {
		return nil
	}
	if e.ErrCode == 10037 {
		return errNoMessage
	}
	return fmt.Errorf("jetstream: %s (code %d, err_code %d)", e.Description, e.Code, e.ErrCode)
}

// purgeBefore purges the messages matching filter stored before cutoff and returns how many.
// state is the stream's state read before.
func (r *Retainer) purgeBefore(ctx context.Context, filter string, cutoff time.Time, state jetstream.StreamState) (int, error) {
	subject, err := FilterToSubject(filter)
	if err != nil {
		return 0, err
	}
	below := state.LastSeq + 1
	// Message get with start_time (nats-server ≥ 2.11; nats.go's GetMsg has no option for it):
	// the first message of subject stored at or after cutoff.
	var got struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := r.request(ctx, "$JS.API.STREAM.MSG.GET."+StreamMessages, map[string]any{"start_time": cutoff.UTC(), "next_by_subj": subject}, &got); err != nil {
		if !errors.Is(err, errNoMessage) {
			return 0, fmt.Errorf("first message at %s: %w", cutoff.UTC().Format(time.RFC3339Nano), err)
		}
	} else if got.Message != nil {
		below = got.Message.Seq
	}
	if below <= state.FirstSeq {
		return 0, nil // nothing stored before it
	}
	var purged struct {
		Purged uint64 `json:"purged"`
	}
	if err := r.request(ctx, "$JS.API.STREAM.PURGE."+StreamMessages, map[string]any{"filter": subject, "seq": below}, &purged); err != nil {
		return 0, fmt.Errorf("purge %s below sequence %d: %w", subject, below, err)
	}
	return int(purged.Purged), nil
}

// request sends a JetStream API request and decodes a successful answer into out.
func (r *Retainer) request(ctx context.Context, subject string, body any, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := r.bus.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return err
	}
	var e struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &e); err != nil {
		return fmt.Errorf("unreadable answer %q: %w", msg.Data, err)
	}
	if err := e.Error.err(); err != nil {
		return err
	}
	return json.Unmarshal(msg.Data, out)
}
