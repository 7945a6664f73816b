package simulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// Source is a resolved selection: which stream to read, with which subject filters, between
// which sequences, and which messages to keep. It is plain data, so a job can keep it and
// read on from a checkpoint after a restart.
type Source struct {
	Stream   string   `json:"stream"`
	Subjects []string `json:"subjects"`
	// StartSeq is the first selected message; EndSeq bounds reading (inclusive).
	StartSeq uint64 `json:"start_seq"`
	EndSeq   uint64 `json:"end_seq"`
	// EndTime, when set, ends reading at the first message the stream stored after it.
	EndTime time.Time `json:"end_time,omitzero"`
	// From and To, when set, keep only messages with event times in [From, To).
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Topics, when set, keep only messages on topics matching one of these filters.
	Topics []string `json:"topics,omitempty"`
	// FirstEventTime is the event time of the first selected message: replays pace from it.
	FirstEventTime time.Time `json:"first_event_time"`
	// Estimate is an upper bound of the number of selected messages.
	Estimate uint64 `json:"estimate"`
	// Scenario names the scenario read, if any.
	Scenario string `json:"scenario,omitempty"`
}

// ScenarioSources resolves a scenario name to where its messages are. *scenario.Store
// satisfies it.
type ScenarioSources interface {
	// ScenarioSource returns the scenario's source, or an error wrapping ErrNotFound.
	ScenarioSource(ctx context.Context, name string) (Source, error)
}

// DeviceChecker says whether a device is registered. *devices.Registry satisfies it.
type DeviceChecker interface {
	Exists(id string) bool
}

// Resolver turns selections into sources.
type Resolver struct {
	js        jetstream.JetStream
	devices   DeviceChecker
	scenarios ScenarioSources
	now       func() time.Time
}

// NewResolver reads the IOT stream through js. devices (to refuse unknown devices) and
// scenarios may be nil.
func NewResolver(js jetstream.JetStream, devices DeviceChecker, scenarios ScenarioSources) *Resolver {
	return &Resolver{js: js, devices: devices, scenarios: scenarios, now: time.Now}
}

// SetScenarios sets where scenarios are found (for wiring when the store needs the resolver).
func (r *Resolver) SetScenarios(s ScenarioSources) { r.scenarios = s }

// JetStream is the context sources are read with.
func (r *Resolver) JetStream() jetstream.JetStream { return r.js }

// Resolve validates sel, checks its devices against the registry and finds its first message.
// An empty selection is an error wrapping ErrEmpty.
func (r *Resolver) Resolve(ctx context.Context, sel Selection) (Source, error) {
	now := r.now()
	if err := sel.Validate(now); err != nil {
		return Source{}, err
	}
	if sel.Scenario != "" {
		if r.scenarios == nil {
			return Source{}, fmt.Errorf("%w: scenario: scenarios are not available", ErrInvalid)
		}
		return r.scenarios.ScenarioSource(ctx, sel.Scenario)
	}
	if r.devices != nil {
		for i, d := range sel.Devices {
			if !r.devices.Exists(d) {
				return Source{}, fmt.Errorf("%w: devices[%d]: unknown device %q", ErrInvalid, i, d)
			}
		}
	}
	to := sel.To
	if to.IsZero() {
		to = now
	}
	skew := sel.maxSkew()
	src := Source{Stream: streams.StreamMessages, From: sel.From, To: to, EndTime: to.Add(skew)}
	filters := sel.Topics
	if len(sel.Devices) > 0 {
		src.Topics = sel.Topics // narrowed in process: subjects come from the devices
		filters = nil
		for _, d := range sel.Devices {
			filters = append(filters, "devices/"+d+"/#")
		}
	} else if len(filters) == 0 {
		filters = []string{"devices/#"}
	} else {
		src.Topics = filters
	}
	var err error
	if src.Subjects, err = SubjectFilters(filters); err != nil {
		return Source{}, fmt.Errorf("%w: topics: %v", ErrInvalid, err)
	}
	stream, err := r.js.Stream(ctx, src.Stream)
	if err != nil {
		return Source{}, fmt.Errorf("stream %s: %w", src.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return Source{}, fmt.Errorf("stream %s: %w", src.Stream, err)
	}
	if info.State.Msgs == 0 {
		return Source{}, fmt.Errorf("%w: the stream holds no messages", ErrEmpty)
	}
	src.EndSeq = info.State.LastSeq
	start := sel.From.Add(-skew)
	rd, err := open(ctx, r.js, src, jetstream.OrderedConsumerConfig{
		FilterSubjects: src.Subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return Source{}, err
	}
	defer rd.Close()
	m, err := rd.Next(ctx)
	if errors.Is(err, io.EOF) {
		what := ""
		if len(sel.Devices) > 0 {
			what += fmt.Sprintf(" of devices %s", strings.Join(sel.Devices, ", "))
		}
		if len(sel.Topics) > 0 {
			what += fmt.Sprintf(" on topics %s", strings.Join(sel.Topics, ", "))
		}
		return Source{}, fmt.Errorf("%w: no message%s has an event time from %s to %s", ErrEmpty,
			what, sel.From.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
	if err != nil {
		return Source{}, err
	}
	src.StartSeq, src.FirstEventTime = m.Seq, m.EventTime
	src.Estimate = min(m.Pending+1, src.EndSeq-src.StartSeq+1)
	return src, nil
}

// SubjectFilters maps MQTT-style filters to JetStream filter subjects of the IOT stream: "a/#"
// also yields "a" (MQTT's "#" matches the parent level), and subjects covered by another are
// dropped, as JetStream refuses overlapping filters.
func SubjectFilters(filters []string) ([]string, error) { return streams.SubjectFilters(filters) }

// Msg is one selected message as stored, with what a replay needs decoded.
type Msg struct {
	Seq       uint64
	Subject   string
	Header    nats.Header
	Data      []byte
	Stored    time.Time // when the stream stored it
	EventTime time.Time
	// Pending is how many messages matching the subject filters follow this one in the stream.
	Pending uint64
}

// HeaderOriginalID carries a message's ID where Nats-Msg-Id cannot (scenario copies, whose
// IDs must not be deduplicated against each other).
const HeaderOriginalID = "Tb-Id"

// Topic is the message's topic: from the Tb-Topic header (scenario copies) or the subject.
func (m *Msg) Topic() (string, error) {
	if t := m.Header.Get(streams.HeaderTopic); t != "" {
		return t, nil
	}
	return streams.SubjectToTopic(m.Subject)
}

// ID is the message's original ID.
func (m *Msg) ID() string {
	if id := m.Header.Get(HeaderOriginalID); id != "" {
		return id
	}
	return m.Header.Get(streams.HeaderMsgID)
}

// Envelope decodes the message.
func (m *Msg) Envelope() (*streams.Envelope, error) {
	env, err := streams.FromMsg(m.Subject, m.Header, m.Data)
	if err != nil {
		return nil, err
	}
	if env.ID == "" {
		env.ID = m.Header.Get(HeaderOriginalID)
	}
	env.Seq = m.Seq
	return env, nil
}

// Reader reads a source's messages in stream order. Next is not safe for concurrent use; Close
// may be called from any goroutine.
type Reader struct {
	src  Source
	cons jetstream.Consumer
	it   jetstream.MessagesContext
	stop func() bool
	done bool
	idle int
	// lost counts consecutive idle checks that found the consumer gone (see Next).
	lost int
	// Skipped counts messages read but not selected.
	Skipped uint64
}

// readBuffer is how many messages a Reader asks JetStream for ahead of use.
const readBuffer = 8192

// Open starts reading src at sequence from (0: src.StartSeq). Reading stops when ctx ends.
func Open(ctx context.Context, js jetstream.JetStream, src Source, from uint64) (*Reader, error) {
	if from == 0 {
		from = src.StartSeq
	}
	if src.EndSeq != 0 && from > src.EndSeq {
		return &Reader{src: src, done: true}, nil
	}
	return open(ctx, js, src, jetstream.OrderedConsumerConfig{
		FilterSubjects: src.Subjects, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
}

func open(ctx context.Context, js jetstream.JetStream, src Source, cfg jetstream.OrderedConsumerConfig) (*Reader, error) {
	cfg.InactiveThreshold = 30 * time.Second
	cons, err := js.OrderedConsumer(ctx, src.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", src.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(readBuffer))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", src.Stream, err)
	}
	return &Reader{src: src, cons: cons, it: it, stop: context.AfterFunc(ctx, it.Stop)}, nil
}

// maxLost bounds the idle checks in a row that may find the consumer being replaced (5 s).
const maxLost = 50

// idleCheck is how long Next waits for a message before asking the server whether any matching
// message is left: every message up to EndSeq is stored already, so none pending means the end.
const idleCheck = 100 * time.Millisecond

// Next returns the next selected message, or io.EOF after the last.
func (rd *Reader) Next(ctx context.Context) (*Msg, error) {
	for {
		if rd.done {
			return nil, io.EOF
		}
		jm, err := rd.it.Next(jetstream.NextMaxWait(idleCheck))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !errors.Is(err, nats.ErrTimeout) {
				return nil, fmt.Errorf("read %s: %w", rd.src.Stream, err)
			}
			info, err := rd.cons.Info(ctx)
			if errors.Is(err, jetstream.ErrConsumerNotFound) && rd.lost < maxLost {
				// An ordered consumer replaces itself after a gap or missed heartbeats (a
				// loaded or failing-over cluster); ask again after the next wait.
				rd.lost++
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", rd.src.Stream, err)
			}
			rd.lost = 0
			if info.NumPending == 0 {
				rd.idle++
				rd.done = rd.idle >= 2 // one more wait for messages already on their way
			}
			continue
		}
		rd.idle = 0
		m, last, err := rd.convert(jm)
		if err != nil {
			return nil, err
		}
		if last {
			rd.done = true
		}
		if m != nil {
			return m, nil
		}
	}
}

// convert decodes jm and applies the source's bounds; m is nil when jm is not selected, last
// is true when nothing after jm can be.
func (rd *Reader) convert(jm jetstream.Msg) (m *Msg, last bool, err error) {
	md, err := jm.Metadata()
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", rd.src.Stream, err)
	}
	seq := md.Sequence.Stream
	if rd.src.EndSeq != 0 && seq > rd.src.EndSeq || !rd.src.EndTime.IsZero() && md.Timestamp.After(rd.src.EndTime) {
		return nil, true, nil
	}
	last = md.NumPending == 0 || seq == rd.src.EndSeq
	subj := jm.Subject()
	if strings.HasPrefix(subj, streams.SubjectPrefix+"."+SandboxTopicPrefix+".") {
		rd.Skipped++
		return nil, last, nil
	}
	h := jm.Headers()
	m = &Msg{Seq: seq, Subject: subj, Header: h, Data: jm.Data(), Stored: md.Timestamp, Pending: md.NumPending}
	if v := h.Get(streams.HeaderEventTime); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			m.EventTime = time.Unix(0, n)
		}
	}
	if m.EventTime.IsZero() {
		m.EventTime = md.Timestamp
	}
	if !rd.src.From.IsZero() && m.EventTime.Before(rd.src.From) || !rd.src.To.IsZero() && !m.EventTime.Before(rd.src.To) {
		rd.Skipped++
		return nil, last, nil
	}
	if len(rd.src.Topics) > 0 {
		topic, err := m.Topic()
		if err != nil || len(rd.src.Topics) == 0 || !streams.MatchesAny(rd.src.Topics, topic) {
			rd.Skipped++
			return nil, last, nil
		}
	}
	return m, last, nil
}

// Close stops reading and releases the consumer.
func (rd *Reader) Close() {
	rd.done = true
	if rd.it != nil {
		rd.stop()
		rd.it.Stop()
	}
}

// ScenarioSource resolves a scenario by name.
func (r *Resolver) ScenarioSource(ctx context.Context, name string) (Source, error) {
	if r.scenarios == nil {
		return Source{}, fmt.Errorf("scenario %s: scenarios are not available: %w", name, ErrNotFound)
	}
	return r.scenarios.ScenarioSource(ctx, name)
}
