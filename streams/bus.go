package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	// StreamMessages holds every message that carries a topic (subjects "iot.>"): device
	// traffic, hub-to-device messages, status events and rule results.
	StreamMessages = "IOT"
	// StreamDeadLetters holds rejected messages with the reason (subjects "deadletter.>").
	StreamDeadLetters = "DEADLETTERS"

	deadLetterPrefix = "deadletter"
)

// Config says where NATS is and how the hub's streams are set up.
type Config struct {
	// URL lists external NATS servers (comma-separated). Empty runs an embedded server.
	URL string `yaml:"nats_url" json:"nats_url"`
	// StoreDir is the embedded server's JetStream directory.
	StoreDir string `yaml:"store_dir" json:"store_dir"`
	// ListenAddr is the embedded server's client listener ("" accepts in-process connections only).
	ListenAddr string `yaml:"nats_addr" json:"nats_addr"`
	// ServerName names the embedded server (default "tributary").
	ServerName string `yaml:"server_name" json:"server_name"`
	// Retention is how long messages stay in the IOT stream (default 168h).
	Retention time.Duration `yaml:"retention" json:"retention"`
	// DeadLetterRetention is how long dead letters stay (default 720h).
	DeadLetterRetention time.Duration `yaml:"dead_letter_retention" json:"dead_letter_retention"`
	// DedupWindow is how long JetStream remembers message IDs (default 2m).
	DedupWindow time.Duration `yaml:"dedup_window" json:"dedup_window"`
	// Replicas per stream and KV bucket. 0: 3 when the external server is part of a cluster,
	// else 1 (embedded or a lone server).
	Replicas int `yaml:"replicas" json:"replicas"`
	// MaxPending bounds asynchronous publishes awaiting their store ack (default 4096).
	MaxPending int `yaml:"max_pending" json:"max_pending"`
	// MaxPayload is the largest message in bytes (default 1 MiB).
	MaxPayload int `yaml:"max_payload" json:"max_payload"`
}

func (c *Config) setDefaults() {
	if c.ServerName == "" {
		c.ServerName = "tributary"
	}
	if c.Retention == 0 {
		c.Retention = 168 * time.Hour
	}
	if c.DeadLetterRetention == 0 {
		c.DeadLetterRetention = 720 * time.Hour
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 2 * time.Minute
	}
	if c.MaxPending == 0 {
		c.MaxPending = 4096
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 1 << 20
	}
}

// Validate reports the first field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.URL == "" && c.StoreDir == "":
		return errors.New("streams: store_dir is required for the embedded server")
	case c.Retention < 0:
		return errors.New("streams: retention must not be negative")
	case c.DedupWindow < 0:
		return errors.New("streams: dedup_window must not be negative")
	case c.Replicas < 0 || c.Replicas > 5:
		return fmt.Errorf("streams: replicas %d out of range 1..5", c.Replicas)
	case c.MaxPending < 0:
		return errors.New("streams: max_pending must not be negative")
	}
	return nil
}

// Bus is the hub's connection to NATS JetStream: it owns the embedded server when there is one,
// the connection, and the hub's streams.
type Bus struct {
	cfg      Config
	log      *slog.Logger
	ns       *server.Server // nil with an external server
	nc       *nats.Conn
	js       jetstream.JetStream
	messages jetstream.Stream
	dead     jetstream.Stream
	// subNC carries live consumers (Subscribe); subMessages is the IOT stream through it.
	subNC       *nats.Conn
	subMessages jetstream.Stream
}

func (b *Bus) connect(name string) (*nats.Conn, error) {
	if b.ns != nil {
		return nats.Connect("", nats.InProcessServer(b.ns), nats.Name(name))
	}
	// Hubs and NATS nodes often start together (a Procfile, a host booting, pods scheduled at
	// once): wait up to connectWait for a server to listen rather than fail at once.
	for deadline := time.Now().Add(connectWait); ; {
		nc, err := nats.Connect(b.cfg.URL, nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					b.log.Warn("nats disconnected", "connection", name, "err", err)
				}
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				b.log.Info("nats reconnected", "connection", name, "url", nc.ConnectedUrlRedacted())
			}))
		if err == nil || !errors.Is(err, nats.ErrNoServers) || time.Now().After(deadline) {
			return nc, err
		}
		b.log.Warn("no nats server reachable yet; retrying", "url", b.cfg.URL, "connection", name)
		time.Sleep(500 * time.Millisecond) // a server that is starting needs a moment
	}
}

// connectWait is how long New waits for an external NATS server to accept connections.
var connectWait = 30 * time.Second

// New connects to NATS (starting the embedded server if no URL is given) and creates or updates
// the hub's streams.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, log: log.With("component", "streams")}
	var err error
	if cfg.URL == "" {
		if b.ns, err = startEmbedded(cfg, log); err != nil {
			return nil, err
		}
	}
	// Two connections: live consumers' deliveries do not queue behind publishes and their
	// acknowledgements, and each connection's read loop gets a core of its own.
	if b.nc, err = b.connect("tributary-hub"); err == nil {
		b.subNC, err = b.connect("tributary-hub-consumers")
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if b.cfg.Replicas == 0 {
		b.cfg.Replicas = 1
		if b.ns == nil && b.nc.ConnectedClusterName() != "" {
			b.cfg.Replicas = 3 // clustered: survive the loss of one node
		}
	}
	b.js, err = jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(10*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			metricAsyncFailed.Inc()
			b.log.Warn("asynchronous publish not stored", "subject", m.Subject, "err", err)
		}))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := b.setupStreams(ctx); err != nil {
		b.Close()
		return nil, err
	}
	subJS, err := jetstream.New(b.subNC)
	if err == nil {
		b.subMessages, err = subJS.Stream(ctx, StreamMessages)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if b.ns != nil && cfg.ListenAddr != "" {
		b.log.Info("embedded nats listening", "url", b.ns.ClientURL(), "store", cfg.StoreDir)
	}
	return b, nil
}

func (b *Bus) setupStreams(ctx context.Context) error {
	var err error
	b.messages, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:        StreamMessages,
		Description: "Device messages and everything else that carries a topic",
		Subjects:    []string{SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		MaxAge:      b.cfg.Retention,
		Duplicates:  b.cfg.DedupWindow,
		Replicas:    b.cfg.Replicas,
		MaxMsgSize:  int32(b.cfg.MaxPayload),
		AllowDirect: true,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return err
	}
	b.dead, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:        StreamDeadLetters,
		Description: "Rejected messages with the reason",
		Subjects:    []string{deadLetterPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		MaxAge:      b.cfg.DeadLetterRetention,
		Duplicates:  b.cfg.DedupWindow,
		Replicas:    b.cfg.Replicas,
		AllowDirect: true,
	})
	return err
}

// createStream creates or updates a stream (see OpenStream).
func (b *Bus) createStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return OpenStream(ctx, b.js, cfg)
}

// Conn is the NATS connection, for components that need core NATS or KV.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream context, for components that own streams, consumers or KV buckets.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Replicas is the replica count configured for streams and KV buckets.
func (b *Bus) Replicas() int { return b.cfg.Replicas }

// ClientURL is the embedded server's client URL ("" when external or in-process only).
func (b *Bus) ClientURL() string {
	if b.ns == nil || b.cfg.ListenAddr == "" {
		return ""
	}
	return b.ns.ClientURL()
}

// Ready reports whether the NATS connection is up.
func (b *Bus) Ready() error {
	if b.nc == nil || !b.nc.IsConnected() || b.subNC == nil || !b.subNC.IsConnected() {
		return errors.New("nats: not connected")
	}
	return nil
}

// Publish stores env in the IOT stream and returns its stream sequence once JetStream has
// acknowledged it. A repeated env.ID within the dedup window is stored once.
func (b *Bus) Publish(ctx context.Context, env *Envelope) (uint64, error) {
	msg, err := env.ToMsg()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	ack, err := b.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	metricPublishSeconds.Observe(time.Since(start).Seconds())
	if !ack.Duplicate {
		metricStored.Inc()
	}
	return ack.Sequence, nil
}

// PublishAsync sends env without waiting for the store ack. At most Config.MaxPending publishes
// are outstanding: beyond that it blocks (back-pressure), and it fails once JetStream has been
// stalled for too long. Store failures are counted and logged.
func (b *Bus) PublishAsync(env *Envelope) error {
	msg, err := env.ToMsg()
	if err != nil {
		return err
	}
	if _, err := b.js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second)); err != nil {
		return fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	metricStored.Inc()
	return nil
}

// DeadLetter stores env with the reason it was rejected. The original topic is kept in a header
// (the topic may not even be valid) and the subject is "deadletter.<device>".
func (b *Bus) DeadLetter(ctx context.Context, env *Envelope, reason string) error {
	dev := env.DeviceID
	if dev == "" {
		dev = "_unknown"
	}
	msg := env.toMsg(deadLetterPrefix + "." + EscapeToken(dev))
	msg.Header.Del(HeaderMsgID) // the same message may be rejected twice for different reasons
	msg.Header.Set(HeaderTopic, env.Topic)
	msg.Header.Set(headerMetaPrefix+MetaReason, reason)
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("dead-letter %s: %w", env.Topic, err)
	}
	return nil
}

// MetaReason is the Meta key holding a dead letter's reason.
const MetaReason = "reason"

// Subscription says which messages a live subscriber wants.
type Subscription struct {
	// Filters are MQTT-style topic filters; empty means all topics.
	Filters []string
	// StartSeq resumes after a known point: delivery starts at this stream sequence.
	// Zero delivers only messages stored from now on.
	StartSeq uint64
	// StartTime, if set and StartSeq is zero, delivers from this time on.
	StartTime time.Time
}

// Subscribe delivers messages of the IOT stream matching sub to fn, in stream order, until ctx
// ends. fn runs on one goroutine; a slow fn slows only this subscription. It uses an ordered
// consumer, so every instance of the hub delivers every message to its own local subscribers.
func (b *Bus) Subscribe(ctx context.Context, sub Subscription, fn func(*Envelope)) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy, InactiveThreshold: 30 * time.Second}
	if err := setFilters(&cfg.FilterSubjects, sub.Filters); err != nil {
		return err
	}
	switch {
	case sub.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, sub.StartSeq
	case !sub.StartTime.IsZero():
		t := sub.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := b.subMessages.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("subscribe %v: %w", sub.Filters, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		env, err := envelopeFromJS(m)
		if err != nil {
			b.log.Warn("undecodable message in stream", "subject", m.Subject(), "err", err)
			return
		}
		if !MatchesAny(sub.Filters, env.Topic) {
			return // e.g. "a/#" maps to "a" and "a.>" subjects; the exact MQTT rule decides
		}
		fn(env)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			b.log.Debug("live consumer", "err", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("subscribe %v: %w", sub.Filters, err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}

// SubjectFilters maps MQTT-style filters to JetStream filter subjects of the IOT stream: "a/#"
// also yields "a" (MQTT's "#" matches the parent level), and subjects covered by another are
// dropped, as JetStream refuses overlapping filters.
func SubjectFilters(filters []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range filters {
		subj, err := FilterToSubject(f)
		if err != nil {
			return nil, err
		}
		subs := []string{subj}
		if parent, ok := strings.CutSuffix(subj, ".>"); ok && parent != SubjectPrefix {
			subs = append(subs, parent) // MQTT "a/#" matches "a" too
		}
		for _, s := range subs {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return dedupeOverlapping(out), nil
}

func setFilters(dst *[]string, filters []string) error {
	subs, err := SubjectFilters(filters)
	if err != nil {
		return err
	}
	*dst = append(*dst, subs...)
	return nil
}

// dedupeOverlapping drops subject filters covered by another one in the list: JetStream rejects
// overlapping filter subjects.
func dedupeOverlapping(subjects []string) []string {
	out := subjects[:0:0]
	for i, s := range subjects {
		covered := false
		for j, o := range subjects {
			if i != j && subjectCovers(o, s) && (!subjectCovers(s, o) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, s)
		}
	}
	return out
}

// subjectCovers reports whether NATS filter a matches everything filter b matches.
func subjectCovers(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, tok := range at {
		if tok == ">" {
			return len(bt) > i
		}
		if i >= len(bt) {
			return false
		}
		if tok != "*" && tok != bt[i] || tok == "*" && bt[i] == ">" {
			return false
		}
	}
	return len(at) == len(bt)
}

// MatchesAny reports whether topic matches one of the MQTT filters; no filters match everything.
func MatchesAny(filters []string, topic string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if MatchTopic(f, topic) {
			return true
		}
	}
	return false
}

func envelopeFromJS(m jetstream.Msg) (*Envelope, error) {
	env, err := FromMsg(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		return nil, err
	}
	if md, err := m.Metadata(); err == nil {
		env.Seq = md.Sequence.Stream
	}
	return env, nil
}

// Close drains the connection and shuts the embedded server down.
func (b *Bus) Close() {
	if b.nc != nil {
		if b.js != nil {
			select {
			case <-b.js.PublishAsyncComplete():
			case <-time.After(5 * time.Second):
				b.log.Warn("closing with asynchronous publishes still unacknowledged", "pending", b.js.PublishAsyncPending())
			}
		}
		b.nc.Close()
	}
	if b.subNC != nil {
		b.subNC.Close()
	}
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
	}
}
