package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/simulator"
)

// Endpoints are the hub's device-facing addresses (host:port).
type Endpoints struct {
	MQTT string `json:"mqtt,omitempty"`
	CoAP string `json:"coap,omitempty"`
}

// dialable turns a listener address such as "[::]:1883" or ":1883" into one a client can dial.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Provisioner gives virtual devices real identities.
type Provisioner interface {
	// Check fails when id is taken by a device that is not fleet's, before anything is created.
	Check(ctx context.Context, fleet, id string) error
	// Provision registers d for fleet (or takes over fleet's existing device of that ID) and
	// returns its token.
	Provision(ctx context.Context, fleet string, d devices.Device) (token string, err error)
	// Remove deletes fleet's device id (and nothing that is not fleet's).
	Remove(ctx context.Context, fleet, id string) error
}

// Options of a run.
type Options struct {
	Endpoints   Endpoints
	Provisioner Provisioner
	// Concurrency bounds parallel provisioning, connecting and disconnecting (default 64).
	Concurrency int
	Log         *slog.Logger
	// ResumeFrom, when set, is the start of a run that another hub began: the devices carry
	// on from now on that run's timeline (the same messages, anomalies and events at the same
	// times) instead of starting a new one.
	ResumeFrom time.Time
}

// Run phases.
const (
	PhasePending      = "pending"
	PhaseProvisioning = "provisioning"
	PhaseConnecting   = "connecting"
	PhaseRunning      = "running"
	PhaseStopping     = "stopping"
	PhaseFinished     = "finished"
)

// plus adds the counters of base, what a run recorded before it was resumed here.
func (s Stats) plus(base Stats) Stats {
	s.Sent += base.Sent
	s.Errors += base.Errors
	s.Missed += base.Missed
	s.Dropped += base.Dropped
	s.Late += base.Late
	s.OutOfOrder += base.OutOfOrder
	s.Bursts += base.Bursts
	s.Disconnects += base.Disconnects
	s.Reconnects += base.Reconnects
	return s
}

// Stats of a run.
type Stats struct {
	Phase     string    `json:"phase"`
	Devices   int       `json:"devices"`
	Connected int64     `json:"connected"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Sent counts messages the hub accepted (QoS 1 / CON: acknowledged; QoS 0 / NON: written).
	Sent   uint64 `json:"sent"`
	Errors uint64 `json:"errors"`
	// Missed counts messages due while the device was disconnected; Dropped those silenced by
	// a dropout anomaly.
	Missed      uint64 `json:"missed"`
	Dropped     uint64 `json:"dropped"`
	Late        uint64 `json:"late"`
	OutOfOrder  uint64 `json:"out_of_order"`
	Bursts      uint64 `json:"bursts"`
	Disconnects uint64 `json:"disconnects"`
	Reconnects  uint64 `json:"reconnects"`
	// OfferedPerSec is what the definition asks for (devices × rate); AchievedPerSec is what
	// was sent over the last 10 seconds.
	OfferedPerSec  float64 `json:"offered_per_sec"`
	AchievedPerSec float64 `json:"achieved_per_sec"`
	// Lag is how late scheduled messages were produced (bucket upper bounds).
	LagP50Ms float64 `json:"lag_p50_ms"`
	LagP99Ms float64 `json:"lag_p99_ms"`
}

var lagBuckets = []time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, time.Minute}

type counters struct {
	sent, errors, missed, dropped, late, outOfOrder, bursts, disconnects, reconnects atomic.Uint64
	connected                                                                        atomic.Int64
	lags                                                                             [15]atomic.Uint64
	sentMetric                                                                       prometheus.Counter
}

func (c *counters) lag(d time.Duration) {
	i := 0
	for i < len(lagBuckets) && d > lagBuckets[i] {
		i++
	}
	c.lags[i].Add(1)
}

func (c *counters) lagQuantile(q float64) float64 {
	var n uint64
	for i := range c.lags {
		n += c.lags[i].Load()
	}
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	var seen uint64
	for i := range c.lags {
		seen += c.lags[i].Load()
		if seen >= max(rank, 1) {
			if i < len(lagBuckets) {
				return float64(lagBuckets[i]) / 1e6
			}
			break
		}
	}
	return float64(lagBuckets[len(lagBuckets)-1]) / 1e6 * 10
}

// Runner runs one fleet: it provisions the devices, connects them as real MQTT or CoAP clients,
// sends their traffic with its faults, and disconnects them at the end.
type Runner struct {
	plan *Plan
	opts Options
	log  *slog.Logger
	c    []*counters // per profile
	mu   sync.Mutex
	// phase and start are guarded by mu.
	phase   string
	start   time.Time
	samples []sample
}

type sample struct {
	at   time.Time
	sent uint64
}

// NewRunner prepares a run of plan.
func NewRunner(plan *Plan, opts Options) *Runner {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{plan: plan, opts: opts, log: opts.Log, phase: PhasePending}
	for _, p := range plan.Def.Profiles {
		r.c = append(r.c, &counters{sentMetric: metricSent.WithLabelValues(p.Protocol)})
	}
	return r
}

func (r *Runner) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
}

// StartedAt is when the devices started sending (zero before).
func (r *Runner) StartedAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.start
}

// Stats returns the run's counters so far.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	s := Stats{Phase: r.phase, StartedAt: r.start, Devices: len(r.plan.Devices)}
	if n := len(r.samples); n >= 2 {
		a, b := r.samples[0], r.samples[n-1]
		s.AchievedPerSec = float64(b.sent-a.sent) / b.at.Sub(a.at).Seconds()
	}
	r.mu.Unlock()
	var p50, p99 float64
	var lagN uint64
	for i, c := range r.c {
		s.Connected += c.connected.Load()
		s.Sent += c.sent.Load()
		s.Errors += c.errors.Load()
		s.Missed += c.missed.Load()
		s.Dropped += c.dropped.Load()
		s.Late += c.late.Load()
		s.OutOfOrder += c.outOfOrder.Load()
		s.Bursts += c.bursts.Load()
		s.Disconnects += c.disconnects.Load()
		s.Reconnects += c.reconnects.Load()
		prof := r.plan.Def.Profiles[i]
		s.OfferedPerSec += float64(prof.Devices) * float64(prof.Rate)
		var n uint64
		for j := range c.lags {
			n += c.lags[j].Load()
		}
		if n > lagN { // the largest profile's lag stands for the run
			lagN, p50, p99 = n, c.lagQuantile(0.5), c.lagQuantile(0.99)
		}
	}
	s.LagP50Ms, s.LagP99Ms = p50, p99
	return s
}

// Run provisions and connects the devices, runs them until the definition's duration has passed
// or ctx ends, and disconnects them. It returns an error when the fleet could not be set up.
func (r *Runner) Run(ctx context.Context) error {
	defer r.setPhase(PhaseFinished)
	def := &r.plan.Def
	n := len(r.plan.Devices)
	r.setPhase(PhaseProvisioning)
	for i := range r.plan.Devices {
		if err := r.opts.Provisioner.Check(ctx, def.Name, r.plan.Devices[i].ID); err != nil {
			return err
		}
	}
	tokens := make([]string, n)
	err := r.each(ctx, 0, func(ctx context.Context, i int) error {
		d := &r.plan.Devices[i]
		prof := &def.Profiles[d.Profile]
		typ := prof.Type
		if typ == "" {
			typ = prof.Name
		}
		tok, err := r.opts.Provisioner.Provision(ctx, def.Name, devices.Device{ID: d.ID, Type: typ, Name: "virtual " + prof.Name + " " + d.ID})
		if err != nil {
			metricErrors.WithLabelValues("provision").Inc()
			return fmt.Errorf("provision %s: %w", d.ID, err)
		}
		tokens[i] = tok
		return nil
	})
	if err != nil {
		return err
	}

	r.setPhase(PhaseConnecting)
	ep := Endpoints{MQTT: dialable(r.opts.Endpoints.MQTT), CoAP: dialable(r.opts.Endpoints.CoAP)}
	trs := make([]transport, n)
	var connectFailed atomic.Int64
	rate := def.ConnectRate
	if rate == 0 {
		rate = defaultConnectPS
	}
	err = r.each(ctx, rate, func(ctx context.Context, i int) error {
		d := &r.plan.Devices[i]
		tr, err := newTransport(&def.Profiles[d.Profile], ep, d.ID, tokens[i])
		if err != nil {
			return err
		}
		for attempt := 0; ; attempt++ {
			if err = tr.connect(ctx); err == nil {
				break
			}
			metricErrors.WithLabelValues("connect").Inc()
			if attempt == 2 || ctx.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				connectFailed.Add(1)
				r.c[d.Profile].errors.Add(1)
				r.log.Warn("virtual device cannot connect", "device", d.ID, "err", err)
				return nil
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
		}
		trs[i] = tr
		r.c[d.Profile].connected.Add(1)
		metricDevices.Inc()
		return nil
	})
	defer r.disconnect(trs)
	if err != nil {
		return err
	}
	if f := connectFailed.Load(); f > 0 && f*100 > int64(n) {
		return fmt.Errorf("%d of %d virtual devices could not connect", f, n)
	}

	start, from := time.Now(), time.Duration(0)
	if !r.opts.ResumeFrom.IsZero() {
		start = r.opts.ResumeFrom
		from = time.Since(start)
	}
	r.mu.Lock()
	r.phase, r.start = PhaseRunning, start
	r.mu.Unlock()
	var wg sync.WaitGroup
	for i := range r.plan.Devices {
		if trs[i] == nil {
			continue
		}
		d := &r.plan.Devices[i]
		dv := newDevice(r.plan, d, trs[i], r.c[d.Profile])
		trs[i] = nil // the device disconnects itself at the end
		wg.Go(func() { dv.run(ctx, start, from, def.Duration.D()) })
	}
	sctx, stopSampling := context.WithCancel(ctx)
	var sw sync.WaitGroup
	sw.Go(func() { r.sampleRate(sctx) })
	wg.Wait()
	stopSampling()
	sw.Wait()
	r.setPhase(PhaseStopping)
	return nil
}

// sampleRate keeps the sent count of the last 10 seconds for AchievedPerSec.
func (r *Runner) sampleRate(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var sent uint64
		for _, c := range r.c {
			sent += c.sent.Load()
		}
		r.mu.Lock()
		r.samples = append(r.samples, sample{at: time.Now(), sent: sent})
		if len(r.samples) > 11 {
			r.samples = r.samples[1:]
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) disconnect(trs []transport) {
	_ = r.each(context.Background(), 0, func(_ context.Context, i int) error {
		if trs[i] != nil {
			trs[i].close()
			d := &r.plan.Devices[i]
			r.c[d.Profile].connected.Add(-1)
			metricDevices.Dec()
		}
		return nil
	})
}

// each runs fn for every device with bounded concurrency, starting at most perSec per second
// (0: unlimited); the first error cancels the rest and is returned.
func (r *Runner) each(ctx context.Context, perSec float64, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	sem := make(chan struct{}, r.opts.Concurrency)
	begin := time.Now()
	for i := range r.plan.Devices {
		if perSec > 0 {
			due := begin.Add(time.Duration(float64(i) / perSec * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// RegistryProvisioner provisions virtual devices in a device registry, tagging them with the
// fleet's name (tag "simulator") so that they can be told apart, taken over by the next run of
// the same fleet, and removed.
type RegistryProvisioner struct {
	Registry interface {
		Create(ctx context.Context, d devices.Device) (devices.Device, string, error)
		Get(id string) (devices.Device, error)
		RotateToken(ctx context.Context, id string) (string, error)
		Delete(ctx context.Context, id string) error
	}
}

// TagFleet is the device tag naming the fleet a virtual device belongs to.
const TagFleet = "simulator"

// Check implements Provisioner.
func (p RegistryProvisioner) Check(_ context.Context, fleet, id string) error {
	d, err := p.Registry.Get(id)
	if errors.Is(err, devices.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if d.Tags[TagFleet] != fleet {
		return fmt.Errorf("%w: device %s exists and is not a virtual device of fleet %s", simulator.ErrExists, id, fleet)
	}
	return nil
}

// Provision implements Provisioner.
func (p RegistryProvisioner) Provision(ctx context.Context, fleet string, d devices.Device) (string, error) {
	d.Tags = map[string]string{TagFleet: fleet}
	_, tok, err := p.Registry.Create(ctx, d)
	if errors.Is(err, devices.ErrExists) {
		if err := p.Check(ctx, fleet, d.ID); err != nil {
			return "", err
		}
		return p.Registry.RotateToken(ctx, d.ID)
	}
	return tok, err
}

// Remove implements Provisioner.
func (p RegistryProvisioner) Remove(ctx context.Context, fleet, id string) error {
	d, err := p.Registry.Get(id)
	if errors.Is(err, devices.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if d.Tags[TagFleet] != fleet {
		return nil
	}
	if err := p.Registry.Delete(ctx, id); err != nil && !errors.Is(err, devices.ErrNotFound) {
		return err
	}
	return nil
}
