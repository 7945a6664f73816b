package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/window"
)

// Bus is what the rules need of the hub's streams. *streams.Bus satisfies it.
type Bus interface {
	// JetStream gives access to the IOT stream and the rules' KV buckets.
	JetStream() jetstream.JetStream
	// DeadLetter stores a notification no webhook took, with the reason.
	DeadLetter(ctx context.Context, env *streams.Envelope, reason string) error
}

// Config tunes how rules run. Zero values take the defaults documented on each field.
type Config struct {
	// CheckpointInterval is the longest time between checkpoints of a rule that has
	// processed something (default 2s).
	CheckpointInterval time.Duration `yaml:"checkpoint_interval" json:"checkpoint_interval"`
	// CheckpointEvents is the most messages processed between checkpoints (default 10000).
	CheckpointEvents int `yaml:"checkpoint_events" json:"checkpoint_events"`
	// AdvanceInterval is how often idle rules let event time pass (default 1s).
	AdvanceInterval time.Duration `yaml:"advance_interval" json:"advance_interval"`
	// Slack bounds the delay from a message's receive stamp to the rule: idle closing uses
	// now minus Slack as processing time (default 2s).
	Slack time.Duration `yaml:"slack" json:"slack"`
	// Replicas of the KV buckets (default 1).
	Replicas int `yaml:"replicas" json:"replicas"`
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.CheckpointInterval, 2*time.Second)
	def(&c.AdvanceInterval, time.Second)
	def(&c.Slack, 2*time.Second)
	if c.CheckpointEvents == 0 {
		c.CheckpointEvents = 10000
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
}

// Validate reports the first field that is wrong. Zero values are valid: they mean the default.
func (c Config) Validate() error {
	switch {
	case c.CheckpointInterval < 0:
		return errors.New("rules: checkpoint_interval must not be negative")
	case c.CheckpointEvents < 0:
		return errors.New("rules: checkpoint_events must not be negative")
	case c.AdvanceInterval < 0:
		return errors.New("rules: advance_interval must not be negative")
	case c.Slack < 0:
		return errors.New("rules: slack must not be negative")
	case c.Replicas < 0 || c.Replicas > 5:
		return fmt.Errorf("rules: replicas %d out of range 1..5", c.Replicas)
	}
	return nil
}

// Leases gives each rule to one hub instance at a time. *lease.Store satisfies it.
type Leases interface {
	// Hold runs work while this instance holds lease name, until ctx ends; work's context
	// ends (cause lease.ErrLost) when the lease is lost.
	Hold(ctx context.Context, name string, work func(ctx context.Context)) error
	// Owner is the instance holding lease name, "" when none does.
	Owner(name string) string
}

// LeaseName is the name of rule's lease.
func LeaseName(rule string) string { return "rule." + rule }

// Manager keeps rule definitions in JetStream KV and runs the enabled rules: one runner
// goroutine per rule, started, restarted and stopped as definitions change on any instance.
// With leases (UseLeases), each rule runs on the one instance holding its lease; without, on
// this instance.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	bus    Bus
	devs   DeviceLookup
	js     jetstream.JetStream
	stream jetstream.Stream
	defs   jetstream.KeyValue
	state  *stateStore
	scan   scanner
	feeds  *feeds
	http   *http.Client
	now    func() time.Time
	ready  chan struct{}
	leases Leases

	mu      sync.Mutex
	handles map[string]*handle
	wg      sync.WaitGroup
}

// handle is a running (or restarting) rule.
type handle struct {
	rule   Rule
	rev    uint64
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu      sync.Mutex
	runner  *runner
	lastErr string
}

// New opens (or creates) the rules' KV buckets. devs may be nil (rules then see no device
// types or tags). Run starts the rules.
func New(ctx context.Context, bus Bus, devs DeviceLookup, cfg Config, log *slog.Logger) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	js := bus.JetStream()
	stream, err := js.Stream(ctx, streams.StreamMessages)
	if err != nil {
		return nil, fmt.Errorf("rules: stream %s: %w", streams.StreamMessages, err)
	}
	defs, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: DefinitionBucket, Description: "Tributary rule definitions",
		History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("rules: bucket %s: %w", DefinitionBucket, err)
	}
	st, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: StateBucket, Description: "Tributary rule checkpoints",
		History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("rules: bucket %s: %w", StateBucket, err)
	}
	log = log.With("component", "rules")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4
	m := &Manager{
		cfg: cfg, log: log, bus: bus, devs: devs, js: js, stream: stream, defs: defs,
		state: &stateStore{kv: st}, scan: scanner{stream: stream},
		feeds: &feeds{m: map[string]*feed{}, stream: stream, devs: devs, log: log},
		http: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a webhook that redirects has failed
		}},
		now: time.Now, ready: make(chan struct{}), handles: map[string]*handle{},
	}
	return m, nil
}

// UseLeases makes each rule run only on the instance holding its lease (LeaseName), so that
// several instances sharing NATS run it once between them. Call it before Run.
func (m *Manager) UseLeases(l Leases) { m.leases = l }

// Ready is closed once every stored rule has been started.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Run runs the rules until ctx ends, following changes to their definitions. On return every
// runner has stopped and stored its final checkpoint.
func (m *Manager) Run(ctx context.Context) error {
	defer func() {
		m.mu.Lock()
		for _, h := range m.handles {
			h.cancel(nil)
		}
		m.mu.Unlock()
		m.wg.Wait()
		m.feeds.wait()
	}()
	var w jetstream.KeyWatcher
	for {
		var err error
		if w, err = m.defs.WatchAll(ctx); err == nil {
			break
		}
		m.log.Warn("watching rule definitions", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("rules: definition watcher stopped")
			}
			if e == nil {
				select {
				case <-m.ready:
				default:
					close(m.ready)
					m.log.Info("rules started", "rules", len(m.handles))
				}
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				var r Rule
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					m.log.Error("unreadable rule definition", "rule", e.Key(), "err", err)
					continue
				}
				m.apply(ctx, r, e.Revision())
			default:
				m.remove(ctx, e.Key())
			}
		}
	}
}

// apply (re)starts or stops the runner of r.
func (m *Manager) apply(ctx context.Context, r Rule, rev uint64) {
	m.mu.Lock()
	old := m.handles[r.Name]
	m.mu.Unlock()
	if old != nil {
		if old.rev == rev {
			return
		}
		old.cancel(nil)
		<-old.done
	}
	m.mu.Lock()
	delete(m.handles, r.Name)
	m.mu.Unlock()
	if !r.IsEnabled() {
		m.log.Info("rule disabled", "rule", r.Name)
		return
	}
	c, err := compile(&r.Spec)
	if err != nil {
		m.log.Error("stored rule does not compile; not running it", "rule", r.Name, "err", err)
		return
	}
	hctx, cancel := context.WithCancelCause(ctx)
	h := &handle{rule: r, rev: rev, cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.handles[r.Name] = h
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(h.done)
		if m.leases == nil {
			m.keepRunning(hctx, h, c)
			return
		}
		if err := m.leases.Hold(hctx, LeaseName(r.Name), func(ctx context.Context) { m.keepRunning(ctx, h, c) }); err != nil {
			m.log.Error("rule cannot run", "rule", r.Name, "err", err)
		}
	}()
}

// keepRunning runs a rule, restarting it from its checkpoint after an error.
func (m *Manager) keepRunning(ctx context.Context, h *handle, c *compiled) {
	defer func() {
		h.mu.Lock()
		h.runner = nil // not running here: Stats reads the checkpoint
		h.mu.Unlock()
	}()
	wait := time.Second
	for {
		r, err := newRunner(m, h.rule, c)
		if err != nil {
			m.log.Error("rule cannot run", "rule", h.rule.Name, "err", err)
			return
		}
		h.mu.Lock()
		h.runner = r
		h.mu.Unlock()
		err = r.run(ctx)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		h.lastErr = err.Error()
		h.mu.Unlock()
		m.log.Error("rule stopped; restarting from its checkpoint", "rule", h.rule.Name, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// remove stops a deleted rule and removes its state.
func (m *Manager) remove(ctx context.Context, name string) {
	m.mu.Lock()
	h := m.handles[name]
	delete(m.handles, name)
	m.mu.Unlock()
	if h != nil {
		h.cancel(errRuleDeleted)
		<-h.done
	}
	if err := m.state.remove(ctx, name); err != nil {
		m.log.Warn("removing state of deleted rule", "rule", name, "err", err)
	}
	m.deleteWebhookConsumer(ctx, name)
	forgetMetrics(name)
	m.log.Info("rule deleted", "rule", name)
}

// Create stores a new rule. Errors: ErrExists, or an *InvalidError naming what is wrong.
func (m *Manager) Create(ctx context.Context, spec Spec) (Rule, error) {
	c, err := compile(&spec)
	if err != nil {
		return Rule{}, err
	}
	now := m.now().UTC()
	r := Rule{Spec: spec, CreatedAt: now, UpdatedAt: now, StateSince: now, Incarnation: nuid.Next()}
	r.describe(c)
	if err := m.checkCycle(ctx, r); err != nil {
		return Rule{}, err
	}
	if r.StartSeq, err = m.resolveStart(ctx, spec.Start, c); err != nil {
		return Rule{}, err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return Rule{}, err
	}
	if _, err := m.defs.Create(ctx, r.Name, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Rule{}, fmt.Errorf("%w: %s", ErrExists, r.Name)
		}
		return Rule{}, fmt.Errorf("create rule %s: %w", r.Name, err)
	}
	return r, nil
}

// Put creates or replaces the rule name; created reports which. Replacing keeps the rule's
// state when its meaning (Fingerprint: query, lateness, idle timeout, max future) is
// unchanged; otherwise the state starts over at spec.Start.
func (m *Manager) Put(ctx context.Context, name string, spec Spec) (r Rule, created bool, err error) {
	switch spec.Name {
	case "":
		spec.Name = name
	case name:
	default:
		return Rule{}, false, invalidf("name", fmt.Sprintf("the body names rule %q, the path %q", spec.Name, name))
	}
	for range 5 {
		e, err := m.defs.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			r, err := m.Create(ctx, spec)
			if errors.Is(err, ErrExists) {
				continue
			}
			return r, err == nil, err
		}
		if err != nil {
			return Rule{}, false, fmt.Errorf("read rule %s: %w", name, err)
		}
		var old Rule
		if err := json.Unmarshal(e.Value(), &old); err != nil {
			return Rule{}, false, fmt.Errorf("read rule %s: %w", name, err)
		}
		c, err := compile(&spec)
		if err != nil {
			return Rule{}, false, err
		}
		now := m.now().UTC()
		r := Rule{Spec: spec, CreatedAt: old.CreatedAt, UpdatedAt: now}
		r.describe(c)
		if err := m.checkCycle(ctx, r); err != nil {
			return Rule{}, false, err
		}
		if c.fp == old.Fingerprint {
			r.Incarnation, r.StartSeq, r.StateSince = old.Incarnation, old.StartSeq, old.StateSince
		} else {
			r.Incarnation, r.StateSince = nuid.Next(), now
			if r.StartSeq, err = m.resolveStart(ctx, spec.Start, c); err != nil {
				return Rule{}, false, err
			}
		}
		data, err := json.Marshal(r)
		if err != nil {
			return Rule{}, false, err
		}
		if _, err := m.defs.Update(ctx, name, data, e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return Rule{}, false, fmt.Errorf("update rule %s: %w", name, err)
		}
		return r, false, nil
	}
	return Rule{}, false, fmt.Errorf("%w: %s", ErrConflict, name)
}

// Get returns one rule.
func (m *Manager) Get(ctx context.Context, name string) (Rule, error) {
	e, err := m.defs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Rule{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Rule{}, fmt.Errorf("read rule %s: %w", name, err)
	}
	var r Rule
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Rule{}, fmt.Errorf("read rule %s: %w", name, err)
	}
	return r, nil
}

// List returns every rule, by name.
func (m *Manager) List(ctx context.Context) ([]Rule, error) {
	lister, err := m.defs.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return []Rule{}, nil
		}
		return nil, fmt.Errorf("list rules: %w", err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]Rule, 0, len(names))
	for _, n := range names {
		r, err := m.Get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Delete removes a rule; its runner stops and its state is removed on every instance. Its
// published results stay in the stream until they expire.
func (m *Manager) Delete(ctx context.Context, name string) error {
	e, err := m.defs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("read rule %s: %w", name, err)
	}
	if err := m.defs.Delete(ctx, name, jetstream.LastRevision(e.Revision())); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: %s", ErrConflict, name)
		}
		return fmt.Errorf("delete rule %s: %w", name, err)
	}
	return nil
}

// Stats returns a rule's counters: live when it runs on this instance, else from its last
// checkpoint.
func (m *Manager) Stats(ctx context.Context, name string) (Stats, error) {
	r, err := m.Get(ctx, name)
	if err != nil {
		return Stats{}, err
	}
	owner := ""
	if m.leases != nil {
		owner = m.leases.Owner(LeaseName(name))
	}
	m.mu.Lock()
	h := m.handles[name]
	m.mu.Unlock()
	if h != nil {
		h.mu.Lock()
		run, lastErr := h.runner, h.lastErr
		h.mu.Unlock()
		if run != nil && h.rev > 0 {
			s := run.snapshot()
			if s.Error == "" {
				s.Error = lastErr
			}
			s.Owner = owner
			return s, nil
		}
	}
	s, err := m.storedStats(ctx, r)
	s.Owner = owner
	s.Running = owner != "" && r.IsEnabled() // on the owner
	return s, err
}

// storedStats reads the counters of a rule that does not run here from its checkpoint.
func (m *Manager) storedStats(ctx context.Context, r Rule) (Stats, error) {
	s := Stats{Rule: r.Name}
	c, err := compile(&r.Spec)
	if err != nil {
		s.Error = err.Error()
		return s, nil
	}
	data, _, err := m.state.load(ctx, r.Name)
	if err != nil || data == nil {
		return s, err
	}
	ck, err := decodeCheckpoint(data)
	if err != nil || ck.Incarnation != r.Incarnation {
		return s, nil
	}
	eng, err := window.New(c.plan, c.opts)
	if err != nil || eng.Restore(ck.Engine) != nil {
		return s, nil
	}
	es := eng.Stats()
	s.EventsIn, s.Accepted, s.Filtered, s.LateEvents, s.Rejected = es.EventsIn, es.Accepted, es.Filtered, es.Late, es.Rejected
	s.Results, s.HavingFailed, s.Notifications, s.FiredGroups = ck.Results, ck.Failed, ck.Alerts, len(ck.Fired)
	s.OpenWindows, s.Groups, s.Watermark, s.LastSeq = es.OpenWindows, es.Groups, es.Watermark, ck.LastSeq
	s.LastResult, s.LastCheckpoint = ck.LastResult, ck.SavedAt
	return s, nil
}

// resolveStart turns Spec.Start into the first stream sequence to read.
func (m *Manager) resolveStart(ctx context.Context, start string, c *compiled) (uint64, error) {
	info, err := m.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	switch start {
	case "", "now":
		return info.State.LastSeq + 1, nil
	case "earliest":
		return max(info.State.FirstSeq, 1), nil
	}
	t, err := time.Parse(time.RFC3339Nano, start)
	if err != nil {
		return 0, invalidf("start", err.Error())
	}
	subs, err := filterSubjects(c.filter)
	if err != nil {
		return 0, invalid("sql", err)
	}
	seq := info.State.LastSeq + 1
	err = m.scan.scanConfig(ctx, jetstream.ConsumerConfig{
		FilterSubjects: subs, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, HeadersOnly: true, InactiveThreshold: time.Minute,
	}, 0, func(msg jetstream.Msg) bool {
		if md, err := msg.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		return false
	})
	return seq, err
}

// checkCycle refuses a rule whose results would come back to it through other rules.
func (m *Manager) checkCycle(ctx context.Context, r Rule) error {
	if !strings.HasPrefix(r.Source, "rules/") {
		return nil
	}
	all, err := m.List(ctx)
	if err != nil {
		return err
	}
	filters := map[string]string{r.Name: sourceFilter(r.Source)}
	for _, o := range all {
		if o.Name != r.Name {
			filters[o.Name] = sourceFilter(o.Source)
		}
	}
	reads := func(reader, writer string) bool {
		if reader == writer {
			return false
		}
		f := filters[reader]
		for _, sub := range []string{"results", "alerts", "late"} {
			if streams.MatchTopic(f, "rules/"+writer+"/"+sub) {
				return true
			}
		}
		return false
	}
	// Depth-first from r along "is read by" edges: reaching r again closes a cycle.
	var path []string
	seen := map[string]bool{}
	var visit func(n string) bool
	visit = func(n string) bool {
		path = append(path, n)
		for o := range filters {
			if !reads(o, n) {
				continue
			}
			if o == r.Name {
				path = append(path, o)
				return true
			}
			if !seen[o] {
				seen[o] = true
				if visit(o) {
					return true
				}
			}
		}
		path = path[:len(path)-1]
		return false
	}
	if visit(r.Name) {
		return invalidf("sql", fmt.Sprintf("FROM '%s' makes a cycle of rules reading each other's results: %s", r.Source, strings.Join(path, " → ")))
	}
	return nil
}
