package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tributary-iot/tributary/devices"
)

// Directory tells the controller about a device. The hub's wiring answers from the device
// registry and the device types.
type Directory interface {
	// Profile returns the tenant of device id and the limits set on it and on its type (zero
	// values where nothing is set, also for an unknown device). It is called at most once a
	// second per device and must not block.
	Profile(id string) Profile
}

// Profile is what admission needs to know about one device.
type Profile struct {
	Tenant string // "" is DefaultTenant
	Type   devices.Limits
	Device devices.Limits
}

// TenantLimits is an optional capability of the Directory: limits set on one tenant, over
// Config.Tenant.
type TenantLimits interface {
	TenantLimits(tenant string) devices.Limits
}

// DirectoryFunc adapts a function to Directory.
type DirectoryFunc func(id string) Profile

func (f DirectoryFunc) Profile(id string) Profile { return f(id) }

// Controller is admission control for one hub instance. Its methods are safe for concurrent
// use; it holds no goroutines.
type Controller struct {
	cfg Config
	dir Directory
	log *slog.Logger
	now func() time.Time

	devices sync.Map // device ID → *entry
	tenants sync.Map // tenant → *entry

	conns connCounts
	auth  *Guard
	api   *keyed

	// shares are this instance's shares of tenants' and API keys' buckets (see share.go).
	shares      atomic.Pointer[map[string]float64]
	demandSince atomic.Int64 // Unix nanoseconds of the last TakeDemand
	// peerConns are the other instances' device connections per tenant, as last reported.
	peerConns atomic.Pointer[map[string]int]
}

// New builds a controller. dir may be nil: every device is then in DefaultTenant with the
// hub-wide limits.
func New(cfg Config, dir Directory, log *slog.Logger) (*Controller, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir == nil {
		dir = DirectoryFunc(func(string) Profile { return Profile{} })
	}
	log = log.With("component", "admission")
	c := &Controller{cfg: cfg, dir: dir, log: log, now: time.Now}
	c.conns.devices, c.conns.tenants = map[string]int{}, map[string]int{}
	c.auth = newGuard(cfg.AuthMaxFailures, cfg.AuthWindow, log)
	if cfg.APIRate > 0 {
		c.api = newKeyed(float64(cfg.APIRate), cfg.APIBurst, c.share)
	}
	return c, nil
}

// Config is the configuration in force, defaults filled in.
func (c *Controller) Config() Config { return c.cfg }

// Auth is the failed-authentication throttle.
func (c *Controller) Auth() *Guard { return c.auth }

// entry holds the buckets of one device or tenant, rebuilt when its limits change.
type entry struct {
	cur      atomic.Pointer[buckets]
	resolved atomic.Int64 // Unix nanoseconds of the last lookup
}

type buckets struct {
	// mu (of the tenant's buckets) makes taking tokens from a device's and its tenant's
	// buckets, and giving them back on refusal, one step: a Reservation can only be cancelled
	// in full while no later one was made, otherwise concurrent refusals lose tokens.
	mu     sync.Mutex
	limits devices.Limits // as resolved: negative values already mean unlimited
	tenant string         // devices only
	name   string         // "device d1" or "tenant acme", for messages
	msgs   *rate.Limiter  // nil: unlimited
	bytes  *rate.Limiter  // nil: unlimited
	// The full bursts; a tenant's buckets run at share (under mu) of the limits and bursts.
	msgBurst, bytesBurst int
	share                float64
	demand               atomic.Int64 // messages asked to be admitted since TakeDemand
}

func (c *Controller) newBuckets(name, tenant string, l devices.Limits) *buckets {
	b := &buckets{limits: l, tenant: tenant, name: name, share: 1}
	if l.Rate > 0 {
		b.msgBurst = l.Burst
		if b.msgBurst <= 0 {
			b.msgBurst = max(1, int(math.Ceil(l.Rate)))
		}
		b.msgs = rate.NewLimiter(rate.Limit(l.Rate), b.msgBurst)
	}
	if l.BytesRate > 0 {
		b.bytesBurst = l.BytesBurst
		if b.bytesBurst <= 0 {
			b.bytesBurst = max(int(math.Ceil(l.BytesRate)), c.cfg.MaxPayload, 1)
		}
		b.bytes = rate.NewLimiter(rate.Limit(l.BytesRate), b.bytesBurst)
	}
	return b
}

// applyShare runs b at share of its limits and bursts. A byte burst stays at least the
// largest payload, so that every acceptable message can still pass.
func (c *Controller) applyShare(b *buckets, share float64, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.share == share {
		return
	}
	b.share = share
	if b.msgs != nil {
		b.msgs.SetLimitAt(now, rate.Limit(b.limits.Rate*share))
		b.msgs.SetBurstAt(now, max(1, int(math.Round(float64(b.msgBurst)*share))))
	}
	if b.bytes != nil {
		b.bytes.SetLimitAt(now, rate.Limit(b.limits.BytesRate*share))
		b.bytes.SetBurstAt(now, max(min(c.cfg.MaxPayload, b.bytesBurst), int(math.Round(float64(b.bytesBurst)*share)), 1))
	}
}

// deviceBuckets returns the current buckets of device id, looking its profile up again when
// the last lookup is older than refreshEvery.
func (c *Controller) deviceBuckets(id string, now time.Time) *buckets {
	return current(&c.devices, id, now, func(b *buckets) *buckets {
		p := c.dir.Profile(id)
		tenant := p.Tenant
		if tenant == "" {
			tenant = DefaultTenant
		}
		l := c.cfg.Device.Over(p.Type).Over(p.Device)
		if b != nil && b.limits == l && b.tenant == tenant {
			return b
		}
		return c.newBuckets("device "+id, tenant, l)
	})
}

func (c *Controller) tenantBuckets(tenant string, now time.Time) *buckets {
	return current(&c.tenants, tenant, now, func(b *buckets) *buckets {
		l := c.tenantLimits(tenant)
		if b == nil || b.limits != l {
			b = c.newBuckets("tenant "+tenant, tenant, l)
		}
		c.applyShare(b, c.share(TenantBucket(tenant)), now)
		return b
	})
}

// current returns the buckets cached under key in m, calling resolve (with the cached ones,
// nil at first) when the last lookup is older than refreshEvery. One goroutine resolves at a
// time; the others keep using what is cached meanwhile (keeping limits off the hot path's
// lookups), except the very first time, when there is nothing to use yet.
func current(m *sync.Map, key string, now time.Time, resolve func(*buckets) *buckets) *buckets {
	v, ok := m.Load(key)
	if !ok {
		v, _ = m.LoadOrStore(key, &entry{})
	}
	e := v.(*entry)
	last := e.resolved.Load()
	if b := e.cur.Load(); b != nil && now.UnixNano()-last < int64(refreshEvery) {
		return b
	}
	if !e.resolved.CompareAndSwap(last, now.UnixNano()) {
		if b := e.cur.Load(); b != nil {
			return b // another goroutine is looking it up
		}
	}
	old := e.cur.Load()
	b := resolve(old)
	if old == nil {
		// The very first lookup: of the goroutines racing to it, the first to finish installs
		// its buckets and the others use those, so that no burst is handed out twice.
		if !e.cur.CompareAndSwap(nil, b) {
			return e.cur.Load()
		}
		return b
	}
	if b != old {
		e.cur.Store(b)
	}
	return b
}

func (c *Controller) tenantLimits(tenant string) devices.Limits {
	l := c.cfg.Tenant
	if tl, ok := c.dir.(TenantLimits); ok {
		l = l.Over(tl.TenantLimits(tenant))
	}
	return l
}

// TenantOf is the tenant of device id as admission sees it.
func (c *Controller) TenantOf(id string) string {
	return c.deviceBuckets(id, c.now()).tenant
}

// reservations holds what one Publish took from up to four buckets, so that all of it can be
// given back when one bucket says no.
type reservations struct {
	now   time.Time
	rs    [4]*rate.Reservation
	n     int
	worst time.Duration
	kind  error
	limit string
	never bool
}

func (r *reservations) take(l *rate.Limiter, n int, kind error, what string, b *buckets) {
	if l == nil || r.never {
		return
	}
	res := l.ReserveN(r.now, n)
	if !res.OK() {
		r.never, r.kind = true, ErrQuotaExceeded
		r.limit = fmt.Sprintf("%s %s: a message of %d bytes is larger than the burst of %d", b.name, what, n, l.Burst())
		return
	}
	r.rs[r.n] = res
	r.n++
	if d := res.DelayFrom(r.now); d > r.worst {
		r.worst, r.kind = d, kind
		full := b.limits.Rate
		if what == "byte rate" {
			full = b.limits.BytesRate
		}
		r.limit = fmt.Sprintf("%s %s %s", b.name, what, rateString(full, what))
		if b.share < 1 {
			r.limit += fmt.Sprintf(" (%s on this instance, its share)", rateString(float64(l.Limit()), what))
		}
	}
}

func rateString(v float64, what string) string {
	unit := "/s"
	if what == "byte rate" {
		unit = " B/s"
	}
	return fmt.Sprintf("%g%s", v, unit)
}

// has reports whether l (nil: unlimited) has n tokens at now.
func has(l *rate.Limiter, n int, now time.Time) bool {
	return l == nil || (n <= l.Burst() && l.TokensAt(now) >= float64(n))
}

func allow(l *rate.Limiter, n int, now time.Time) {
	if l != nil {
		l.AllowN(now, n)
	}
}

func (r *reservations) cancel() {
	for _, res := range r.rs[:r.n] {
		res.CancelAt(r.now)
	}
}

// Publish admits one message of size bytes from device id, counting it against the device's
// and its tenant's message and byte rates. When every bucket has room it returns nil at once.
// When one is short, a message that may wait (MQTT QoS 1/2) waits for it up to
// Config.MaxDelay and is then admitted; otherwise Publish returns an *Exceeded, taking nothing
// from any bucket, and the message must not be stored. protocol labels the metrics.
func (c *Controller) Publish(ctx context.Context, protocol, id string, size int, mayWait bool) error {
	now := c.now()
	d := c.deviceBuckets(id, now)
	t := c.tenantBuckets(d.tenant, now)
	if t.msgs != nil || t.bytes != nil {
		t.demand.Add(1)
	}
	if d.msgs == nil && d.bytes == nil && t.msgs == nil && t.bytes == nil {
		return nil
	}
	wait := time.Duration(0)
	if mayWait {
		wait = c.cfg.MaxDelay
	}
	t.mu.Lock()
	now = c.now() // read under the lock, so time never goes back for a bucket
	// The common case, room in every bucket, takes the tokens without a Reservation (which
	// allocates): under the lock nothing else can take them in between.
	if has(d.msgs, 1, now) && has(d.bytes, size, now) && has(t.msgs, 1, now) && has(t.bytes, size, now) {
		allow(d.msgs, 1, now)
		allow(d.bytes, size, now)
		allow(t.msgs, 1, now)
		allow(t.bytes, size, now)
		t.mu.Unlock()
		return nil
	}
	r := reservations{now: now}
	r.take(d.msgs, 1, ErrRateLimited, "message rate", d)
	r.take(d.bytes, size, ErrQuotaExceeded, "byte rate", d)
	r.take(t.msgs, 1, ErrQuotaExceeded, "message rate", t)
	r.take(t.bytes, size, ErrQuotaExceeded, "byte rate", t)
	refused := r.never || r.worst > wait
	if refused {
		r.cancel()
	}
	t.mu.Unlock()
	if refused {
		MetricRefused.WithLabelValues(protocol, reasonOf(r.kind)).Inc()
		retry := r.worst
		if r.never {
			retry = 0
		}
		return &Exceeded{Kind: r.kind, Limit: r.limit, RetryAfter: retry}
	}
	if r.worst <= 0 {
		return nil
	}
	metricDelayed.WithLabelValues(protocol).Inc()
	timer := time.NewTimer(r.worst)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		t.mu.Lock()
		r.cancel()
		t.mu.Unlock()
		return ctx.Err()
	}
}

// connCounts are the current connections.
type connCounts struct {
	mu      sync.Mutex
	total   int
	devices map[string]int
	tenants map[string]int
}

// Connect admits a connection of device id ("" for an application, which counts only
// towards Config.MaxConnections). A takeover (the same identity reconnecting with the client
// ID of a live session, which ends that session) is always admitted. The returned release
// must be called once when the connection ends; calling it again does nothing.
func (c *Controller) Connect(id string, takeover bool) (release func(), err error) {
	var b *buckets
	var tl devices.Limits
	if id != "" {
		b = c.deviceBuckets(id, c.now())
		tl = c.tenantBuckets(b.tenant, c.now()).limits
	}
	cc := &c.conns
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !takeover {
		var limit string
		switch {
		case c.cfg.MaxConnections > 0 && cc.total >= c.cfg.MaxConnections:
			limit = fmt.Sprintf("the hub's limit of %d connections is reached", c.cfg.MaxConnections)
		case b != nil && b.limits.MaxConnections > 0 && cc.devices[id] >= b.limits.MaxConnections:
			limit = fmt.Sprintf("device %s may hold %d connection(s) at a time", id, b.limits.MaxConnections)
		case b != nil && tl.MaxConnections > 0 && cc.tenants[b.tenant]+c.peerConnections(b.tenant) >= tl.MaxConnections:
			limit = fmt.Sprintf("tenant %s may hold %d connections at a time", b.tenant, tl.MaxConnections)
		}
		if limit != "" {
			return nil, &Exceeded{Kind: ErrTooManyConnections, Limit: limit}
		}
	}
	cc.total++
	tenant := ""
	if b != nil {
		tenant = b.tenant
		cc.devices[id]++
		cc.tenants[tenant]++
		metricConnections.WithLabelValues(tenant).Inc()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			cc.total--
			if id == "" {
				return
			}
			if cc.devices[id]--; cc.devices[id] <= 0 {
				delete(cc.devices, id)
			}
			if cc.tenants[tenant]--; cc.tenants[tenant] <= 0 {
				delete(cc.tenants, tenant)
			}
			metricConnections.WithLabelValues(tenant).Dec()
		})
	}, nil
}

// Connections returns the current connections of one tenant to this instance.
func (c *Controller) Connections(tenant string) int {
	c.conns.mu.Lock()
	defer c.conns.mu.Unlock()
	return c.conns.tenants[tenant]
}

// TenantConnections returns this instance's device connections per tenant (for the other
// instances, through SetPeerConnections).
func (c *Controller) TenantConnections() map[string]int {
	c.conns.mu.Lock()
	defer c.conns.mu.Unlock()
	return maps.Clone(c.conns.tenants)
}

// SetPeerConnections sets the other instances' device connections per tenant, summed: a
// tenant's connection limit counts them with this instance's own.
func (c *Controller) SetPeerConnections(conns map[string]int) {
	c.peerConns.Store(&conns)
}

func (c *Controller) peerConnections(tenant string) int {
	if m := c.peerConns.Load(); m != nil {
		return (*m)[tenant]
	}
	return 0
}

// AllowAPI admits one HTTP API request by key (a hash of the API key, or the source address
// when there is none); false comes with how long to wait.
func (c *Controller) AllowAPI(key string) (retryAfter time.Duration, ok bool) {
	if c.api == nil {
		return 0, true
	}
	return c.api.allow(key, c.now())
}

// APIKeyBucket is the rate bucket of an API key: HTTP requests and an application's MQTT
// publishes made with the same key share it.
func APIKeyBucket(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "key " + hex.EncodeToString(sum[:16])
}

// PublishApp admits one message an application publishes (over MQTT) with the API key whose
// bucket is key (APIKeyBucket): it takes a request from the key's API rate (APIRate), shared
// with the key's HTTP requests. With mayWait it waits up to MaxDelay for room first; a refusal
// is an *Exceeded with ErrRateLimited.
func (c *Controller) PublishApp(ctx context.Context, protocol, key string, mayWait bool) error {
	if c.api == nil {
		return nil
	}
	retry, ok := c.api.allow(key, c.now())
	if ok {
		return nil
	}
	if mayWait && retry <= c.cfg.MaxDelay {
		metricDelayed.WithLabelValues(protocol).Inc()
		timer := time.NewTimer(retry)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		if retry, ok = c.api.allow(key, c.now()); ok {
			return nil
		}
	}
	MetricRefused.WithLabelValues(protocol, ReasonAPIRate).Inc()
	return &Exceeded{Kind: ErrRateLimited, Limit: fmt.Sprintf("API key request rate %g/s", float64(c.api.limit)), RetryAfter: retry}
}

// MaxTopicLevels and MaxSubscriptions are the configured bounds.
func (c *Controller) MaxTopicLevels() int   { return c.cfg.MaxTopicLevels }
func (c *Controller) MaxSubscriptions() int { return c.cfg.MaxSubscriptions }
