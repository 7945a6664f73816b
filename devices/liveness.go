package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// StatusBucket is the KV bucket of device liveness, keyed by device ID. Keys starting with
// "_instance." are the heartbeats of hub instances.
const StatusBucket = "device-status"

// Device statuses.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// DefaultInactivityTimeout is how long a device without a connection (CoAP) stays online after
// its last message when neither the device nor its type says otherwise.
const DefaultInactivityTimeout = 5 * time.Minute

// StatusTopic is the topic of a device's status events: devices/{id}/status. Only the hub
// publishes there.
func StatusTopic(id string) string { return "devices/" + id + "/status" }

// Presence is a device's liveness as every hub instance sees it.
type Presence struct {
	Status string `json:"status"`
	// Protocol is the one the device last came online with ("mqtt", "coap").
	Protocol string `json:"protocol,omitempty"`
	// RemoteAddr is the device's last known address (host:port).
	RemoteAddr string `json:"remote_addr,omitempty"`
	// LastSeen is when the hub last heard from the device: its last CoAP request, or its MQTT
	// connection or disconnection; nil if never.
	LastSeen *time.Time `json:"last_seen"`
	// Since is when Status last changed.
	Since *time.Time `json:"status_since,omitempty"`
}

// StatusEvent is the payload of devices/{id}/status.
type StatusEvent struct {
	Status     string    `json:"status"`
	Protocol   string    `json:"protocol,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	At         time.Time `json:"at"`
	// Reason: "connected", "disconnected", "message", "inactivity timeout", "hub stopped",
	// "hub instance lost", "deleted".
	Reason string `json:"reason,omitempty"`
}

// presenceRecord is what the status bucket holds.
type presenceRecord struct {
	Status     string    `json:"status"`
	Protocol   string    `json:"protocol,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	LastSeen   time.Time `json:"last_seen"`
	Since      time.Time `json:"since"`
	// Instance is the hub instance holding the device's MQTT connection; empty for devices
	// without one (CoAP), which go offline by inactivity timeout instead.
	Instance string `json:"instance,omitempty"`
	// Conn is the MQTT connection's establishment time, so that a late disconnection of an
	// older connection does not undo a newer one.
	Conn time.Time `json:"conn,omitzero"`
	// By and Reason are the instance that made the last status change and why: with Status
	// and Since they are that change's status event, so another instance can publish it again
	// when By died between writing the record and publishing the event (see announceLost).
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (p presenceRecord) public() Presence {
	out := Presence{Status: p.Status, Protocol: p.Protocol, RemoteAddr: p.RemoteAddr}
	if !p.LastSeen.IsZero() {
		t := p.LastSeen
		out.LastSeen = &t
	}
	if !p.Since.IsZero() {
		t := p.Since
		out.Since = &t
	}
	if out.Status == "" {
		out.Status = StatusOffline
	}
	return out
}

// LivenessConfig tunes liveness tracking. Zero values mean the defaults.
type LivenessConfig struct {
	// DefaultTimeout is the inactivity timeout of connectionless (CoAP) devices whose device
	// record and type set none (default 5m).
	DefaultTimeout time.Duration `yaml:"default_timeout" json:"default_timeout"`
	// SweepInterval is how often inactivity timeouts are checked (default 1s).
	SweepInterval time.Duration `yaml:"sweep_interval" json:"sweep_interval"`
	// SeenWriteInterval is how often an online device's last_seen is written to KV while it keeps
	// talking (default 60s, and at most a quarter of its timeout), so other instances do not
	// take it for silent.
	SeenWriteInterval time.Duration `yaml:"seen_write_interval" json:"seen_write_interval"`
	// HeartbeatInterval is how often this instance says it is alive (default 5s). The MQTT
	// devices of an instance not heard from for four intervals are marked offline.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval" json:"heartbeat_interval"`
}

func (c *LivenessConfig) setDefaults() {
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = DefaultInactivityTimeout
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Second
	}
	if c.SeenWriteInterval == 0 {
		c.SeenWriteInterval = time.Minute
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
}

// Validate names the first wrong field.
func (c LivenessConfig) Validate() error {
	switch {
	case c.DefaultTimeout != 0 && (c.DefaultTimeout < MinInactivityTimeout || c.DefaultTimeout > MaxInactivityTimeout):
		return fmt.Errorf("liveness: default_timeout %v is outside %v..%v", c.DefaultTimeout, MinInactivityTimeout, MaxInactivityTimeout)
	case c.SweepInterval < 0 || c.SeenWriteInterval < 0 || c.HeartbeatInterval < 0:
		return errors.New("liveness: intervals must not be negative")
	}
	return nil
}

// Publisher stores hub-made messages (status events, desired states, commands) in the
// streams. *streams.Bus satisfies it.
type Publisher interface {
	Publish(ctx context.Context, env *streams.Envelope) (uint64, error)
}

// Liveness tracks which devices are online. MQTT devices are online from connection to
// disconnection (keep-alive expiry included); CoAP devices, which have no connection, from any
// authenticated request until their inactivity timeout passes without one. State lives in the
// status bucket, so every instance sees the same; each change is published on
// devices/{id}/status by the instance that made it.
//
// The Connected, Disconnected and Seen callbacks never block: they queue work for Run.
type Liveness struct {
	cfg      LivenessConfig
	kv       jetstream.KeyValue
	pub      Publisher
	reg      *Registry
	types    *Types
	log      *slog.Logger
	now      func() time.Time
	instance string

	// mu guards what follows. Never call the registry while holding it: the registry calls
	// StatusOf.
	mu     sync.Mutex
	view   map[string]*presenceState
	seen   map[string]seenCall // CoAP requests not yet written
	events []connEvent         // MQTT connections, in order
	heard  map[string]time.Time
	// announced holds the silent instances whose last status changes announceLost has
	// published again.
	announced map[string]bool
	wake      chan struct{}
}

type presenceState struct {
	rec presenceRecord
	rev uint64
	// localSeen is the last request this instance saw; written is when last_seen was last
	// written by this instance.
	localSeen time.Time
	written   time.Time
}

type seenCall struct {
	protocol, remote string
	at               time.Time
}

type connEvent struct {
	id, protocol, remote string
	up                   bool
	at                   time.Time
	reason               string // of a disconnection: "disconnected" when empty
}

const instancePrefix = "_instance."

func newLiveness(ctx context.Context, js jetstream.JetStream, reg *Registry, types *Types, pub Publisher, cfg LivenessConfig, replicas int, log *slog.Logger) (*Liveness, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: StatusBucket, Description: "Tributary device liveness", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("device status bucket: %w", err)
	}
	l := &Liveness{
		cfg: cfg, kv: kv, pub: pub, reg: reg, types: types, log: log, now: time.Now,
		instance: NewToken()[:12],
		view:     map[string]*presenceState{}, seen: map[string]seenCall{}, heard: map[string]time.Time{},
		announced: map[string]bool{},
		wake:      make(chan struct{}, 1),
	}
	if err := streams.LoadBucket(ctx, kv, l.apply); err != nil {
		return nil, err
	}
	if err := l.heartbeat(ctx); err != nil {
		return nil, err
	}
	reg.statusOf = l.StatusOf
	return l, nil
}

// Instance is this hub instance's ID in the status bucket.
func (l *Liveness) Instance() string { return l.instance }

func (l *Liveness) heartbeat(ctx context.Context) error {
	if _, err := l.kv.Put(ctx, instancePrefix+l.instance, []byte(l.now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("instance heartbeat: %w", err)
	}
	return nil
}

// apply takes a change of the status bucket into the view.
func (l *Liveness) apply(e jetstream.KeyValueEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := e.Key()
	if inst, ok := strings.CutPrefix(key, instancePrefix); ok {
		if e.Operation() != jetstream.KeyValuePut {
			delete(l.heard, inst)
			delete(l.announced, inst)
			return
		}
		at := l.now()
		if t, err := time.Parse(time.RFC3339Nano, string(e.Value())); err == nil && e.Delta() > 0 && t.Before(at) {
			at = t // an initial value: it was written then, not now
		}
		l.heard[inst] = at
		delete(l.announced, inst)
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(l.view, key)
		return
	}
	st := l.view[key]
	if st != nil && st.rev >= e.Revision() {
		return // our own write, already applied
	}
	var rec presenceRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		l.log.Error("unreadable device status", "key", key, "err", err)
		return
	}
	if st == nil {
		st = &presenceState{}
		l.view[key] = st
	}
	st.rec, st.rev = rec, e.Revision()
}

// Connected is the MQTT adapter's callback for a device's first connection.
func (l *Liveness) Connected(id, protocol, remote string) {
	l.queue(connEvent{id: id, protocol: protocol, remote: remote, up: true, at: l.now()})
}

// Disconnected is the MQTT adapter's callback for the end of a device's last connection.
func (l *Liveness) Disconnected(id, protocol string) {
	l.queue(connEvent{id: id, protocol: protocol, at: l.now()})
}

func (l *Liveness) queue(e connEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	l.signal()
}

func (l *Liveness) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Seen is the CoAP adapter's callback for every authenticated device request. It costs a map
// update; KV is written only when the device comes online, changes address, or its last write
// is older than the seen-write interval.
func (l *Liveness) Seen(id, protocol, remote string) {
	now := l.now()
	every := l.seenWriteInterval(id) // before locking: it reads the registry
	l.mu.Lock()
	st := l.view[id]
	write := st == nil || st.rec.Status != StatusOnline || (st.rec.Instance == "" && st.rec.RemoteAddr != remote) ||
		now.Sub(st.written) >= every
	if st != nil {
		st.localSeen = now
	}
	if write {
		l.seen[id] = seenCall{protocol: protocol, remote: remote, at: now}
	}
	l.mu.Unlock()
	if write {
		l.signal()
	}
}

func (l *Liveness) seenWriteInterval(id string) time.Duration {
	return min(l.cfg.SeenWriteInterval, l.timeout(id)/4)
}

// timeout is the device's inactivity timeout: its own, else its type's, else the default.
func (l *Liveness) timeout(id string) time.Duration {
	d, err := l.reg.Get(id)
	if err != nil {
		return l.cfg.DefaultTimeout
	}
	if d.InactivityTimeout > 0 {
		return time.Duration(d.InactivityTimeout)
	}
	if d.Type != "" {
		if t, ok := l.types.Get(d.Type); ok && t.InactivityTimeout > 0 {
			return time.Duration(t.InactivityTimeout)
		}
	}
	return l.cfg.DefaultTimeout
}

// Timeout is the inactivity timeout in force for device id.
func (l *Liveness) Timeout(id string) time.Duration { return l.timeout(id) }

// Presence returns the liveness of device id (offline, never seen, when unknown).
func (l *Liveness) Presence(id string) Presence {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.view[id]
	if st == nil {
		return Presence{Status: StatusOffline}
	}
	p := st.rec.public()
	if st.localSeen.After(st.rec.LastSeen) {
		t := st.localSeen.UTC()
		p.LastSeen = &t
	}
	return p
}

// StatusOf is "online" or "offline".
func (l *Liveness) StatusOf(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.view[id]; st != nil && st.rec.Status == StatusOnline {
		return StatusOnline
	}
	return StatusOffline
}

// Online returns the IDs of the devices that are online (online true) or of those that have
// a status record and are offline (online false).
func (l *Liveness) Online(online bool) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for id, st := range l.view {
		if (st.rec.Status == StatusOnline) == online {
			out[id] = true
		}
	}
	return out
}

// Run writes queued changes, sweeps inactivity timeouts and keeps the view current, until ctx
// ends. Then it marks the devices connected to this instance offline and withdraws the
// instance's heartbeat.
func (l *Liveness) Run(ctx context.Context) error {
	w, err := l.kv.WatchAll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			l.stop()
			return nil
		}
		return fmt.Errorf("watch device status: %w", err)
	}
	defer w.Stop()
	sweep := time.NewTicker(l.cfg.SweepInterval)
	defer sweep.Stop()
	beat := time.NewTicker(l.cfg.HeartbeatInterval)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			l.stop()
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					l.stop()
					return nil
				}
				return errors.New("watch device status: ended")
			}
			if e != nil {
				l.apply(e)
			}
		case <-l.wake:
			l.flush(ctx)
		case <-sweep.C:
			l.sweep(ctx)
		case <-beat.C:
			if err := l.heartbeat(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("instance heartbeat not written", "err", err)
			}
		}
	}
}

// stop writes what is queued, marks this instance's MQTT devices offline and withdraws the
// heartbeat, with a short deadline of its own (Run's context has ended).
func (l *Liveness) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	l.flush(ctx)
	var mine []string
	l.mu.Lock()
	for id, st := range l.view {
		if st.rec.Status == StatusOnline && st.rec.Instance == l.instance {
			mine = append(mine, id)
		}
	}
	l.mu.Unlock()
	now := l.now()
	l.mu.Lock()
	for _, id := range mine {
		l.events = append(l.events, connEvent{id: id, at: now, reason: "hub stopped"})
	}
	l.mu.Unlock()
	l.flush(ctx)
	_ = l.kv.Delete(ctx, instancePrefix+l.instance)
}

// flush writes the queued connection events and sightings: in order for each device, and
// up to flushWorkers devices at a time, so that a burst of connections (a fleet reconnecting
// after an outage) does not queue up behind one KV round trip each.
func (l *Liveness) flush(ctx context.Context) {
	l.mu.Lock()
	events, seen := l.events, l.seen
	l.events, l.seen = nil, map[string]seenCall{}
	l.mu.Unlock()
	if len(events) == 0 && len(seen) == 0 {
		return
	}
	jobs := map[string][]func(){}
	var order []string
	add := func(id string, fn func()) {
		if _, ok := jobs[id]; !ok {
			order = append(order, id)
		}
		jobs[id] = append(jobs[id], fn)
	}
	for _, e := range events {
		if e.up {
			add(e.id, func() { l.connected(ctx, e) })
		} else {
			add(e.id, func() { l.disconnected(ctx, e) })
		}
	}
	for id, sc := range seen {
		add(id, func() { l.sighted(ctx, id, sc) })
	}
	if len(order) == 1 {
		for _, fn := range jobs[order[0]] {
			fn()
		}
		return
	}
	work := make(chan []func())
	var wg sync.WaitGroup
	for range min(flushWorkers, len(order)) {
		wg.Go(func() {
			for fns := range work {
				for _, fn := range fns {
					fn()
				}
			}
		})
	}
	for _, id := range order {
		work <- jobs[id]
	}
	close(work)
	wg.Wait()
}

// flushWorkers bounds the devices whose status is written at once.
const flushWorkers = 16

func (l *Liveness) connected(ctx context.Context, e connEvent) {
	l.write(ctx, e.id, "connected", func(cur presenceRecord, _ bool) (presenceRecord, bool) {
		if cur.Status == StatusOnline && cur.Instance != "" && cur.Conn.After(e.at) {
			return cur, false // a newer connection elsewhere already holds the device
		}
		cur.Status, cur.Protocol, cur.RemoteAddr, cur.LastSeen = StatusOnline, e.protocol, e.remote, e.at
		cur.Instance, cur.Conn = l.instance, e.at
		return cur, true
	})
}

func (l *Liveness) disconnected(ctx context.Context, e connEvent) {
	reason := e.reason
	if reason == "" {
		reason = "disconnected"
	}
	l.write(ctx, e.id, reason, func(cur presenceRecord, _ bool) (presenceRecord, bool) {
		if cur.Status != StatusOnline || cur.Instance != l.instance {
			return cur, false // it is connected to another instance now
		}
		cur.Status, cur.Instance, cur.LastSeen = StatusOffline, "", e.at
		return cur, true
	})
}

func (l *Liveness) sighted(ctx context.Context, id string, s seenCall) {
	l.write(ctx, id, "message", func(cur presenceRecord, _ bool) (presenceRecord, bool) {
		if cur.Status == StatusOnline && cur.Instance != "" {
			// Connected over MQTT too: the connection decides; just note the sighting.
			if s.at.After(cur.LastSeen) {
				cur.LastSeen = s.at
			}
			return cur, true
		}
		cur.Status, cur.Protocol, cur.RemoteAddr, cur.Instance = StatusOnline, s.protocol, s.remote, ""
		if s.at.After(cur.LastSeen) {
			cur.LastSeen = s.at
		}
		return cur, true
	})
}

// sweep marks offline the connectionless devices whose timeout has passed and the MQTT devices
// of instances that stopped sending heartbeats.
func (l *Liveness) sweep(ctx context.Context) {
	now := l.now()
	l.announceLost(ctx, now)
	type cand struct {
		id       string
		lastSeen time.Time
		reason   string
	}
	var cands []cand
	l.mu.Lock()
	for id, st := range l.view {
		if st.rec.Status != StatusOnline {
			continue
		}
		switch inst := st.rec.Instance; {
		case inst == "":
			if now.Sub(later(st.rec.LastSeen, st.localSeen)) < MinInactivityTimeout {
				continue
			}
			cands = append(cands, cand{id, st.rec.LastSeen, "inactivity timeout"})
		case inst != l.instance:
			heard, ok := l.heard[inst]
			if !ok {
				heard = st.rec.Conn
			}
			if now.Sub(heard) > 4*l.cfg.HeartbeatInterval {
				cands = append(cands, cand{id, st.rec.LastSeen, "hub instance lost"})
			}
		}
	}
	l.mu.Unlock()
	for _, c := range cands {
		if c.reason == "inactivity timeout" {
			timeout := l.timeout(c.id)
			l.mu.Lock()
			st := l.view[c.id]
			expired := st != nil && now.Sub(later(st.rec.LastSeen, st.localSeen)) >= timeout
			l.mu.Unlock()
			if !expired {
				continue
			}
		}
		l.write(ctx, c.id, c.reason, func(cur presenceRecord, _ bool) (presenceRecord, bool) {
			if cur.Status != StatusOnline || cur.LastSeen.After(c.lastSeen) {
				return cur, false // heard from in the meantime
			}
			cur.Status, cur.Instance = StatusOffline, ""
			return cur, true
		})
	}
	// Forget instances silent for an hour.
	l.mu.Lock()
	var gone []string
	for inst, at := range l.heard {
		if inst != l.instance && now.Sub(at) > time.Hour {
			gone = append(gone, inst)
		}
	}
	l.mu.Unlock()
	for _, inst := range gone {
		_ = l.kv.Delete(ctx, instancePrefix+inst)
	}
}

// resendWindow bounds how old a status change announceLost publishes again: well inside the IOT
// stream's duplicate window (2 minutes), so an event that did go out is dropped as a duplicate.
const resendWindow = time.Minute

// announceLost publishes again the status events of the recent status changes made by instances
// that stopped heartbeating: an instance killed between writing a record and publishing its
// event would otherwise leave that event out of the stream for good. Events that were published
// are dropped by the stream as duplicates (same message ID); every live instance may do this.
func (l *Liveness) announceLost(ctx context.Context, now time.Time) {
	type change struct {
		id  string
		rec presenceRecord
	}
	var redo []change
	l.mu.Lock()
	lost := map[string]bool{}
	for inst, at := range l.heard {
		if inst != l.instance && !l.announced[inst] && now.Sub(at) > 4*l.cfg.HeartbeatInterval {
			lost[inst] = true
			l.announced[inst] = true
		}
	}
	if len(lost) > 0 {
		for id, st := range l.view {
			if lost[st.rec.By] && now.Sub(st.rec.Since) < resendWindow {
				redo = append(redo, change{id, st.rec})
			}
		}
	}
	l.mu.Unlock()
	for _, c := range redo {
		l.publish(ctx, c.id, c.rec)
	}
	if len(redo) > 0 {
		l.log.Info("status events of a lost hub instance published again", "count", len(redo))
	}
}

// write changes device id's record with optimistic concurrency, and publishes a status event
// when the status changed. change returns false to leave the record alone.
func (l *Liveness) write(ctx context.Context, id, reason string, change func(cur presenceRecord, exists bool) (presenceRecord, bool)) {
	if !l.reg.Exists(id) {
		return // deleted (or never registered)
	}
	for attempt := 0; attempt < 8; attempt++ {
		var cur presenceRecord
		var rev uint64
		l.mu.Lock()
		st := l.view[id]
		if st != nil {
			cur, rev = st.rec, st.rev
		}
		l.mu.Unlock()
		if attempt > 0 || st == nil {
			e, err := l.kv.Get(ctx, id)
			switch {
			case err == nil:
				if err := json.Unmarshal(e.Value(), &cur); err != nil {
					cur = presenceRecord{}
				}
				rev = e.Revision()
			case errors.Is(err, jetstream.ErrKeyNotFound):
				cur, rev = presenceRecord{}, 0
			default:
				if ctx.Err() == nil {
					l.log.Warn("device status not read", "device", id, "err", err)
				}
				return
			}
		}
		was := cur.Status
		next, ok := change(cur, rev > 0)
		if !ok {
			return
		}
		announce := next.Status != was && (was != "" || next.Status == StatusOnline)
		if next.Status != was {
			next.Since, next.By, next.Reason = l.now().UTC(), "", ""
		}
		if announce {
			next.By, next.Reason = l.instance, reason
		}
		next.LastSeen = next.LastSeen.UTC()
		data, _ := json.Marshal(next)
		var newRev uint64
		var err error
		if rev > 0 {
			newRev, err = l.kv.Update(ctx, id, data, rev)
		} else {
			newRev, err = l.kv.Create(ctx, id, data)
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || strings.Contains(err.Error(), "wrong last sequence") {
				continue
			}
			if ctx.Err() == nil {
				l.log.Warn("device status not written", "device", id, "err", err)
			}
			return
		}
		l.mu.Lock()
		st = l.view[id]
		if st == nil {
			st = &presenceState{}
			l.view[id] = st
		}
		if st.rev < newRev {
			st.rec, st.rev = next, newRev
		}
		st.written = l.now()
		l.mu.Unlock()
		if announce {
			// The record is written: its event must go out even when the hub is stopping
			// (Run's context ends while a change is in flight), or subscribers never see it.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.publish(pctx, id, next)
			cancel()
		}
		return
	}
	l.log.Warn("device status not written: too many concurrent changes", "device", id)
}

// publish sends the status event of rec's last status change on devices/{id}/status. Its
// message ID comes from the change's time, so publishing it twice (two instances, or a resend
// by announceLost) stores it once within the stream's duplicate window.
func (l *Liveness) publish(ctx context.Context, id string, rec presenceRecord) {
	ev := StatusEvent{Status: rec.Status, Protocol: rec.Protocol, RemoteAddr: rec.RemoteAddr, At: rec.Since, Reason: rec.Reason}
	data, _ := json.Marshal(ev)
	env := &streams.Envelope{
		ID:          fmt.Sprintf("status-%s-%d", id, rec.Since.UnixNano()),
		DeviceID:    id,
		Topic:       StatusTopic(id),
		ContentType: "application/json",
		Protocol:    "hub",
		Payload:     data,
	}
	env.Stamp(l.now())
	if _, err := l.pub.Publish(ctx, env); err != nil && ctx.Err() == nil {
		l.log.Warn("status event not published", "device", id, "status", rec.Status, "err", err)
	}
}

// forget removes device id's status (the device was deleted) and says it is offline if it
// was online.
func (l *Liveness) forget(ctx context.Context, id string) {
	l.mu.Lock()
	st := l.view[id]
	delete(l.view, id)
	l.mu.Unlock()
	if err := l.kv.Purge(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		l.log.Warn("device status not removed", "device", id, "err", err)
	}
	if st != nil && st.rec.Status == StatusOnline {
		rec := st.rec
		rec.Status, rec.Since, rec.By, rec.Reason = StatusOffline, l.now().UTC(), l.instance, "deleted"
		l.publish(ctx, id, rec)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
