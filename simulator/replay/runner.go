package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/streams"
)

// Internal outcomes besides the job statuses.
const (
	statusDeleted  Status = "deleted"  // the job's record was removed
	statusLost     Status = "lost"     // another instance owns the job now
	statusShutdown Status = "shutdown" // the hub is stopping: release the job
)

// metaReplayOf is the envelope Meta key (header Tb-M-replay_of) holding the original message ID.
const metaReplayOf = "replay_of"

// runner runs one job on this instance.
type runner struct {
	m      *Manager
	id     string
	job    Job // as claimed or started
	ctrl   chan Status
	failed atomic.Uint64
	sent   prometheus.Counter

	mu        sync.Mutex
	live      Progress // released so far
	hist      hist
	last      jetstream.PubAckFuture // future of the last release
	committed Progress               // last progress written with its publishes acknowledged

	// state is Running or Paused as the runner has applied it; changed is closed and replaced
	// on every change. done is closed when the runner has finished.
	pushMu  sync.Mutex
	pushed  uint64 // revision of the last status pushed
	stateMu sync.Mutex
	state   Status
	changed chan struct{}
	done    chan struct{}
}

func (m *Manager) newRunner(j Job) *runner {
	return &runner{m: m, id: j.ID, job: j, ctrl: make(chan Status, 1), live: j.Progress, committed: j.Progress, hist: histFrom(j.Pacing),
		state: Running, changed: make(chan struct{}), done: make(chan struct{}),
		sent: metricMessages.WithLabelValues(string(j.Request.Target))}
}

func (r *runner) liveProgress() (Progress, Pacing) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.live
	p.Failed = r.failed.Load()
	return p, r.hist.summary()
}

func (r *runner) setState(s Status) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if r.state != s {
		r.state = s
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// waitState waits until the runner has applied status want (or has finished, for any other
// outcome), for at most d.
func (r *runner) waitState(ctx context.Context, want Status, d time.Duration) {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		r.stateMu.Lock()
		s, changed := r.state, r.changed
		r.stateMu.Unlock()
		if s == want && want.Active() {
			return
		}
		select {
		case <-changed:
		case <-r.done:
			return
		case <-timeout.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// push hands the status of job revision rev to the runner; statuses of older revisions than one
// pushed before (a KV watch event arriving after the API call that caused it) are ignored.
func (r *runner) push(st Status, rev uint64) {
	r.pushMu.Lock()
	defer r.pushMu.Unlock()
	if rev <= r.pushed {
		return
	}
	r.pushed = rev
	select {
	case <-r.ctrl:
	default:
	}
	select {
	case r.ctrl <- st:
	default:
	}
}

func (r *runner) run(ctx context.Context) {
	defer close(r.done)
	metricJobs.WithLabelValues("running").Inc()
	defer metricJobs.WithLabelValues("running").Dec()
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var lost atomic.Bool
	wg.Go(func() {
		if r.checkpoints(rctx) {
			lost.Store(true)
			cancel()
		}
	})
	outcome, reason := r.replay(rctx)
	cancel()
	wg.Wait()
	if lost.Load() || outcome == statusLost || outcome == statusDeleted {
		return
	}
	if ctx.Err() != nil && outcome != Done {
		outcome = statusShutdown
	}
	r.finish(outcome, reason)
}

// replay reads, paces and publishes until the source ends, the job is cancelled, deleted or
// taken over, or ctx ends.
func (r *runner) replay(ctx context.Context) (Status, string) {
	rd, err := simulator.Open(ctx, r.m.js, r.job.Source, r.job.Progress.Position+1)
	if err != nil {
		return Failed, err.Error()
	}
	items := make(chan *simulator.Msg, 4096)
	readErr := make(chan error, 1)
	var skipped atomic.Uint64
	var wg sync.WaitGroup
	rctx, stopReading := context.WithCancel(ctx)
	defer func() {
		stopReading()
		wg.Wait()
	}()
	wg.Go(func() {
		defer rd.Close()
		defer close(items)
		base := r.job.Progress.Skipped
		for {
			m, err := rd.Next(rctx)
			skipped.Store(base + rd.Skipped)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case items <- m:
			case <-rctx.Done():
				readErr <- rctx.Err()
				return
			}
		}
	})

	speed := float64(r.job.Request.Speed)
	paced := !r.job.Request.Speed.IsMax()
	first := r.job.Source.FirstEventTime
	vmax := time.Duration(r.job.Progress.Offset)
	c := clock{speed: speed, v0: vmax}
	anchored := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	// control reacts to a status change; it returns a final outcome, or "" to go on.
	control := func(st Status) Status {
		for {
			switch st {
			case Running:
				if c.paused {
					c.resume(time.Now())
				}
				r.setState(Running)
				return ""
			case Paused:
				if !c.paused {
					c.pause(time.Now())
					r.setState(Paused)
					metricJobs.WithLabelValues("paused").Inc()
					defer metricJobs.WithLabelValues("paused").Dec()
				}
				select {
				case st = <-r.ctrl:
					continue
				case <-ctx.Done():
					return statusShutdown
				}
			case Cancelled, statusDeleted, statusLost:
				return st
			default:
				return ""
			}
		}
	}

	if r.job.Status == Paused { // taken up while paused
		if out := control(Paused); out != "" {
			return out, ""
		}
	}
	for {
		var m *simulator.Msg
		var ok bool
		select {
		case m, ok = <-items:
		case st := <-r.ctrl:
			if out := control(st); out != "" {
				return out, ""
			}
			continue
		case <-ctx.Done():
			return statusShutdown, ""
		}
		if !ok {
			err := <-readErr
			if errors.Is(err, io.EOF) {
				return r.drain(ctx)
			}
			if ctx.Err() != nil {
				return statusShutdown, ""
			}
			return Failed, err.Error()
		}
		off := max(0, m.EventTime.Sub(first))
		inOrder := off >= vmax
		var target time.Time
		if paced && inOrder {
			if !anchored {
				c.resume(time.Now())
				anchored = true
			}
			for {
				target = c.at(off)
				d := time.Until(target)
				if d <= 0 {
					break
				}
				if d <= r.m.cfg.Spin {
					spinUntil(target)
					continue
				}
				timer.Reset(d - r.m.cfg.Spin)
				select {
				case <-timer.C:
					continue
				case st := <-r.ctrl:
					timer.Stop()
					if out := control(st); out != "" {
						return out, ""
					}
				case <-ctx.Done():
					timer.Stop()
					return statusShutdown, ""
				}
			}
		} else {
			select {
			case st := <-r.ctrl:
				if out := control(st); out != "" {
					return out, ""
				}
			default:
			}
		}
		released := time.Now()
		fut, err := r.publish(m)
		if err != nil {
			if ctx.Err() != nil {
				return statusShutdown, ""
			}
			return Failed, err.Error()
		}
		r.mu.Lock()
		if inOrder {
			vmax = off
			if paced {
				late := released.Sub(target)
				r.hist.add(late)
				metricPacing.Observe(late.Seconds())
			}
		} else {
			r.live.OutOfOrder++
		}
		r.live.Position = m.Seq
		r.live.Sent++
		r.live.Skipped = skipped.Load()
		r.live.Offset = simulator.Duration(vmax)
		r.live.EventTime = m.EventTime.UTC()
		r.last = fut
		r.mu.Unlock()
		r.sent.Inc()
	}
}

// drain waits for the last publish to be acknowledged at the end of the source.
func (r *runner) drain(ctx context.Context) (Status, string) {
	r.mu.Lock()
	fut := r.last
	r.mu.Unlock()
	if fut != nil {
		select {
		case <-fut.Ok():
		case <-fut.Err():
		case <-ctx.Done():
			return statusShutdown, ""
		}
	}
	return Done, ""
}

// publish sends one message to the job's target. The message's header map is reused.
func (r *runner) publish(m *simulator.Msg) (jetstream.PubAckFuture, error) {
	h := m.Header
	origID := m.ID()
	subj := m.Subject
	if topic := h.Get(streams.HeaderTopic); topic != "" { // a scenario copy
		var err error
		if subj, err = streams.TopicToSubject(topic); err != nil {
			return nil, err
		}
		h.Del(streams.HeaderTopic)
	}
	h.Del(simulator.HeaderOriginalID)
	if r.job.Request.Target == TargetSandbox {
		subj = streams.SubjectPrefix + "." + simulator.SandboxTopicPrefix + "." + r.id + subj[len(streams.SubjectPrefix):]
	}
	h[streams.HeaderMsgID] = []string{r.id + "-" + strconv.FormatUint(m.Seq, 10)}
	h[streams.HeaderReplay] = []string{r.id}
	if origID != "" {
		h["Tb-M-"+metaReplayOf] = []string{origID}
	}
	fut, err := r.m.js.PublishMsgAsync(&nats.Msg{Subject: subj, Header: h, Data: m.Data}, jetstream.WithStallWait(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", subj, err)
	}
	return fut, nil
}

// checkpoints records progress every Config.Checkpoint until ctx ends; it returns true when the
// job is no longer this instance's to run.
func (r *runner) checkpoints(ctx context.Context) bool {
	t := time.NewTicker(r.m.cfg.Checkpoint)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		r.mu.Lock()
		prog, fut := r.live, r.last
		r.mu.Unlock()
		if fut != nil {
			select {
			case <-fut.Ok():
			case <-fut.Err():
			case <-ctx.Done():
				return false
			}
		}
		err := r.commit(ctx, prog, nil)
		if errors.Is(err, errLost) || errors.Is(err, simulator.ErrNotFound) {
			return true
		}
		if err != nil && ctx.Err() == nil {
			r.m.log.Warn("replay checkpoint failed", "replay", r.id, "err", err)
		}
	}
}

// commit writes progress (acknowledged up to prog.Position) and a heartbeat; then, if set,
// changes the record further.
func (r *runner) commit(ctx context.Context, prog Progress, then func(*Job)) error {
	prog.Failed = r.failed.Load()
	r.mu.Lock()
	pacing := r.hist.summary()
	r.mu.Unlock()
	_, err := r.m.update(ctx, r.id, func(j *Job) error {
		if j.Owner != r.m.owner {
			return errLost
		}
		j.Progress, j.Pacing = prog, pacing
		j.Heartbeat = r.m.now().UTC()
		if then != nil {
			then(j)
		}
		return nil
	})
	if err == nil {
		r.mu.Lock()
		r.committed = prog
		r.mu.Unlock()
	}
	return err
}

// finish records the job's outcome and releases it.
func (r *runner) finish(outcome Status, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.mu.Lock()
	prog, fut := r.live, r.last
	r.mu.Unlock()
	if fut != nil && outcome != Done {
		// Keep only what is stored: on shutdown, wait a little for the last acks.
		select {
		case <-fut.Ok():
		case <-fut.Err():
		case <-time.After(2 * time.Second):
			r.mu.Lock()
			prog = r.committed
			r.mu.Unlock()
		}
	}
	err := r.commit(ctx, prog, func(j *Job) {
		j.Owner = ""
		now := r.m.now().UTC()
		switch outcome {
		case Done:
			if j.Status.Active() {
				j.Status = Done
				if n := r.failed.Load(); n > 0 {
					j.Error = fmt.Sprintf("%d messages were not stored", n)
				}
			}
		case Failed:
			j.Status, j.Error = Failed, reason
		}
		if !j.Status.Active() && j.FinishedAt.IsZero() {
			j.FinishedAt = now
		}
		j.Progress.Fraction = j.fraction()
	})
	if err != nil && !errors.Is(err, errLost) && !errors.Is(err, simulator.ErrNotFound) {
		r.m.log.Warn("cannot record replay outcome", "replay", r.id, "outcome", outcome, "err", err)
		return
	}
	switch outcome {
	case Failed:
		r.m.log.Warn("replay failed", "replay", r.id, "err", reason)
	case statusShutdown:
		r.m.log.Info("replay released for resumption", "replay", r.id, "position", prog.Position)
	default:
		r.m.log.Info("replay ended", "replay", r.id, "status", outcome, "sent", prog.Sent)
	}
}

// spinUntil yields until t: the runtime's timers wake sleepers up to about a millisecond late,
// so the last stretch of a wait is spent here.
func spinUntil(t time.Time) {
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

// clock maps event-time offsets to wall time: offset v is due at t0 + (v − v0)/speed. Pausing
// freezes it.
type clock struct {
	speed  float64
	t0     time.Time
	v0     time.Duration
	paused bool
}

func (c *clock) at(v time.Duration) time.Time {
	return c.t0.Add(time.Duration(float64(v-c.v0) / c.speed))
}

func (c *clock) pause(now time.Time) {
	if !c.t0.IsZero() {
		c.v0 += time.Duration(float64(now.Sub(c.t0)) * c.speed)
	}
	c.paused = true
}

func (c *clock) resume(now time.Time) {
	c.t0, c.paused = now, false
}
