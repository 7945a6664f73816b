// Package lease gives work that must run once cluster-wide to exactly one live hub instance,
// with leases in a NATS KV bucket.
//
// A lease is a key of the bucket holding its holder's name. It is taken with Create (which
// fails while another holder's key exists) and kept by renewing it with Update on the revision
// last written (compare-and-set), every TTL/3. The bucket's TTL (MaxAge) is the lease TTL: a
// holder that dies stops renewing, its key expires, and the expiry marker (LimitMarkerTTL, NATS
// 2.11+) tells every instance watching the bucket at once, so one of them takes the lease over
// within the TTL. A holder that cannot renew stops its work before the server can expire its
// key (it counts the TTL from when it sent its last successful renewal, which the server stored
// later), so two holders do not overlap as long as clocks run at the same rate.
//
// Each instance also keeps a member key ("_member.<holder>") alive the same way. Knowing the
// live members and who holds what, an instance tries a free lease at once only when it holds no
// more leases than the least loaded live member; others wait one TTL first (in case that member
// is stuck). A member holding two or more leases more than the least loaded one hands some back
// every TTL/2 (their work stops cleanly first), so leases spread over the instances and new
// instances get their share. Counts are per kind (the name's first segment: "rule.k9" is a
// "rule"), so each kind of work spreads on its own.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/tributary-iot/tributary/streams"
)

// DefaultBucket is the KV bucket of leases.
const DefaultBucket = "leases"

// Errors given as the cancellation cause of a holder's work.
var (
	// ErrLost: the lease could not be renewed in time, or another holder has it.
	ErrLost = errors.New("lease lost")
	// ErrReleased: the lease is handed to a less loaded instance.
	ErrReleased = errors.New("lease handed over")
)

// Config of a Store. Zero values take the defaults documented on each field.
type Config struct {
	// Bucket is the KV bucket (default "leases").
	Bucket string `yaml:"bucket" json:"bucket"`
	// TTL is how long a lease outlives its holder's last renewal, so about the longest time
	// from an owner's death to another instance taking its work over (default 5s). It must be
	// the same on every instance: it is the bucket's MaxAge.
	TTL time.Duration `yaml:"ttl" json:"ttl"`
	// Replicas of the bucket (default 1).
	Replicas int `yaml:"replicas" json:"replicas"`
	// Holder names this instance in the leases (default: host name and a random suffix).
	Holder string `yaml:"holder" json:"holder"`
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.TTL == 0 {
		c.TTL = 5 * time.Second
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		host = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '-'
		}, host)
		if host == "" {
			host = "hub"
		}
		id := nuid.Next()
		c.Holder = host + "-" + strings.ToLower(id[len(id)-6:])
	}
}

// Validate names the first wrong field.
func (c Config) Validate() error {
	switch {
	case c.TTL != 0 && c.TTL < 300*time.Millisecond:
		return fmt.Errorf("lease: ttl %v is below 300ms", c.TTL)
	case c.TTL > 10*time.Minute:
		return fmt.Errorf("lease: ttl %v is above 10m", c.TTL)
	case c.Replicas < 0 || c.Replicas > 5:
		return fmt.Errorf("lease: replicas %d out of range 1..5", c.Replicas)
	case c.Holder != "" && !validKey(c.Holder):
		return fmt.Errorf("lease: holder %q may only use letters, digits, '-' and '_'", c.Holder)
	}
	return nil
}

func validKey(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

const memberPrefix = "_member."

// value is what a lease key holds.
type value struct {
	Holder string    `json:"holder"`
	Since  time.Time `json:"since"`
}

// entry is the watched state of one lease key.
type entry struct {
	holder string // "" when free
	rev    uint64
	// expired: the key went away by TTL (its holder stopped renewing), not by release.
	expired bool
	prev    string // the last holder, once free
}

// Store holds this instance's leases in one bucket and watches everyone's. Run must run for
// Hold to work.
type Store struct {
	cfg Config
	kv  jetstream.KeyValue
	log *slog.Logger

	mu      sync.Mutex
	leases  map[string]*entry
	counts  map[string]map[string]int // leases per kind and holder ("" counts the free ones)
	members map[string]bool           // live members; false: suspected dead (a lease of it expired)
	held    map[string]bool
	changed chan struct{} // closed and replaced on every change of the view
	ready   chan struct{}
	shed    map[string]*shedRound // per kind
}

// shedRound is one kind's hand-overs for balance: when the last round began, what is left of
// it, and the least loaded member's count then.
type shedRound struct {
	at    time.Time
	left  int
	least int
}

// Open creates (or updates) the bucket. Run starts watching it.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, Description: "Tributary leases: work run once cluster-wide",
		History: 1, TTL: cfg.TTL, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		// Markers make expirations visible to watchers, so takeover does not wait for a poll.
		LimitMarkerTTL: max(cfg.TTL, time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", cfg.Bucket, err)
	}
	return &Store{
		cfg: cfg, kv: kv, log: log.With("component", "lease", "holder", cfg.Holder),
		leases: map[string]*entry{}, counts: map[string]map[string]int{}, members: map[string]bool{}, held: map[string]bool{}, shed: map[string]*shedRound{},
		changed: make(chan struct{}), ready: make(chan struct{}),
	}, nil
}

// Holder is this instance's name in the leases.
func (s *Store) Holder() string { return s.cfg.Holder }

// TTL is the lease TTL.
func (s *Store) TTL() time.Duration { return s.cfg.TTL }

// Ready is closed once the store has read the bucket.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Owner returns who holds lease name as last seen ("" when nobody does).
func (s *Store) Owner(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.leases[name]; e != nil {
		return e.holder
	}
	return ""
}

// Held returns the names of the leases this instance holds, sorted.
func (s *Store) Held() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.held))
	for n := range s.held {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Members returns the live instances, sorted.
func (s *Store) Members() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for m, ok := range s.members {
		if ok {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Store) renewEvery() time.Duration { return s.cfg.TTL / 3 }

// Run watches the bucket and keeps this instance's member key alive until ctx ends; then it
// removes the member key.
func (s *Store) Run(ctx context.Context) error {
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.kv.Delete(dctx, memberPrefix+s.cfg.Holder)
		cancel()
	}()
	beat := time.NewTicker(s.renewEvery())
	defer beat.Stop()
	for {
		err := s.watch(ctx, beat.C)
		if ctx.Err() != nil {
			return nil
		}
		// NATS is unreachable or the watcher ended: the leases held here expire on their
		// own (their holders stop their work first); keep trying.
		s.log.Warn("watching leases; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.renewEvery()):
		}
	}
}

// watch beats and applies watched changes until ctx ends or the watcher fails.
func (s *Store) watch(ctx context.Context, beat <-chan time.Time) error {
	if err := s.beat(ctx); err != nil {
		return fmt.Errorf("member key: %w", err)
	}
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket: %w", err)
	}
	defer w.Stop()
	// The watcher starts with every key's current value: forget what an earlier one said, as
	// keys may have expired unseen meanwhile.
	s.mu.Lock()
	clear(s.leases)
	clear(s.counts)
	clear(s.members)
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat:
			if err := s.beat(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("member key not renewed", "err", err)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher of bucket stopped")
			}
			s.apply(e)
		}
	}
}

func (s *Store) beat(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
	defer cancel()
	_, err := s.kv.Put(bctx, memberPrefix+s.cfg.Holder, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	return err
}

// apply takes one watched change into the view; nil marks the end of the initial values.
func (s *Store) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Waiters wake only when who holds what, or who is live, changed: renewals and member
	// beats are most of the traffic and change neither.
	changed := false
	defer func() {
		if changed {
			close(s.changed)
			s.changed = make(chan struct{})
		}
	}()
	if e == nil {
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
		changed = true
		return
	}
	key := e.Key()
	if m, ok := strings.CutPrefix(key, memberPrefix); ok {
		live, known := s.members[m]
		if e.Operation() == jetstream.KeyValuePut {
			s.members[m] = true
			changed = !live
		} else {
			delete(s.members, m)
			changed = known
		}
		return
	}
	cur := s.leases[key]
	if cur == nil {
		cur = &entry{}
		s.leases[key] = cur
	}
	if e.Revision() < cur.rev {
		return
	}
	cur.rev = e.Revision()
	was := cur.holder
	defer func() {
		if cur.holder != was {
			changed = true
			k := kindOf(key)
			if s.counts[k] == nil {
				s.counts[k] = map[string]int{}
			}
			s.counts[k][was]--
			s.counts[k][cur.holder]++
		}
	}()
	if e.Operation() == jetstream.KeyValuePut {
		var v value
		if err := json.Unmarshal(e.Value(), &v); err != nil || v.Holder == "" {
			v.Holder = "?"
		}
		cur.holder, cur.expired, cur.prev = v.Holder, false, ""
		return
	}
	if cur.holder != "" {
		cur.prev = cur.holder
	}
	cur.holder = ""
	cur.expired = e.Operation() == jetstream.KeyValuePurge
	if cur.expired && cur.prev != "" && cur.prev != s.cfg.Holder && s.members[cur.prev] {
		// Its holder stopped renewing: count it out of the balance until it beats again.
		s.members[cur.prev] = false
	}
}

// loadLocked returns how many leases of a kind ("rule") this instance holds and the fewest any
// live member (this one included) holds. Kinds balance separately, so that a lone lease of
// another kind (the retention pass) does not decide where the rules go.
func (s *Store) loadLocked(kind string) (mine, least int) {
	// What this instance holds it knows before the watcher tells it.
	held := 0
	for n := range s.held {
		if kindOf(n) == kind {
			held++
		}
	}
	counts := s.counts[kind]
	mine = max(counts[s.cfg.Holder], held)
	least = mine
	for m, live := range s.members {
		if live && m != s.cfg.Holder {
			least = min(least, counts[m])
		}
	}
	return mine, least
}

// Hold runs work while this instance holds lease name, for as long as ctx lasts: it waits
// until the lease is free, takes it, runs work with a context that ends when the lease is
// lost (cause ErrLost), handed over for balance (ErrReleased) or ctx ends, renews it meanwhile,
// and after work returns takes it again when it can. When ctx ends it releases the lease after
// work has returned. If work returns on its own, Hold releases the lease and returns nil.
// name must be a valid KV key not starting with "_member.".
func (s *Store) Hold(ctx context.Context, name string, work func(ctx context.Context)) error {
	if strings.HasPrefix(name, memberPrefix) || !jetstreamKey(name) {
		return fmt.Errorf("lease: invalid name %q", name)
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	for {
		rev, how, err := s.acquire(ctx, name)
		if err != nil {
			return nil // ctx ended
		}
		again := s.hold(ctx, name, rev, how, work)
		if !again {
			return nil
		}
	}
}

func jetstreamKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-/_=.", r)) {
			return false
		}
	}
	return true
}

// acquire waits until the lease is free and this instance gets it.
func (s *Store) acquire(ctx context.Context, name string) (rev uint64, how string, err error) {
	var freeSince time.Time
	poll := time.NewTicker(s.renewEvery())
	defer poll.Stop()
	for {
		s.mu.Lock()
		e := s.leases[name]
		free := e == nil || e.holder == ""
		mine, least := s.loadLocked(kindOf(name))
		ch := s.changed
		how = "new"
		if e != nil && e.holder == "" {
			how = "released"
			if e.expired {
				how = "expired"
			}
		}
		s.mu.Unlock()
		if free {
			if freeSince.IsZero() {
				freeSince = time.Now()
			}
			if mine <= least || time.Since(freeSince) >= s.cfg.TTL {
				data, _ := json.Marshal(value{Holder: s.cfg.Holder, Since: time.Now().UTC()})
				cctx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
				rev, err := s.kv.Create(cctx, name, data)
				cancel()
				if err == nil {
					return rev, how, nil
				}
				if ctx.Err() != nil {
					return 0, "", ctx.Err()
				}
				if !errors.Is(err, jetstream.ErrKeyExists) {
					s.log.Warn("lease not taken", "lease", name, "err", err)
				}
				freeSince = time.Time{}
			}
		} else {
			freeSince = time.Time{}
		}
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-ch:
		case <-poll.C:
		}
	}
}

// hold runs work under the lease until it is lost or handed over (true: take it again) or ctx
// ends or work returns (false).
func (s *Store) hold(ctx context.Context, name string, rev uint64, how string, work func(context.Context)) (again bool) {
	sent := time.Now() // the server stored the key after this: it expires no sooner than sent+TTL
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		work(wctx)
	}()
	s.mu.Lock()
	s.held[name] = true
	prev := ""
	if e := s.leases[name]; e != nil {
		prev = e.prev
	}
	s.mu.Unlock()
	kind := kindOf(name)
	metricHeld.WithLabelValues(kind).Inc()
	metricAcquired.WithLabelValues(kind, how).Inc()
	s.log.Info("lease acquired", "lease", name, "how", how, "previous_holder", prev)
	defer func() {
		s.mu.Lock()
		delete(s.held, name)
		s.mu.Unlock()
		metricHeld.WithLabelValues(kind).Dec()
	}()

	end := func(cause error) {
		stop(cause)
		<-done
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := s.kv.Delete(rctx, name, jetstream.LastRevision(rev)); err != nil {
			s.log.Warn("lease not released; it expires by itself", "lease", name, "err", err)
		}
	}
	// deadline is when to give the lease up if renewals keep failing: a margin before the
	// earliest time the server may expire it.
	margin := s.cfg.TTL / 5
	deadline := time.NewTimer(s.cfg.TTL - margin)
	defer deadline.Stop()
	renew := time.NewTicker(s.renewEvery())
	defer renew.Stop()
	data, _ := json.Marshal(value{Holder: s.cfg.Holder, Since: time.Now().UTC()})
	for {
		s.mu.Lock()
		ch := s.changed
		e := s.leases[name]
		taken := e != nil && e.rev > rev && e.holder != s.cfg.Holder
		s.mu.Unlock()
		if taken {
			s.lost(name, "another holder has it")
			end(ErrLost)
			return true
		}
		select {
		case <-ctx.Done():
			end(nil)
			release()
			s.log.Info("lease released", "lease", name)
			return false
		case <-done:
			release()
			s.log.Info("lease released: its work ended", "lease", name)
			return false
		case <-deadline.C:
			s.lost(name, "not renewed in time")
			end(ErrLost)
			return true
		case <-ch:
		case <-renew.C:
			at := time.Now()
			rctx, cancel := context.WithDeadline(ctx, sent.Add(s.cfg.TTL-margin))
			nrev, err := s.kv.Update(rctx, name, data, rev)
			cancel()
			switch {
			case err == nil:
				rev, sent = nrev, at
				deadline.Reset(time.Until(sent.Add(s.cfg.TTL - margin)))
			case ctx.Err() != nil:
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyExists):
				s.lost(name, "another holder has it")
				end(ErrLost)
				return true
			default:
				s.log.Warn("lease not renewed; retrying", "lease", name, "err", err, "gives_up_in", time.Until(sent.Add(s.cfg.TTL-margin)).Round(time.Millisecond))
			}
			if s.shouldShed(kind) {
				end(ErrReleased)
				release()
				metricHandedOver.WithLabelValues(kind).Inc()
				s.log.Info("lease handed over to a less loaded instance", "lease", name)
				return true
			}
		}
	}
}

func (s *Store) lost(name, why string) {
	metricLost.WithLabelValues(kindOf(name)).Inc()
	s.log.Warn("lease lost; stopping its work", "lease", name, "why", why)
}

// shouldShed reports whether this instance should hand a lease over for balance: it holds two
// or more leases more than the least loaded live member. Hand-overs go in rounds at most every
// TTL/2 (a rule restart costs something): a round hands over a quarter of the difference, or
// just one when the last round's leases were not taken by others (a member that is live but
// does not take leases must not make this one drop half its work again and again).
func (s *Store) shouldShed(kind string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.shed[kind]
	if r == nil {
		r = &shedRound{}
		s.shed[kind] = r
	}
	mine, least := s.loadLocked(kind)
	if mine < least+2 {
		r.left = 0
		return false
	}
	if r.left == 0 {
		if time.Since(r.at) < s.cfg.TTL/2 {
			return false
		}
		n := max(1, (mine-least)/4)
		if !r.at.IsZero() && least <= r.least {
			n = 1
		}
		r.left, r.least, r.at = n, least, time.Now()
	}
	r.left--
	return true
}

// kindOf is a lease name's first segment ("rule" of "rule.k9"), for metric labels.
func kindOf(name string) string {
	k, _, _ := strings.Cut(name, ".")
	return k
}
