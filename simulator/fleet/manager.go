package fleet

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/streams"
)

// Bucket is the KV bucket holding simulations.
const Bucket = "simulations"

// Status of a simulation.
type Status string

const (
	Starting Status = "starting" // provisioning and connecting devices
	Running  Status = "running"
	Stopped  Status = "stopped" // by request
	Done     Status = "done"    // its duration passed
	Failed   Status = "failed"
	// Interrupted is kept for simulations recorded by hubs that did not resume them; a
	// simulation whose hub stops or dies is now resumed by another (or the restarted) hub.
	Interrupted Status = "interrupted"
)

// Active reports whether a simulation in this status has devices running.
func (s Status) Active() bool { return s == Starting || s == Running }

// Simulation is a fleet run as the API shows it and the KV bucket keeps it.
type Simulation struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Seed       int64      `json:"seed"`
	Status     Status     `json:"status"`
	Definition Definition `json:"definition"`
	Devices    int        `json:"devices"`
	// Anomalies counts the anomaly windows injected (one per device and anomaly).
	Anomalies int       `json:"anomalies"`
	CreatedAt time.Time `json:"created_at"`
	// StartedAt is when the devices started sending: anomaly offsets count from it.
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Error     string    `json:"error,omitempty"`
	Stats     Stats     `json:"stats"`
	Owner     string    `json:"owner,omitempty"`
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	// Resumes counts the times another hub (or the restarted one) took the simulation over.
	Resumes int `json:"resumes,omitempty"`
}

// ManagerConfig configures the simulation manager.
type ManagerConfig struct {
	// Replicas of the KV bucket (default 1).
	Replicas int `yaml:"replicas" json:"replicas"`
	// Concurrency of provisioning and connecting (default 64).
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// Lease is how long a running simulation's heartbeat may be silent before it is marked
	// interrupted (default 10s).
	Lease time.Duration `yaml:"lease" json:"lease"`
	// MaxActive bounds simulations starting or running at once (default 8).
	MaxActive int `yaml:"max_active" json:"max_active"`
	// Endpoints returns the hub's MQTT and CoAP addresses, or an error while they are not
	// known yet. The logger is not part of the config.
	Endpoints func() (Endpoints, error) `yaml:"-" json:"-"`
}

// Manager starts, lists and stops simulations running in this process.
type Manager struct {
	cfg     ManagerConfig
	log     *slog.Logger
	kv      jetstream.KeyValue
	prov    Provisioner
	owner   string
	members simulator.Members // nil: owners are judged by their heartbeats
	now     func() time.Time

	launch  chan *simRun
	stopped chan struct{}

	mu   sync.Mutex
	runs map[string]*simRun
}

type simRun struct {
	sim    Simulation
	plan   *Plan
	runner *Runner
	base   Stats         // counters recorded before the run was resumed here
	stop   chan struct{} // closed by a stop request
	once   sync.Once
}

// stats are the simulation's counters: this run's and those from before it was resumed.
func (r *simRun) stats() Stats { return r.runner.Stats().plus(r.base) }

// NewManager opens the simulations bucket.
func NewManager(ctx context.Context, js jetstream.JetStream, cfg ManagerConfig, prov Provisioner, log *slog.Logger) (*Manager, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Lease == 0 {
		cfg.Lease = 10 * time.Second
	}
	if cfg.MaxActive == 0 {
		cfg.MaxActive = 8
	}
	if cfg.Endpoints == nil {
		return nil, errors.New("fleet: Endpoints is required")
	}
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Tributary simulations (virtual fleets)", History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("simulation bucket: %w", err)
	}
	return &Manager{cfg: cfg, log: log.With("component", "simulations"), kv: kv, prov: prov, owner: nuid.Next(), now: time.Now,
		launch: make(chan *simRun), stopped: make(chan struct{}), runs: map[string]*simRun{}}, nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "s" + idEncoding.EncodeToString(b[:])
}

func randomSeed() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}

// Start parses a fleet definition (format "yaml" or "json") and starts it. A malformed
// definition, a device ID taken by a device of someone else, or a fleet already running are
// refused before anything is created.
func (m *Manager) Start(ctx context.Context, data []byte, format string) (Simulation, error) {
	def, err := Parse(data, format)
	if err != nil {
		return Simulation{}, err
	}
	seed := randomSeed()
	if def.Seed != nil {
		seed = *def.Seed
	}
	plan := NewPlan(def, seed)
	sims, err := m.List(ctx)
	if err != nil {
		return Simulation{}, err
	}
	active := 0
	for _, s := range sims {
		if !s.Status.Active() {
			continue
		}
		active++
		if s.Name == def.Name {
			return Simulation{}, fmt.Errorf("%w: fleet %s is running as simulation %s; stop it first", simulator.ErrExists, def.Name, s.ID)
		}
	}
	if active >= m.cfg.MaxActive {
		return Simulation{}, fmt.Errorf("%w: %d simulations are running, the limit is %d", simulator.ErrState, active, m.cfg.MaxActive)
	}
	for _, d := range plan.Devices {
		if err := m.prov.Check(ctx, def.Name, d.ID); err != nil {
			return Simulation{}, err
		}
	}
	ep, err := m.cfg.Endpoints()
	if err != nil {
		return Simulation{}, fmt.Errorf("%w: %v", simulator.ErrState, err)
	}
	now := m.now().UTC()
	sim := Simulation{ID: newID(), Name: def.Name, Seed: seed, Status: Starting, Definition: def, Devices: len(plan.Devices),
		CreatedAt: now, Owner: m.owner, Heartbeat: now}
	for _, d := range plan.Devices {
		sim.Anomalies += len(d.Anomalies)
	}
	run := &simRun{sim: sim, plan: plan, stop: make(chan struct{}),
		runner: NewRunner(plan, Options{Endpoints: ep, Provisioner: m.prov, Concurrency: m.cfg.Concurrency, Log: m.log})}
	sim.Stats = run.runner.Stats()
	data, err = json.Marshal(sim)
	if err != nil {
		return Simulation{}, err
	}
	if _, err := m.kv.Create(ctx, sim.ID, data); err != nil {
		return Simulation{}, fmt.Errorf("store simulation: %w", err)
	}
	select {
	case m.launch <- run:
		return sim, nil
	case <-m.stopped:
		err = errors.New("simulations are stopped")
	case <-ctx.Done():
		err = ctx.Err()
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.kv.Purge(dctx, sim.ID)
	return Simulation{}, fmt.Errorf("start simulation: %w", err)
}

// Run runs the simulations started here until ctx ends (then it hands them over), resumes
// those of instances that died or handed them over, and obeys stop requests from any instance.
func (m *Manager) Run(ctx context.Context) error {
	defer close(m.stopped)
	var wg sync.WaitGroup
	defer wg.Wait()
	w, err := m.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("simulations: watch: %w", err)
	}
	defer w.Stop()
	launch := func(run *simRun) {
		m.mu.Lock()
		m.runs[run.sim.ID] = run
		m.mu.Unlock()
		wg.Go(func() {
			m.execute(ctx, run)
			m.mu.Lock()
			delete(m.runs, run.sim.ID)
			m.mu.Unlock()
		})
	}
	for _, run := range m.sweep(ctx) {
		launch(run)
	}
	tick := time.NewTicker(m.cfg.Lease / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case run := <-m.launch:
			launch(run)
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				continue
			}
			m.mu.Lock()
			run := m.runs[e.Key()]
			m.mu.Unlock()
			if run == nil {
				continue
			}
			var s Simulation
			if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &s) != nil || !s.Status.Active() {
				run.once.Do(func() { close(run.stop) })
			}
		case <-tick.C:
			for _, run := range m.sweep(ctx) {
				launch(run)
			}
		}
	}
}

// sweep takes over the active simulations whose owner is gone — it died, or handed them over
// when it stopped — and returns their runs, to resume here on the same timeline; one whose
// duration has passed meanwhile ends as done. A claim is a compare-and-set of the owner, so
// of the instances sweeping at once one resumes it.
func (m *Manager) sweep(ctx context.Context) []*simRun {
	sims, err := m.List(ctx)
	if err != nil {
		return nil
	}
	var out []*simRun
	for _, s := range sims {
		if !s.Status.Active() || m.local(s.ID) {
			continue
		}
		switch {
		case s.Owner == m.owner:
			// This instance's own from before a restart under the same name, unless it is
			// being launched right now (Start records it first).
			if m.now().Sub(s.Heartbeat) <= m.cfg.Lease {
				continue
			}
		case simulator.OwnerAlive(s.Owner, s.Heartbeat, m.members, m.cfg.Lease, m.now()):
			continue
		}
		ep, err := m.cfg.Endpoints()
		if err != nil {
			return out // not serving yet: the next sweep
		}
		gone, now := s.Owner, m.now().UTC()
		claimed, err := m.update(ctx, s.ID, func(s *Simulation) error {
			if !s.Status.Active() || s.Owner != gone {
				return errSkip
			}
			if d := s.Definition.Duration.D(); d > 0 && !s.StartedAt.IsZero() && now.After(s.StartedAt.Add(d)) {
				s.Status, s.Owner, s.EndedAt = Done, "", s.StartedAt.Add(d)
				return nil
			}
			s.Owner, s.Heartbeat, s.Error = m.owner, now, ""
			s.Resumes++
			return nil
		})
		if err != nil || claimed.Status == Done {
			continue
		}
		plan := NewPlan(claimed.Definition, claimed.Seed)
		out = append(out, &simRun{sim: claimed, plan: plan, base: claimed.Stats, stop: make(chan struct{}),
			runner: NewRunner(plan, Options{Endpoints: ep, Provisioner: m.prov, Concurrency: m.cfg.Concurrency, Log: m.log, ResumeFrom: claimed.StartedAt})})
		m.log.Warn("simulation resumed here", "simulation", s.ID, "previous_owner", gone, "started_at", claimed.StartedAt)
	}
	return out
}

// UseMembers makes this manager run simulations as self, a member of members, and declare a
// simulation interrupted only when its owner is no longer a live member — not by comparing its
// heartbeat with the local clock. Call it before Start and Run.
func (m *Manager) UseMembers(self string, members simulator.Members) {
	m.owner, m.members = self, members
}

func (m *Manager) local(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.runs[id]
	return ok
}

var errSkip = errors.New("skip")

// execute runs one simulation and records its progress every second and its outcome.
func (m *Manager) execute(ctx context.Context, run *simRun) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run.runner.Run(rctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	stop := run.stop
	var runErr error
loop:
	for {
		select {
		case runErr = <-done:
			break loop
		case <-stop:
			cancel()
			stop = nil
		case <-t.C:
			m.record(run, func(s *Simulation) {
				if s.Status == Starting && run.runner.Stats().Phase == PhaseRunning {
					s.Status = Running
				}
			})
		}
	}
	stats := run.stats()
	m.record(run, func(s *Simulation) {
		s.Owner = ""
		switch {
		case !s.Status.Active(): // stopped by request
		case runErr != nil && !errors.Is(runErr, context.Canceled):
			s.Status, s.Error = Failed, runErr.Error()
		case ctx.Err() != nil:
			// The hub is stopping: the simulation stays active without an owner, and another
			// hub, or this one when it starts again, resumes it.
			return
		default:
			s.Status = Done
		}
		s.EndedAt = m.now().UTC()
	})
	m.log.Info("simulation ended", "simulation", run.sim.ID, "sent", stats.Sent, "errors", stats.Errors, "err", runErr)
}

// record writes the runner's stats and a heartbeat, then applies fn. A simulation another
// instance has taken over (this one was judged gone) is no longer written: the run here stops.
func (m *Manager) record(run *simRun, fn func(*Simulation)) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := m.update(ctx, run.sim.ID, func(s *Simulation) error {
		if s.Owner != m.owner {
			return errLost
		}
		s.Stats = run.stats()
		if started := s.Stats.StartedAt; !started.IsZero() {
			s.StartedAt = started.UTC() // a resumed run keeps the first start until it runs
		}
		s.Heartbeat = m.now().UTC()
		fn(s)
		return nil
	})
	switch {
	case errors.Is(err, errLost):
		m.log.Warn("simulation taken over by another instance; stopping it here", "simulation", run.sim.ID)
		run.once.Do(func() { close(run.stop) })
	case err != nil && !errors.Is(err, simulator.ErrNotFound):
		m.log.Warn("cannot record simulation", "simulation", run.sim.ID, "err", err)
	}
}

var errLost = errors.New("simulation taken over by another instance")

func (m *Manager) update(ctx context.Context, id string, fn func(*Simulation) error) (Simulation, error) {
	for attempt := 0; ; attempt++ {
		e, err := m.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Simulation{}, fmt.Errorf("simulation %s: %w", id, simulator.ErrNotFound)
		}
		if err != nil {
			return Simulation{}, fmt.Errorf("simulation %s: %w", id, err)
		}
		var s Simulation
		if err := json.Unmarshal(e.Value(), &s); err != nil {
			return Simulation{}, fmt.Errorf("simulation %s: %w", id, err)
		}
		if err := fn(&s); err != nil {
			return s, err
		}
		data, err := json.Marshal(s)
		if err != nil {
			return Simulation{}, err
		}
		if _, err = m.kv.Update(ctx, id, data, e.Revision()); err == nil {
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) || attempt >= 50 {
			return Simulation{}, fmt.Errorf("simulation %s: %w", id, err)
		}
	}
}

// Get returns one simulation, with live stats when it runs here.
func (m *Manager) Get(ctx context.Context, id string) (Simulation, error) {
	if !simulator.ValidName(id) {
		return Simulation{}, fmt.Errorf("simulation %q: %w", id, simulator.ErrNotFound)
	}
	e, err := m.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Simulation{}, fmt.Errorf("simulation %s: %w", id, simulator.ErrNotFound)
	}
	if err != nil {
		return Simulation{}, fmt.Errorf("simulation %s: %w", id, err)
	}
	var s Simulation
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return Simulation{}, fmt.Errorf("simulation %s: %w", id, err)
	}
	m.mu.Lock()
	run := m.runs[id]
	m.mu.Unlock()
	if run != nil && s.Status.Active() {
		s.Stats = run.stats()
		if started := s.Stats.StartedAt; !started.IsZero() {
			s.StartedAt = started.UTC()
		}
	}
	return s, nil
}

// List returns every simulation, newest first.
func (m *Manager) List(ctx context.Context) ([]Simulation, error) {
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list simulations: %w", err)
	}
	out := []Simulation{}
	for k := range keys.Keys() {
		s, err := m.Get(ctx, k)
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Simulation) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Truth lists the faults injected into simulation id, in hub time (see Truth). Before the
// devices start sending it is empty.
func (m *Manager) Truth(ctx context.Context, id string) ([]Truth, error) {
	s, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.StartedAt.IsZero() {
		return []Truth{}, nil
	}
	until := m.now()
	if !s.EndedAt.IsZero() {
		until = s.EndedAt
	} else if d := s.Definition.Duration.D(); d > 0 {
		until = s.StartedAt.Add(d)
	}
	truth := NewPlan(s.Definition, s.Seed).Truth(s.StartedAt, until)
	if truth == nil {
		truth = []Truth{}
	}
	return truth, nil
}

// Stop ends a starting or running simulation; its devices disconnect.
func (m *Manager) Stop(ctx context.Context, id string) (Simulation, error) {
	if _, err := m.Get(ctx, id); err != nil {
		return Simulation{}, err
	}
	s, err := m.update(ctx, id, func(s *Simulation) error {
		if !s.Status.Active() {
			return fmt.Errorf("%w: simulation %s is %s", simulator.ErrState, id, s.Status)
		}
		s.Status = Stopped
		return nil
	})
	if err != nil {
		return Simulation{}, err
	}
	m.mu.Lock()
	run := m.runs[id]
	m.mu.Unlock()
	if run != nil {
		run.once.Do(func() { close(run.stop) })
	}
	return s, nil
}

// Delete stops the simulation if needed, removes its virtual devices from the registry (unless
// keepDevices) and forgets it.
func (m *Manager) Delete(ctx context.Context, id string, keepDevices bool) error {
	s, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if s.Status.Active() {
		if _, err := m.Stop(ctx, id); err != nil && !errors.Is(err, simulator.ErrState) {
			return err
		}
	}
	held := func(ctx context.Context) (string, time.Time, bool) {
		cur, err := m.Get(ctx, id)
		return cur.Owner, cur.Heartbeat, err == nil
	}
	if err := simulator.WaitReleased(ctx, held, m.cfg.Lease, m.now().Add(m.cfg.Lease+20*time.Second), m.now); err != nil {
		return err
	}
	if !keepDevices {
		plan := NewPlan(s.Definition, s.Seed)
		r := NewRunner(plan, Options{Concurrency: m.cfg.Concurrency})
		if err := r.each(ctx, 0, func(ctx context.Context, i int) error {
			return m.prov.Remove(ctx, s.Name, plan.Devices[i].ID)
		}); err != nil {
			return fmt.Errorf("remove the devices of simulation %s: %w", id, err)
		}
	}
	if err := m.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("delete simulation %s: %w", id, err)
	}
	return nil
}
