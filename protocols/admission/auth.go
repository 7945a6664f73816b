package admission

import (
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Guard throttles failed authentication per source address: after Config.AuthMaxFailures
// failures within Config.AuthWindow, every attempt from that address is refused for
// AuthWindow without its credentials being checked, so that tokens and keys cannot be guessed
// at line rate. The address is the IP, without the port.
type Guard struct {
	max    int
	window time.Duration
	log    *slog.Logger
	now    func() time.Time
	warn   *rate.Limiter // bounds the warnings logged, whatever the number of addresses

	mu      sync.Mutex
	sources map[string]*failures
}

type failures struct {
	count int
	first time.Time // start of the current window
	until time.Time // refused until then
}

// maxSources bounds the addresses tracked; beyond it, expired ones are swept.
const maxSources = 100_000

func newGuard(max int, window time.Duration, log *slog.Logger) *Guard {
	return &Guard{max: max, window: window, log: log, now: time.Now,
		warn: rate.NewLimiter(rate.Every(time.Second), 10), sources: map[string]*failures{}}
}

// Source is the key of a remote address: its IP ("10.0.0.1:5000" → "10.0.0.1").
func Source(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return strings.Trim(remote, "[]")
}

// Blocked reports whether attempts from remote are refused now, and for how long still.
// protocol labels the refusal in the metrics.
func (g *Guard) Blocked(protocol, remote string) (retryAfter time.Duration, blocked bool) {
	if g == nil || g.max < 0 {
		return 0, false
	}
	key := Source(remote)
	now := g.now()
	g.mu.Lock()
	var until time.Time
	if f, ok := g.sources[key]; ok {
		until = f.until
	}
	g.mu.Unlock()
	if now.Before(until) {
		MetricRefused.WithLabelValues(protocol, ReasonAuthThrottled).Inc()
		return until.Sub(now), true
	}
	return 0, false
}

// Failed records a failed authentication from remote.
func (g *Guard) Failed(protocol, remote string) {
	metricAuthFailures.WithLabelValues(protocol).Inc()
	if g == nil || g.max < 0 {
		return
	}
	key := Source(remote)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.sources[key]
	if !ok {
		if len(g.sources) >= maxSources {
			g.sweep(now)
		}
		f = &failures{first: now}
		g.sources[key] = f
	}
	if now.Sub(f.first) > g.window && now.After(f.until) {
		f.count, f.first = 0, now
	}
	f.count++
	if f.count >= g.max && !now.Before(f.until) {
		f.until = now.Add(g.window)
		metricBlockedSources.Inc()
		time.AfterFunc(g.window, metricBlockedSources.Dec)
		if g.warn.Allow() {
			g.log.Warn("authentication throttled: too many failures from one address",
				"source", key, "protocol", protocol, "failures", f.count, "window", g.window, "refused_for", g.window)
		}
	}
}

// Succeeded forgets the failures of remote.
func (g *Guard) Succeeded(remote string) {
	if g == nil || g.max < 0 {
		return
	}
	key := Source(remote)
	g.mu.Lock()
	if f, ok := g.sources[key]; ok && !g.now().Before(f.until) {
		delete(g.sources, key)
	}
	g.mu.Unlock()
}

// sweep drops addresses whose window and block are over. Called with mu held.
func (g *Guard) sweep(now time.Time) {
	for k, f := range g.sources {
		if now.Sub(f.first) > g.window && now.After(f.until) {
			delete(g.sources, k)
		}
	}
}

// keyed is one token bucket per key (API key hash or source address), for the HTTP API and
// applications' MQTT publishes.
type keyed struct {
	limit rate.Limit
	burst int
	// share is this instance's share of a key's bucket (Controller.share).
	share func(bucket string) float64

	mu sync.Mutex
	m  map[string]*keyBucket
}

type keyBucket struct {
	l       *rate.Limiter
	share   float64
	checked time.Time // when share was last looked up
	demand  int64     // requests since takeDemand
}

// maxKeys bounds the keys tracked; beyond it, full (idle) buckets are swept.
const maxKeys = 100_000

func newKeyed(perSecond float64, burst int, share func(string) float64) *keyed {
	if burst <= 0 {
		burst = max(1, int(perSecond+0.999))
	}
	return &keyed{limit: rate.Limit(perSecond), burst: burst, share: share, m: map[string]*keyBucket{}}
}

func (k *keyed) allow(key string, now time.Time) (time.Duration, bool) {
	k.mu.Lock()
	b, ok := k.m[key]
	if !ok {
		if len(k.m) >= maxKeys {
			for kk, bb := range k.m {
				if bb.l.TokensAt(now) >= float64(bb.l.Burst()) {
					delete(k.m, kk)
				}
			}
		}
		b = &keyBucket{l: rate.NewLimiter(k.limit, k.burst), share: 1}
		k.m[key] = b
	}
	b.demand++
	if now.Sub(b.checked) >= refreshEvery {
		b.checked = now
		if s := k.share(APIBucket(key)); s != b.share {
			b.share = s
			b.l.SetLimitAt(now, k.limit*rate.Limit(s))
			b.l.SetBurstAt(now, max(1, int(math.Round(float64(k.burst)*s))))
		}
	}
	l := b.l
	k.mu.Unlock()
	if l.AllowN(now, 1) {
		return 0, true
	}
	// No Reservation to cancel: concurrent cancellations could lose tokens.
	missing := 1 - l.TokensAt(now)
	return time.Duration(missing / float64(l.Limit()) * float64(time.Second)), false
}

// takeDemand returns the requests per key since the last call and starts counting afresh.
func (k *keyed) takeDemand() map[string]int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]int64{}
	for key, b := range k.m {
		if b.demand > 0 {
			out[key] = b.demand
			b.demand = 0
		}
	}
	return out
}
