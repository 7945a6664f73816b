// Package scenario keeps named recordings of device traffic independently of the IOT stream's
// retention, exports and imports them as NDJSON files (gzip optional), and hands them to
// replays and backtests as a simulator.Source.
//
// Storage: the messages of scenario NAME live in the stream SCENARIOS (file storage, no MaxAge)
// under the subject "scenario.NAME.GEN", with the envelope headers of the original, the topic
// in Tb-Topic and the original message ID in Tb-Id (not Nats-Msg-Id, so two scenarios holding
// the same message are not deduplicated). The KV bucket "scenarios" maps NAME to its metadata
// and its current generation GEN. A new scenario or an import is written under a fresh
// generation and becomes visible only when its KV entry is written, after every message is
// stored and counted; on any error the generation is purged, so nothing partial is left.
package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/streams"
)

// Names of the stream and the bucket.
const (
	Stream        = "SCENARIOS"
	Bucket        = "scenarios"
	subjectPrefix = "scenario"
)

// Config of the store.
type Config struct {
	// Replicas of the stream and bucket (default 1).
	Replicas int `yaml:"replicas" json:"replicas"`
	// MaxMessages bounds one scenario (default 10,000,000).
	MaxMessages uint64 `yaml:"max_messages" json:"max_messages"`
}

// Info describes a scenario.
type Info struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	// Origin is "selection" (saved from the stream) or "import".
	Origin string `json:"origin"`
	// Selection is what a scenario saved from the stream was selected with.
	Selection      *simulator.Selection `json:"selection,omitempty"`
	Messages       uint64               `json:"messages"`
	PayloadBytes   uint64               `json:"payload_bytes"`
	Devices        int                  `json:"devices"`
	FirstEventTime time.Time            `json:"first_event_time"`
	LastEventTime  time.Time            `json:"last_event_time"`
}

// record is what the bucket holds.
type record struct {
	Info
	Generation string `json:"generation"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	// PaceFrom is the event time of the first message in stored order: replays pace from it.
	PaceFrom time.Time `json:"pace_from"`
}

// Store keeps scenarios.
type Store struct {
	cfg      Config
	js       jetstream.JetStream
	stream   jetstream.Stream
	kv       jetstream.KeyValue
	resolver *simulator.Resolver
	log      *slog.Logger
	now      func() time.Time
	failed   atomic.Uint64 // asynchronous publishes not stored
}

// New creates (or opens) the stream and bucket. resolver finds the messages of a selection;
// New registers the store with it as the place scenarios are found.
func New(ctx context.Context, nc *nats.Conn, cfg Config, resolver *simulator.Resolver, log *slog.Logger) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxMessages == 0 {
		cfg.MaxMessages = 10_000_000
	}
	s := &Store{cfg: cfg, resolver: resolver, log: log.With("component", "scenarios"), now: time.Now}
	var err error
	s.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(16384),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, _ error) { s.failed.Add(1) }))
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	s.stream, err = streams.OpenStream(ctx, s.js, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Tributary scenarios: recordings kept independently of the IOT stream's retention",
		Subjects:    []string{subjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	s.kv, err = streams.OpenBucket(ctx, s.js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Tributary scenarios", History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("scenario bucket: %w", err)
	}
	if resolver != nil {
		resolver.SetScenarios(s)
	}
	s.purgeOrphans(ctx)
	return s, nil
}

func subject(name, gen string) string { return subjectPrefix + "." + name + "." + gen }

// orphanAge is how old the newest message of an unreferenced generation must be before it is
// purged at start: younger ones may be an import still running on another instance.
const orphanAge = 10 * time.Minute

// purgeOrphans removes generations no KV entry refers to (left by a crash mid-import).
func (s *Store) purgeOrphans(ctx context.Context) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(subjectPrefix+".>"))
	if err != nil {
		s.log.Warn("cannot list scenario subjects", "err", err)
		return
	}
	for subj := range info.State.Subjects {
		parts := strings.Split(subj, ".")
		if len(parts) != 3 {
			continue
		}
		if rec, err := s.get(ctx, parts[1]); err == nil && rec.Generation == parts[2] {
			continue
		}
		last, err := s.stream.GetLastMsgForSubject(ctx, subj)
		if err != nil || s.now().Sub(last.Time) < orphanAge {
			continue
		}
		if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			s.log.Warn("cannot purge orphaned scenario data", "subject", subj, "err", err)
			continue
		}
		s.log.Info("purged orphaned scenario data", "subject", subj)
	}
}

func checkName(name string) error {
	if !simulator.ValidName(name) {
		return fmt.Errorf("%w: name: %q is not a valid scenario name (1 to 64 letters, digits, '-' or '_', starting with a letter or digit)", simulator.ErrInvalid, name)
	}
	return nil
}

// Create saves the messages sel selects as scenario name.
func (s *Store) Create(ctx context.Context, name, description string, sel simulator.Selection) (Info, error) {
	if err := checkName(name); err != nil {
		return Info{}, err
	}
	if _, err := s.get(ctx, name); err == nil {
		return Info{}, fmt.Errorf("%w: scenario %s", simulator.ErrExists, name)
	}
	src, err := s.resolver.Resolve(ctx, sel)
	if err != nil {
		return Info{}, err
	}
	w, err := s.newWriter(ctx, name)
	if err != nil {
		return Info{}, err
	}
	rd, err := simulator.Open(ctx, s.js, src, 0)
	if err != nil {
		w.abort()
		return Info{}, err
	}
	defer rd.Close()
	for {
		m, err := rd.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = w.addMsg(m)
		}
		if err != nil {
			w.abort()
			return Info{}, err
		}
	}
	return w.commit(ctx, Info{Description: description, Origin: "selection", Selection: &sel}, false)
}

// Import stores the scenario file r (see Decode) as scenario name, replacing an existing one
// only when replace is set. A malformed line or a storage error leaves nothing behind.
func (s *Store) Import(ctx context.Context, name, description string, r io.Reader, replace bool) (Info, error) {
	if err := checkName(name); err != nil {
		return Info{}, err
	}
	if _, err := s.get(ctx, name); err == nil && !replace {
		return Info{}, fmt.Errorf("%w: scenario %s (import with replace to overwrite it)", simulator.ErrExists, name)
	}
	w, err := s.newWriter(ctx, name)
	if err != nil {
		return Info{}, err
	}
	if _, err := Decode(r, func(_ int, env *streams.Envelope) error { return w.addEnvelope(env) }); err != nil {
		w.abort()
		return Info{}, err
	}
	return w.commit(ctx, Info{Description: description, Origin: "import"}, replace)
}

// Export writes scenario name as NDJSON to w.
func (s *Store) Export(ctx context.Context, name string, w io.Writer) error {
	in, err := s.Open(ctx, name)
	if err != nil {
		return err
	}
	defer in.Close()
	enc := NewEncoder(w)
	for env, err := range in.All(ctx) {
		if err != nil {
			return err
		}
		if err := enc.Encode(env); err != nil {
			return err
		}
	}
	return nil
}

// Open reads scenario name's envelopes in their stored order.
func (s *Store) Open(ctx context.Context, name string) (*simulator.Input, error) {
	src, err := s.ScenarioSource(ctx, name)
	if err != nil {
		return nil, err
	}
	return simulator.OpenInput(ctx, s.js, src, simulator.InputOptions{})
}

// ScenarioSource says where scenario name's messages are.
func (s *Store) ScenarioSource(ctx context.Context, name string) (simulator.Source, error) {
	rec, err := s.get(ctx, name)
	if err != nil {
		return simulator.Source{}, err
	}
	return simulator.Source{
		Stream: Stream, Subjects: []string{subject(name, rec.Generation)},
		StartSeq: rec.FirstSeq, EndSeq: rec.LastSeq,
		FirstEventTime: rec.PaceFrom, Estimate: rec.Messages, Scenario: name,
	}, nil
}

// Get returns one scenario.
func (s *Store) Get(ctx context.Context, name string) (Info, error) {
	rec, err := s.get(ctx, name)
	return rec.Info, err
}

func (s *Store) get(ctx context.Context, name string) (record, error) {
	if err := checkName(name); err != nil {
		return record{}, err
	}
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, fmt.Errorf("scenario %s: %w", name, simulator.ErrNotFound)
	}
	if err != nil {
		return record{}, fmt.Errorf("scenario %s: %w", name, err)
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return record{}, fmt.Errorf("scenario %s: %w", name, err)
	}
	return rec, nil
}

// List returns every scenario, by name.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list scenarios: %w", err)
	}
	out := []Info{}
	for k := range keys.Keys() {
		rec, err := s.get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		out = append(out, rec.Info)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Delete removes a scenario and its messages.
func (s *Store) Delete(ctx context.Context, name string) error {
	rec, err := s.get(ctx, name)
	if err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete scenario %s: %w", name, err)
	}
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(subject(name, rec.Generation))); err != nil {
		return fmt.Errorf("delete scenario %s: %w", name, err)
	}
	return nil
}

// writer stores one new generation of a scenario.
type writer struct {
	s          *Store
	name, gen  string
	subj       string
	lower      uint64 // no message of the generation has a lower sequence
	failedAt   uint64
	n, bytes   uint64
	devices    map[string]bool
	first      time.Time
	last       time.Time
	paceFrom   time.Time
	firstFound bool
}

func (s *Store) newWriter(ctx context.Context, name string) (*writer, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", Stream, err)
	}
	gen := nuid.Next()
	return &writer{s: s, name: name, gen: gen, subj: subject(name, gen), lower: info.State.LastSeq + 1,
		failedAt: s.failed.Load(), devices: map[string]bool{}}, nil
}

func (w *writer) addEnvelope(env *streams.Envelope) error {
	msg, err := env.ToMsg()
	if err != nil {
		return fmt.Errorf("%w: topic: %v", simulator.ErrInvalid, err)
	}
	return w.add(msg.Header, msg.Data, env.Topic, env.DeviceID, env.EventTime)
}

func (w *writer) addMsg(m *simulator.Msg) error {
	topic, err := m.Topic()
	if err != nil {
		return err
	}
	return w.add(m.Header, m.Data, topic, m.Header.Get(streams.HeaderDevice), m.EventTime)
}

// add publishes one message; h is taken over.
func (w *writer) add(h nats.Header, data []byte, topic, device string, evt time.Time) error {
	if w.n >= w.s.cfg.MaxMessages {
		return fmt.Errorf("%w: a scenario holds at most %d messages", simulator.ErrInvalid, w.s.cfg.MaxMessages)
	}
	if id := h.Get(streams.HeaderMsgID); id != "" {
		h.Del(streams.HeaderMsgID)
		h.Set(simulator.HeaderOriginalID, id)
	}
	h.Del(streams.HeaderReplay)
	h.Set(streams.HeaderTopic, topic)
	if _, err := w.s.js.PublishMsgAsync(&nats.Msg{Subject: w.subj, Header: h, Data: data}, jetstream.WithStallWait(30*time.Second)); err != nil {
		return fmt.Errorf("store scenario %s: %w", w.name, err)
	}
	w.n++
	w.bytes += uint64(len(data))
	if device != "" {
		w.devices[device] = true
	}
	if !w.firstFound {
		w.first, w.paceFrom, w.firstFound = evt, evt, true
	}
	if evt.Before(w.first) {
		w.first = evt
	}
	if evt.After(w.last) {
		w.last = evt
	}
	return nil
}

// settle waits until every publish of the writer has its ack.
func (w *writer) settle(ctx context.Context) error {
	select {
	case <-w.s.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return errors.New("storing the scenario timed out")
	}
}

func (w *writer) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = w.settle(ctx)
	if err := w.s.stream.Purge(ctx, jetstream.WithPurgeSubject(w.subj)); err != nil {
		w.s.log.Warn("cannot purge an aborted scenario; it is purged at the next start", "scenario", w.name, "err", err)
	}
}

func (w *writer) commit(ctx context.Context, info Info, replace bool) (_ Info, err error) {
	defer func() {
		if err != nil {
			w.abort()
		}
	}()
	if err := w.settle(ctx); err != nil {
		return Info{}, fmt.Errorf("store scenario %s: %w", w.name, err)
	}
	si, err := w.s.stream.Info(ctx, jetstream.WithSubjectFilter(w.subj))
	if err != nil {
		return Info{}, fmt.Errorf("store scenario %s: %w", w.name, err)
	}
	if got := si.State.Subjects[w.subj]; got != w.n {
		return Info{}, fmt.Errorf("store scenario %s: %d of %d messages stored", w.name, got, w.n)
	}
	first, err := w.s.stream.GetMsg(ctx, w.lower, jetstream.WithGetMsgSubject(w.subj))
	if err != nil {
		return Info{}, fmt.Errorf("store scenario %s: %w", w.name, err)
	}
	last, err := w.s.stream.GetLastMsgForSubject(ctx, w.subj)
	if err != nil {
		return Info{}, fmt.Errorf("store scenario %s: %w", w.name, err)
	}
	info.Name, info.CreatedAt = w.name, w.s.now().UTC()
	info.Messages, info.PayloadBytes, info.Devices = w.n, w.bytes, len(w.devices)
	info.FirstEventTime, info.LastEventTime = w.first.UTC(), w.last.UTC()
	rec := record{Info: info, Generation: w.gen, FirstSeq: first.Sequence, LastSeq: last.Sequence, PaceFrom: w.paceFrom}
	data, err := json.Marshal(rec)
	if err != nil {
		return Info{}, err
	}
	var old *record
	if replace {
		if r, err := w.s.get(ctx, w.name); err == nil {
			old = &r
		}
		_, err = w.s.kv.Put(ctx, w.name, data)
	} else {
		_, err = w.s.kv.Create(ctx, w.name, data)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Info{}, fmt.Errorf("%w: scenario %s", simulator.ErrExists, w.name)
		}
	}
	if err != nil {
		return Info{}, fmt.Errorf("store scenario %s: %w", w.name, err)
	}
	if old != nil && old.Generation != w.gen {
		if err := w.s.stream.Purge(ctx, jetstream.WithPurgeSubject(subject(w.name, old.Generation))); err != nil {
			w.s.log.Warn("cannot purge a replaced scenario generation; it is purged at the next start", "scenario", w.name, "err", err)
		}
	}
	return info, nil
}
