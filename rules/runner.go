package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/lease"
	"github.com/tributary-iot/tributary/streams/window"
)

// Stats is what GET /api/v1/rules/{name}/stats answers.
type Stats struct {
	Rule    string `json:"rule"`
	Running bool   `json:"running"`
	// CatchingUp is true while the rule reads its backlog on its own, before joining the live
	// feed of its source.
	CatchingUp bool `json:"catching_up"`
	// Event counts since the rule's state started (they survive restarts).
	EventsIn   uint64 `json:"events_in"`
	Accepted   uint64 `json:"accepted"`
	Filtered   uint64 `json:"filtered"`
	LateEvents uint64 `json:"late_events"`
	Rejected   uint64 `json:"rejected"`
	// Results published on rules/<name>/results; HavingFailed counts closed windows that did
	// not pass HAVING; Notifications counts what went to rules/<name>/alerts and the outputs.
	Results       uint64 `json:"results"`
	HavingFailed  uint64 `json:"having_failed"`
	Notifications uint64 `json:"notifications"`
	// FiredGroups is the number of groups whose alert is on (notify "change").
	FiredGroups int       `json:"fired_groups"`
	OpenWindows int       `json:"open_windows"`
	Groups      int       `json:"groups"`
	Watermark   time.Time `json:"watermark,omitzero"`
	// LastSeq is the stream sequence of the last message processed.
	LastSeq uint64 `json:"last_seq"`
	// ConsumerLag is the number of messages of the rule's source stored but not yet processed.
	ConsumerLag       uint64        `json:"consumer_lag"`
	LastResult        *Result       `json:"last_result,omitempty"`
	LastCheckpoint    time.Time     `json:"last_checkpoint,omitzero"`
	DuplicatesSkipped uint64        `json:"duplicates_skipped"`
	Webhooks          *WebhookStats `json:"webhooks,omitempty"`
	// Error is the last error that stopped the rule (it restarts from its checkpoint).
	Error string `json:"error,omitempty"`
	// Owner is the hub instance running the rule (see /readyz "leases"); empty while none
	// does. Instances other than the owner answer with the counters of the last checkpoint.
	Owner string `json:"owner,omitempty"`
}

// statsEvery is the most often a busy runner refreshes its stats and metrics.
const statsEvery = 50 * time.Millisecond

// errRuleDeleted is the cancellation cause of a runner whose rule was deleted: it stops
// without a final checkpoint.
var errRuleDeleted = errors.New("rule deleted")

// runner runs one rule: it owns the engine, reads the rule's source, publishes results,
// notifications and late events, and checkpoints. Everything but stats runs on the goroutine
// calling run.
type runner struct {
	m    *Manager
	rule Rule
	c    *compiled
	log  *slog.Logger
	eng  *window.Engine
	pub  *publisher
	met  *ruleMetrics
	own  string // "rules/<name>/": a rule never reads its own outputs
	// readsRules is set for sources under rules/, where the rule's own outputs could match.
	readsRules bool
	// tenant is the rule's tenant: it reads only that tenant's messages (tenant.go).
	tenant string

	next                      uint64 // first input sequence not yet processed
	fired                     map[string]bool
	results, notified, failed uint64
	lastResult                *Result
	canaryHist                []canary.Outcome
	notifies                  bool
	outSubjects               []string

	saved     saved
	ckptNext  uint64
	ckptAt    time.Time
	sinceCkpt int
	dirty     bool
	prevEng   window.Stats // for metric increments
	statsAt   time.Time

	hooks *dispatcher
	feed  *feed
	mb    *member

	catchingUp     atomic.Bool
	privatePending atomic.Uint64

	mu    sync.Mutex
	stats Stats
}

func newRunner(m *Manager, rule Rule, c *compiled) (*runner, error) {
	eng, err := window.New(c.plan, c.opts)
	if err != nil {
		return nil, err
	}
	r := &runner{
		m: m, rule: rule, c: c, eng: eng,
		log:    m.log.With("rule", rule.Name),
		met:    newRuleMetrics(rule.Name),
		own:    "rules/" + rule.Name + "/",
		fired:  map[string]bool{},
		tenant: rule.TenantOf(),
	}
	r.readsRules = strings.HasPrefix(c.filter, "rules/") || strings.HasPrefix(c.filter, "+") || strings.HasPrefix(c.filter, "#")
	r.pub = &publisher{js: m.js, onSkip: r.met.skipped.Inc}
	r.notifies = c.alert || len(rule.Outputs) > 0
	r.outSubjects = r.outputSubjects()
	r.stats = Stats{Rule: rule.Name}
	return r, nil
}

func (r *runner) outputSubjects() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(streams.SubjectPrefix + ".rules." + r.rule.Name + ".>")
	for _, o := range r.rule.Outputs {
		switch o.Kind {
		case OutputMQTT:
			if s, err := streams.TopicToSubject(o.Topic); err == nil {
				add(s)
			}
		case OutputCommand:
			add(streams.SubjectPrefix + ".devices.*.commands." + streams.EscapeToken(o.Command))
		}
	}
	return out
}

// run processes the rule's input until ctx ends. It returns nil when ctx ended, else the
// error that stopped it (the manager restarts it from its last checkpoint).
func (r *runner) run(ctx context.Context) (err error) {
	if err := r.restore(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	hctx, stopHooks := context.WithCancel(ctx)
	defer stopHooks()
	if hooks := r.rule.webhooks(); len(hooks) > 0 {
		d, err := r.m.newDispatcher(ctx, r.rule.Name, hooks)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.hooks = d
		r.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.run(hctx)
		}()
	} else {
		r.m.deleteWebhookConsumer(ctx, r.rule.Name)
	}

	r.catchingUp.Store(true)
	r.setRunning(true)
	defer r.setRunning(false)
	if err := r.catchUp(ctx); err != nil {
		return r.stop(ctx, err)
	}
	f, mb, pos, err := r.m.feeds.join(ctx, r.c.filter, r.next)
	if err != nil {
		return r.stop(ctx, err)
	}
	r.mu.Lock()
	r.feed, r.mb = f, mb
	r.mu.Unlock()
	defer r.m.feeds.leave(f, mb)
	if pos >= r.next {
		if err := r.readRange(ctx, r.next, pos); err != nil {
			return r.stop(ctx, err)
		}
	}
	r.catchingUp.Store(false)
	r.publishStats()

	tick := time.NewTicker(r.m.cfg.AdvanceInterval)
	defer tick.Stop()
	for {
		select {
		case batch := <-mb.ch:
			for _, it := range batch {
				if err := r.process(ctx, it); err != nil {
					return r.stop(ctx, err)
				}
			}
			mb.queued.Add(-int64(len(batch)))
			// Stats are refreshed when the rule has caught up, and at most every statsEvery
			// while it is busy.
			if now := time.Now(); len(mb.ch) == 0 || now.Sub(r.statsAt) >= statsEvery {
				r.statsAt = now
				r.publishStats()
			}
			if r.sinceCkpt >= r.m.cfg.CheckpointEvents || r.dirty && time.Since(r.ckptAt) >= r.m.cfg.CheckpointInterval {
				if err := r.checkpoint(ctx); err != nil {
					return r.stop(ctx, err)
				}
			}
		case now := <-tick.C:
			if r.c.opts.IdleTimeout > 0 && r.caughtUp() {
				at := now.Add(-r.m.cfg.Slack)
				res := r.eng.Advance(at)
				if err := r.emitAll(ctx, res, at); err != nil {
					return r.stop(ctx, err)
				}
				if len(res) > 0 {
					r.dirty = true
				}
			}
			r.publishStats()
			if r.dirty && time.Since(r.ckptAt) >= r.m.cfg.CheckpointInterval {
				if err := r.checkpoint(ctx); err != nil {
					return r.stop(ctx, err)
				}
			}
		case <-ctx.Done():
			return r.stop(ctx, nil)
		}
	}
}

// stop ends a run. After a clean stop (ctx ended between messages) it stores a final
// checkpoint, unless the rule was deleted; after an error it stores none, since outputs of
// the message being processed may be missing.
func (r *runner) stop(ctx context.Context, err error) error {
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopping in the middle of a message: the last checkpoint stands
		}
		r.mu.Lock()
		r.stats.Error = err.Error()
		r.mu.Unlock()
		return err
	}
	if cause := context.Cause(ctx); errors.Is(cause, errRuleDeleted) || errors.Is(cause, lease.ErrLost) {
		// Deleted, or another instance may own the rule by now: its checkpoint is not ours
		// to write.
		return nil
	}
	if r.dirty || r.next != r.ckptNext {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cerr := r.checkpoint(fctx); cerr != nil {
			r.log.Warn("final checkpoint failed; the rule resumes from the previous one", "err", cerr)
		}
	}
	return nil
}

func (r *runner) caughtUp() bool {
	if r.catchingUp.Load() || r.mb == nil { // r.mb is written only by this goroutine
		return false
	}
	return len(r.mb.ch) == 0 && r.mb.queued.Load() == 0 && len(r.feed.in) == 0 && r.feed.pending.Load() == 0
}

// restore loads the checkpoint, if it belongs to this incarnation of the rule, and finds the
// outputs already published after it.
func (r *runner) restore(ctx context.Context) error {
	r.next = max(r.rule.StartSeq, 1)
	r.ckptNext = r.next
	data, sv, err := r.m.state.load(ctx, r.rule.Name)
	r.saved = sv
	if err != nil {
		return err
	}
	if data == nil {
		r.log.Info("rule starting", "start_seq", r.next)
		return nil
	}
	ck, err := decodeCheckpoint(data)
	if err != nil {
		r.log.Warn("unreadable checkpoint; starting over", "err", err)
		return nil
	}
	if ck.Incarnation != r.rule.Incarnation || ck.Fingerprint != r.c.fp {
		r.log.Info("checkpoint is of an earlier version of the rule; starting over", "start_seq", r.next)
		return nil
	}
	if err := r.eng.Restore(ck.Engine); err != nil {
		r.log.Warn("checkpoint does not restore; starting over", "err", err)
		r.eng, _ = window.New(r.c.plan, r.c.opts)
		return nil
	}
	r.next, r.ckptNext, r.ckptAt = ck.LastSeq+1, ck.LastSeq+1, ck.SavedAt
	for _, k := range ck.Fired {
		r.fired[k] = true
	}
	r.results, r.notified, r.failed, r.lastResult = ck.Results, ck.Alerts, ck.Failed, ck.LastResult
	r.canaryHist = ck.Canary
	r.prevEng = r.eng.Stats()
	r.pub.outSeq = ck.OutSeq

	// Outputs of the messages after the checkpoint may be in the stream already (the rule
	// stopped without a final checkpoint). JetStream's duplicate window drops them when
	// they are published again soon enough; to be exact for any downtime, collect their IDs.
	skip := map[string]struct{}{}
	err = r.m.scan.scan(ctx, r.outSubjects, max(ck.LastSeq, ck.OutSeq)+1, 0, true, func(m jetstream.Msg) bool {
		if id := m.Headers().Get(streams.HeaderMsgID); strings.HasSuffix(id, r.c.idTail) {
			skip[id] = struct{}{}
		}
		return len(skip) < 1_000_000
	})
	if err != nil {
		return err
	}
	r.pub.skip = skip
	r.log.Info("rule resuming from checkpoint", "last_seq", ck.LastSeq, "saved_at", ck.SavedAt, "outputs_after_checkpoint", len(skip))
	return nil
}

// catchUp reads the backlog with private consumers until little is left, so that joining the
// shared feed does not hold other rules up.
func (r *runner) catchUp(ctx context.Context) error {
	for range 5 {
		info, err := r.m.stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream info: %w", err)
		}
		tail := info.State.LastSeq
		if r.next > tail {
			return nil
		}
		if first := info.State.FirstSeq; r.next < first {
			r.log.Warn("messages expired from the stream before the rule read them; continuing with the oldest kept",
				"next_seq", r.next, "first_seq", first, "lost_up_to", first-1)
			r.next = first
		}
		before := r.eng.Stats().EventsIn
		if err := r.readRange(ctx, r.next, tail); err != nil {
			return err
		}
		r.next = max(r.next, tail+1)
		if r.eng.Stats().EventsIn-before < 1000 {
			return nil
		}
	}
	return nil
}

// readRange processes the source's messages from..to with a private consumer.
func (r *runner) readRange(ctx context.Context, from, to uint64) error {
	subs, err := filterSubjects(r.c.filter)
	if err != nil {
		return err
	}
	var perr error
	err = r.m.scan.scan(ctx, subs, from, to, false, func(m jetstream.Msg) bool {
		it := decodeMsg(m, r.c.filter, r.m.devs)
		if it == nil {
			return true
		}
		if md, err := m.Metadata(); err == nil {
			r.privatePending.Store(md.NumPending)
		}
		if perr = r.process(ctx, it); perr != nil {
			return false
		}
		if r.sinceCkpt >= r.m.cfg.CheckpointEvents || time.Since(r.ckptAt) >= r.m.cfg.CheckpointInterval {
			if perr = r.checkpoint(ctx); perr != nil {
				return false
			}
			r.publishStats()
		}
		return true
	})
	r.privatePending.Store(0)
	if perr != nil {
		return perr
	}
	if err == nil {
		r.next = max(r.next, to+1)
	}
	return err
}

// process feeds one message's events to the engine and publishes what comes out.
func (r *runner) process(ctx context.Context, it *item) error {
	if it.seq < r.next {
		return nil
	}
	r.next = it.seq + 1
	r.sinceCkpt++
	if it.env == nil || r.readsRules && strings.HasPrefix(it.env.Topic, r.own) || !r.sees(it.env) {
		return nil
	}
	r.dirty = true
	routed := false
	for i := range it.events {
		res, d := r.eng.Process(it.events[i])
		if (d == window.Late || d == window.Rejected) && !routed {
			routed = true
			if err := r.publishLate(ctx, it, d); err != nil {
				return err
			}
		}
		if err := r.emitAll(ctx, res, it.events[i].Received); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) publishLate(ctx context.Context, it *item, d window.Disposition) error {
	late := *it.env
	late.Topic = r.own + "late"
	late.ID = r.rule.Name + "/late/" + strconv.FormatUint(it.seq, 10) + r.c.idTail
	late.Seq = 0
	late.Meta = maps.Clone(it.env.Meta)
	if late.Meta == nil {
		late.Meta = map[string]string{}
	}
	late.Meta["disposition"] = d.String()
	late.Meta["source_topic"] = it.env.Topic
	late.Meta["source_seq"] = strconv.FormatUint(it.seq, 10)
	late.Meta["rule"] = r.rule.Name
	return r.pub.publish(ctx, &late)
}

// emit handles one closed window: publishes it as a result if it passes HAVING and sends
// the notifications the rule's notify mode calls for. recv is the processing time of what
// closed it (the receive time of the event, or the idle clock), which becomes the result's
// receive time, so rules reading this one see the same stamps on every run.
func (r *runner) emit(ctx context.Context, res window.Result, recv time.Time) error {
	pass := true
	if r.c.alert {
		pass = res.Values[havingColumn] == true
		delete(res.Values, havingColumn)
	}
	body := Result{Rule: r.rule.Name, ID: res.ID, Group: res.Group, GroupKey: res.GroupKey,
		WindowStart: res.WindowStart, WindowEnd: res.WindowEnd, Values: res.Values}
	device, _ := res.Group["device"].(string)
	if pass {
		if err := r.send(ctx, r.own+"results", res.ID+r.c.idTail, device, res.Time, recv, &body); err != nil {
			return err
		}
		r.results++
		r.met.results.Inc()
		r.lastResult = &body
	} else {
		r.failed++
	}
	return r.notify(ctx, res.ID, res.GroupKey, device, res.Time, recv, &body, pass)
}

// notify sends the notifications the rule's notify mode calls for, for a closed window of
// group groupKey whose condition (HAVING, or a canary's failing verdict) holds or not.
func (r *runner) notify(ctx context.Context, id, groupKey, device string, at, recv time.Time, body *Result, pass bool) error {
	if !r.notifies {
		return nil
	}
	state := ""
	switch {
	case r.rule.Notify != NotifyChange:
		if !pass {
			return nil
		}
	case pass && !r.fired[groupKey]:
		r.fired[groupKey] = true
		state = "fired"
	case !pass && r.fired[groupKey]:
		delete(r.fired, groupKey)
		state = "cleared"
	default:
		return nil
	}
	note := *body
	note.State = state
	base := id + "/" + cmpOr(state, "alert")
	if err := r.send(ctx, r.own+"alerts", base+r.c.idTail, device, at, recv, &note); err != nil {
		return err
	}
	for _, o := range r.rule.Outputs {
		switch o.Kind {
		case OutputMQTT:
			if err := r.send(ctx, o.Topic, base+"|"+o.Topic+r.c.idTail, device, at, recv, &note); err != nil {
				return err
			}
		case OutputCommand:
			if device == "" {
				continue // the group has no device to command
			}
			if err := r.sendCommand(ctx, o.Command, base+"|cmd:"+o.Command+r.c.idTail, device, at, recv, &note); err != nil {
				return err
			}
		}
	}
	r.notified++
	metricAlerts.WithLabelValues(r.rule.Name, cmpOr(state, "result")).Inc()
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (r *runner) send(ctx context.Context, topic, id, device string, at, recv time.Time, body *Result) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode result %s: %w", body.ID, err)
	}
	env := &streams.Envelope{
		ID: id, DeviceID: device, Topic: topic, EventTime: at, ReceivedAt: recv,
		ContentType: "application/json", Protocol: "rule", Payload: data,
		Meta: map[string]string{"rule": r.rule.Name},
	}
	if env.ReceivedAt.IsZero() {
		env.ReceivedAt = at
	}
	r.stampTenant(env)
	return r.pub.publish(ctx, env)
}

// sendCommand sends a notification to a device as a command, in the devices' command format
// ({"id", "name", "payload", "expires_at"}) with a deterministic ID, so a command re-emitted
// after a restart is not sent twice. Such commands are not tracked by the device's command list
// (GET /api/v1/devices/{id}/commands) and not sent again to a device that was offline.
func (r *runner) sendCommand(ctx context.Context, name, id, device string, at, recv time.Time, note *Result) error {
	payload, err := json.Marshal(note)
	if err != nil {
		return fmt.Errorf("encode result %s: %w", note.ID, err)
	}
	if recv.IsZero() {
		recv = at
	}
	data, err := json.Marshal(devices.CommandMessage{ID: id, Name: name, Payload: payload, ExpiresAt: recv.Add(devices.DefaultCommandTTL).UTC()})
	if err != nil {
		return err
	}
	return r.pub.publish(ctx, &streams.Envelope{
		ID: id, DeviceID: device, Topic: devices.CommandTopic(device, name), EventTime: at, ReceivedAt: recv,
		ContentType: "application/json", Protocol: "rule", Payload: data,
		Meta: map[string]string{"rule": r.rule.Name, devices.MetaCommandID: id},
	})
}

// checkpoint stores the rule's state once every output so far is acknowledged.
func (r *runner) checkpoint(ctx context.Context) error {
	if err := r.pub.flush(ctx); err != nil {
		return err
	}
	snap, err := r.eng.Snapshot()
	if err != nil {
		return err
	}
	ck := checkpoint{
		Incarnation: r.rule.Incarnation, Fingerprint: r.c.fp,
		LastSeq: r.next - 1, OutSeq: r.pub.outSeq,
		Fired:   slices.Sorted(maps.Keys(r.fired)),
		Results: r.results, Alerts: r.notified, Failed: r.failed, LastResult: r.lastResult, Canary: r.canaryHist,
		SavedAt: time.Now().UTC(), Engine: snap,
	}
	data, err := ck.encode()
	if err != nil {
		return err
	}
	if err := r.m.state.save(ctx, r.rule.Name, data, &r.saved); err != nil {
		return err
	}
	r.ckptNext, r.ckptAt, r.sinceCkpt, r.dirty = r.next, ck.SavedAt, 0, false
	r.met.checkpoints.Inc()
	r.mu.Lock()
	r.stats.LastCheckpoint = ck.SavedAt
	r.mu.Unlock()
	return nil
}

func (r *runner) setRunning(on bool) {
	r.mu.Lock()
	r.stats.Running = on
	r.mu.Unlock()
}

// publishStats copies the engine's counters for other goroutines and updates the metrics.
func (r *runner) publishStats() {
	es := r.eng.Stats()
	p := r.prevEng
	r.met.accepted.Add(float64(es.Accepted - p.Accepted))
	r.met.filtered.Add(float64(es.Filtered - p.Filtered))
	r.met.late.Add(float64(es.Late - p.Late))
	r.met.rejected.Add(float64(es.Rejected - p.Rejected))
	r.met.open.Set(float64(es.OpenWindows))
	r.met.groups.Set(float64(es.Groups))
	if r.mb != nil && !r.catchingUp.Load() {
		r.met.lag.Set(float64(r.feed.pending.Load() + uint64(len(r.feed.in)) + uint64(max(0, r.mb.queued.Load()))))
	} else {
		r.met.lag.Set(float64(r.privatePending.Load()))
	}
	r.prevEng = es
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.stats
	s.EventsIn, s.Accepted, s.Filtered, s.LateEvents, s.Rejected = es.EventsIn, es.Accepted, es.Filtered, es.Late, es.Rejected
	s.Results, s.HavingFailed, s.Notifications = r.results, r.failed, r.notified
	s.FiredGroups, s.OpenWindows, s.Groups, s.Watermark = len(r.fired), es.OpenWindows, es.Groups, es.Watermark
	s.LastSeq = r.next - 1
	s.LastResult = r.lastResult
	s.DuplicatesSkipped = r.pub.skipped
}

// snapshot returns the current stats.
func (r *runner) snapshot() Stats {
	r.mu.Lock()
	s, f, mb, hooks := r.stats, r.feed, r.mb, r.hooks
	r.mu.Unlock()
	s.CatchingUp = r.catchingUp.Load()
	if s.CatchingUp || mb == nil {
		s.ConsumerLag = r.privatePending.Load()
	} else {
		s.ConsumerLag = f.pending.Load() + uint64(len(f.in)) + uint64(max(0, mb.queued.Load()))
	}
	r.met.lag.Set(float64(s.ConsumerLag))
	if hooks != nil {
		ws := hooks.stats()
		s.Webhooks = &ws
	}
	return s
}
