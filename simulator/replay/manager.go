// Package replay re-publishes stored messages — a time range of the IOT stream or a saved
// scenario — at their original pacing, N times faster, or as fast as possible, into a sandbox
// namespace or onto the live topics.
//
// Pacing. Messages are released in stream order (the order the hub received them). Message i is
// released at start + (max(0, eventTime_i − eventTime_first))/speed, where first is the first
// selected message; a message whose event time is earlier than one already released (a late or
// out-of-order send) is released at once after it and counted in Progress.OutOfOrder. Pausing
// freezes this clock; resuming continues it where it stopped. The pacing error of each in-order
// message (release time − target time) is kept as a histogram (Job.Pacing, and the metric
// tributary_replay_pacing_error_seconds).
//
// Jobs. A job's state lives in the KV bucket "replays" (key = job ID). The instance running it
// checkpoints progress there (the last source sequence whose publish is acknowledged) every
// Config.Checkpoint, with a heartbeat. Pause, resume and cancel are written to the bucket by
// whichever instance serves the request; the running instance watches the bucket and obeys. When
// a hub stops, its running and paused jobs are released; when it (or another instance) starts,
// it takes them up again from their last checkpoint (Job.Resumes counts this) — or, when
// Config.OnRestart is "interrupt" or the source is gone (messages expired, scenario deleted or
// replaced), marks them interrupted with the reason. A job whose instance died without releasing
// it is taken over once its heartbeat is older than Config.Lease. Replayed messages carry the
// message ID "{replay ID}-{source sequence}", so messages re-published after a resume within the
// stream's dedup window (2 minutes) are stored once.
package replay

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/streams"
)

// Bucket is the KV bucket holding replay jobs.
const Bucket = "replays"

// Config of the replay manager.
type Config struct {
	// Replicas of the KV bucket (default 1).
	Replicas int `yaml:"replicas" json:"replicas"`
	// Checkpoint is how often a running job records its progress (default 250ms).
	Checkpoint time.Duration `yaml:"checkpoint" json:"checkpoint"`
	// Lease is how long a job's heartbeat may be silent before another instance takes the job
	// over (default 5s).
	Lease time.Duration `yaml:"lease" json:"lease"`
	// MaxPending bounds the publishes awaiting their store ack, across jobs (default 65536).
	MaxPending int `yaml:"max_pending" json:"max_pending"`
	// MaxActive bounds the jobs running or paused at once (default 16).
	MaxActive int `yaml:"max_active" json:"max_active"`
	// Spin is the last part of each wait before a paced release that is spent yielding in a
	// loop instead of sleeping on a timer, which the Go runtime fires up to about 1ms late
	// (default 1ms; negative: never spin). It costs up to that much CPU time per message.
	Spin time.Duration `yaml:"spin" json:"spin"`
	// OnRestart is what happens to jobs that were running when their hub stopped: "resume"
	// (default) continues them from their last checkpoint, "interrupt" marks them interrupted.
	OnRestart string `yaml:"on_restart" json:"on_restart"`
}

func (c *Config) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Checkpoint == 0 {
		c.Checkpoint = 250 * time.Millisecond
	}
	if c.Lease == 0 {
		c.Lease = 5 * time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = 65536
	}
	if c.MaxActive == 0 {
		c.MaxActive = 16
	}
	if c.OnRestart == "" {
		c.OnRestart = "resume"
	}
	if c.Spin == 0 {
		c.Spin = time.Millisecond
	}
	c.Spin = max(c.Spin, 0)
}

// Validate names the first wrong field.
func (c Config) Validate() error {
	switch {
	case c.Checkpoint < 0:
		return errors.New("replay: checkpoint must not be negative")
	case c.Lease < 0 || c.Lease > 0 && c.Lease < 2*c.Checkpoint:
		return errors.New("replay: lease must be at least twice checkpoint")
	case c.MaxPending < 0:
		return errors.New("replay: max_pending must not be negative")
	case c.OnRestart != "" && c.OnRestart != "resume" && c.OnRestart != "interrupt":
		return fmt.Errorf("replay: on_restart: got %q, want resume or interrupt", c.OnRestart)
	}
	return nil
}

// Manager starts, runs and controls replay jobs. Run must be running for jobs to start.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	js       jetstream.JetStream // publishes, with its own window of pending acks
	kv       jetstream.KeyValue
	resolver *simulator.Resolver
	owner    string
	members  simulator.Members // nil: owners are judged by their heartbeats
	now      func() time.Time

	launch  chan *runner
	stopped chan struct{}

	mu      sync.Mutex
	runners map[string]*runner
}

// New opens the jobs bucket. Reads go through resolver; publishes use their own JetStream
// context on nc.
func New(ctx context.Context, nc *nats.Conn, cfg Config, resolver *simulator.Resolver, log *slog.Logger) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m := &Manager{
		cfg: cfg, log: log.With("component", "replay"), resolver: resolver, owner: nuid.Next(), now: time.Now,
		launch: make(chan *runner), stopped: make(chan struct{}), runners: map[string]*runner{},
	}
	var err error
	m.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) { m.publishFailed(msg, err) }))
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	m.kv, err = streams.OpenBucket(ctx, m.js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Tributary replay jobs", History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("replay bucket: %w", err)
	}
	return m, nil
}

// UseMembers makes this manager own jobs as self, a member of members, and take over a job only
// when its owner is no longer a live member — not by comparing its heartbeat with the local
// clock. Call it before Start and Run.
func (m *Manager) UseMembers(self string, members simulator.Members) {
	m.owner, m.members = self, members
}

func (m *Manager) publishFailed(msg *nats.Msg, err error) {
	metricFailed.Inc()
	m.mu.Lock()
	r := m.runners[msg.Header.Get(streams.HeaderReplay)]
	m.mu.Unlock()
	if r != nil {
		if r.failed.Add(1) == 1 {
			m.log.Warn("replayed message not stored", "replay", r.id, "subject", msg.Subject, "err", err)
		}
	}
}

// SandboxPrefix is the topic prefix of sandbox replay id's output.
func SandboxPrefix(id string) string { return simulator.SandboxTopicPrefix + "/" + id + "/" }

// SandboxSubject is the NATS subject filter of sandbox replay id's output.
func SandboxSubject(id string) string {
	return streams.SubjectPrefix + "." + simulator.SandboxTopicPrefix + "." + id + ".>"
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "r" + idEncoding.EncodeToString(b[:])
}

// Start resolves req's selection and starts the job. Bad requests and empty selections are
// refused before anything is stored.
func (m *Manager) Start(ctx context.Context, req Request) (Job, error) {
	if err := req.normalize(); err != nil {
		return Job{}, err
	}
	if n := m.activeCount(ctx); n >= m.cfg.MaxActive {
		return Job{}, fmt.Errorf("%w: %d replays are running or paused, the limit is %d: cancel one first", simulator.ErrState, n, m.cfg.MaxActive)
	}
	src, err := m.resolver.Resolve(ctx, req.Selection)
	if err != nil {
		return Job{}, err
	}
	now := m.now().UTC()
	j := Job{ID: newID(), Request: req, Status: Running, Source: src, CreatedAt: now, UpdatedAt: now, Owner: m.owner, Heartbeat: now}
	if req.Target == TargetSandbox {
		j.SandboxPrefix = SandboxPrefix(j.ID)
	}
	j.Progress.Position = src.StartSeq - 1
	data, err := json.Marshal(j)
	if err != nil {
		return Job{}, err
	}
	if _, err := m.kv.Create(ctx, j.ID, data); err != nil {
		return Job{}, fmt.Errorf("store replay %s: %w", j.ID, err)
	}
	r := m.newRunner(j)
	select {
	case m.launch <- r:
		return j, nil
	case <-m.stopped:
		err = errors.New("replays are stopped")
	case <-ctx.Done():
		err = ctx.Err()
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.kv.Purge(dctx, j.ID)
	return Job{}, fmt.Errorf("start replay: %w", err)
}

func (m *Manager) activeCount(ctx context.Context) int {
	jobs, err := m.List(ctx)
	if err != nil {
		return 0
	}
	n := 0
	for _, j := range jobs {
		if j.Status.Active() {
			n++
		}
	}
	return n
}

// Run starts jobs, takes up released or orphaned ones (at once, then every Lease/2), passes
// control changes to the local runners, and stops them when ctx ends, releasing their jobs.
func (m *Manager) Run(ctx context.Context) error {
	defer close(m.stopped)
	var wg sync.WaitGroup
	defer wg.Wait()
	w, err := m.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("replay: watch jobs: %w", err)
	}
	defer w.Stop()
	start := func(r *runner) {
		m.mu.Lock()
		m.runners[r.id] = r
		m.mu.Unlock()
		wg.Go(func() {
			r.run(ctx)
			m.mu.Lock()
			delete(m.runners, r.id)
			m.mu.Unlock()
		})
	}
	for _, r := range m.claim(ctx) {
		start(r)
	}
	tick := time.NewTicker(m.cfg.Lease / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-m.launch:
			start(r)
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e != nil {
				m.notify(e)
			}
		case <-tick.C:
			for _, r := range m.claim(ctx) {
				start(r)
			}
		}
	}
}

// notify passes a job's new status to its local runner.
func (m *Manager) notify(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	r := m.runners[e.Key()]
	m.mu.Unlock()
	if r == nil {
		return
	}
	st := statusDeleted
	if e.Operation() == jetstream.KeyValuePut {
		var j Job
		if json.Unmarshal(e.Value(), &j) != nil {
			return
		}
		if j.Owner != m.owner && j.Owner != "" {
			st = statusLost
		} else {
			st = j.Status
		}
	}
	r.push(st, e.Revision())
}

// claim takes up active jobs no live instance holds and returns their runners (nil on error).
func (m *Manager) claim(ctx context.Context) []*runner {
	jobs, err := m.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("cannot list replays", "err", err)
		}
		return nil
	}
	var out []*runner
	for _, j := range jobs {
		if !m.claimable(j) {
			continue
		}
		reason := m.unresumable(ctx, j)
		claimed, err := m.update(ctx, j.ID, func(j *Job) error {
			if !m.claimable(*j) {
				return errSkip
			}
			now := m.now().UTC()
			if reason != "" {
				j.Status, j.Error, j.FinishedAt, j.Owner = Interrupted, reason, now, ""
				return nil
			}
			j.Owner, j.Heartbeat = m.owner, now
			j.Resumes++
			return nil
		})
		if err != nil {
			if !errors.Is(err, errSkip) && ctx.Err() == nil {
				m.log.Warn("cannot take up replay", "replay", j.ID, "err", err)
			}
			continue
		}
		if reason != "" {
			m.log.Warn("replay interrupted", "replay", j.ID, "reason", reason)
			continue
		}
		m.log.Info("replay resumed", "replay", j.ID, "position", j.Progress.Position, "status", j.Status)
		out = append(out, m.newRunner(claimed))
	}
	return out
}

func (m *Manager) claimable(j Job) bool {
	if !j.Status.Active() {
		return false
	}
	m.mu.Lock()
	_, local := m.runners[j.ID]
	m.mu.Unlock()
	if local {
		return false
	}
	return j.Owner == m.owner || !simulator.OwnerAlive(j.Owner, j.Heartbeat, m.members, m.cfg.Lease, m.now())
}

// unresumable says why job j cannot go on ("" if it can).
func (m *Manager) unresumable(ctx context.Context, j Job) string {
	if m.cfg.OnRestart == "interrupt" {
		return "the hub stopped while the replay was " + string(j.Status) + " (on_restart is interrupt)"
	}
	src := j.Source
	next := j.Progress.Position + 1
	if src.Scenario != "" {
		cur, err := m.resolver.ScenarioSource(ctx, src.Scenario)
		if err != nil || !slices.Equal(cur.Subjects, src.Subjects) {
			return "scenario " + src.Scenario + " was deleted or replaced while the replay was stopped"
		}
		return ""
	}
	if next > src.EndSeq {
		return ""
	}
	stream, err := m.js.Stream(ctx, src.Stream)
	if err != nil {
		return "stream " + src.Stream + ": " + err.Error()
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return "stream " + src.Stream + ": " + err.Error()
	}
	if info.State.FirstSeq > next {
		return fmt.Sprintf("messages from sequence %d on have expired from stream %s (it starts at %d now)", next, src.Stream, info.State.FirstSeq)
	}
	return ""
}

var (
	errSkip = errors.New("skip")
	errLost = errors.New("another instance took the replay over")
)

// update applies fn to the stored job with optimistic concurrency, retrying on conflicts.
func (m *Manager) update(ctx context.Context, id string, fn func(*Job) error) (Job, error) {
	j, _, err := m.updateRev(ctx, id, fn)
	return j, err
}

// updateRev is update that also returns the new revision.
func (m *Manager) updateRev(ctx context.Context, id string, fn func(*Job) error) (Job, uint64, error) {
	for attempt := 0; ; attempt++ {
		e, err := m.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Job{}, 0, fmt.Errorf("replay %s: %w", id, simulator.ErrNotFound)
		}
		if err != nil {
			return Job{}, 0, fmt.Errorf("replay %s: %w", id, err)
		}
		var j Job
		if err := json.Unmarshal(e.Value(), &j); err != nil {
			return Job{}, 0, fmt.Errorf("replay %s: %w", id, err)
		}
		if err := fn(&j); err != nil {
			return j, 0, err
		}
		j.UpdatedAt = m.now().UTC()
		j.Progress.Fraction = j.fraction()
		data, err := json.Marshal(j)
		if err != nil {
			return Job{}, 0, err
		}
		rev, err := m.kv.Update(ctx, id, data, e.Revision())
		if err == nil {
			return j, rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) || attempt >= 50 {
			return Job{}, 0, fmt.Errorf("replay %s: %w", id, err)
		}
	}
}

// Get returns one job, with the live progress when this instance runs it.
func (m *Manager) Get(ctx context.Context, id string) (Job, error) {
	if !simulator.ValidName(id) {
		return Job{}, fmt.Errorf("replay %q: %w", id, simulator.ErrNotFound)
	}
	e, err := m.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Job{}, fmt.Errorf("replay %s: %w", id, simulator.ErrNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("replay %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return Job{}, fmt.Errorf("replay %s: %w", id, err)
	}
	m.overlay(&j)
	return j, nil
}

func (m *Manager) overlay(j *Job) {
	m.mu.Lock()
	r := m.runners[j.ID]
	m.mu.Unlock()
	if r != nil {
		j.Progress, j.Pacing = r.liveProgress()
		j.Progress.Fraction = j.fraction()
	}
}

// List returns every job, newest first.
func (m *Manager) List(ctx context.Context) ([]Job, error) {
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list replays: %w", err)
	}
	jobs := []Job{}
	for k := range keys.Keys() {
		j, err := m.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		jobs = append(jobs, j)
	}
	slices.SortFunc(jobs, func(a, b Job) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return jobs, nil
}

// Pause stops a running job's clock.
func (m *Manager) Pause(ctx context.Context, id string) (Job, error) {
	return m.control(ctx, id, Paused, func(s Status) bool { return s == Running })
}

// Resume continues a paused job.
func (m *Manager) Resume(ctx context.Context, id string) (Job, error) {
	return m.control(ctx, id, Running, func(s Status) bool { return s == Paused })
}

// Cancel ends a running or paused job.
func (m *Manager) Cancel(ctx context.Context, id string) (Job, error) {
	return m.control(ctx, id, Cancelled, Status.Active)
}

func (m *Manager) control(ctx context.Context, id string, to Status, allowed func(Status) bool) (Job, error) {
	if _, err := m.Get(ctx, id); err != nil {
		return Job{}, err
	}
	j, rev, err := m.updateRev(ctx, id, func(j *Job) error {
		if !allowed(j.Status) {
			return fmt.Errorf("%w: replay %s is %s", simulator.ErrState, id, j.Status)
		}
		j.Status = to
		if to == Cancelled {
			j.FinishedAt = m.now().UTC()
		}
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	// A local runner obeys before the call returns: no message is published after a pause or
	// a cancel has been answered. (A runner on another instance follows through the KV watch.)
	m.mu.Lock()
	r := m.runners[id]
	m.mu.Unlock()
	if r != nil {
		r.push(to, rev)
		r.waitState(ctx, to, 2*time.Second)
		if cur, err := m.Get(ctx, id); err == nil {
			j = cur
		}
	}
	m.overlay(&j)
	return j, nil
}

// Delete removes a job, cancelling it first if it is active, and (unless keepOutput) purges its
// sandbox output from the stream.
func (m *Manager) Delete(ctx context.Context, id string, keepOutput bool) error {
	j, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if j.Status.Active() {
		if _, err := m.Cancel(ctx, id); err != nil && !errors.Is(err, simulator.ErrState) {
			return err
		}
	}
	// Wait for the runner to let go, so that nothing is published after the purge.
	held := func(ctx context.Context) (string, time.Time, bool) {
		cur, err := m.Get(ctx, id)
		return cur.Owner, cur.Heartbeat, err == nil
	}
	if err := simulator.WaitReleased(ctx, held, m.cfg.Lease, m.now().Add(m.cfg.Lease+2*time.Second), m.now); err != nil {
		return err
	}
	if err := m.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("delete replay %s: %w", id, err)
	}
	if j.Request.Target == TargetSandbox && !keepOutput {
		stream, err := m.js.Stream(ctx, streams.StreamMessages)
		if err == nil {
			err = stream.Purge(ctx, jetstream.WithPurgeSubject(SandboxSubject(id)))
		}
		if err != nil {
			return fmt.Errorf("delete replay %s output: %w", id, err)
		}
	}
	return nil
}
