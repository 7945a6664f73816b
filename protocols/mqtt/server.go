package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

// Ingester is the ingest pipeline as the adapter uses it; *protocols.Ingest satisfies it.
type Ingester interface {
	// Accept checks and stores one message. With m.Reliable it returns only once JetStream has
	// the message. A refusal is a *protocols.Rejection (already dead-lettered); any other error
	// means the message was not stored and may be sent again.
	Accept(ctx context.Context, m protocols.Message) (*streams.Envelope, error)
	// DeadLetterAuth records a refused connection.
	DeadLetterAuth(ctx context.Context, protocol, deviceID, topic, reason string)
}

// payloadLimiter is optionally implemented by the Ingester (*protocols.Ingest does): its limit
// sets the default Config.MaxPacketSize.
type payloadLimiter interface{ MaxPayload() int }

// Subscriber delivers stored messages; *streams.Bus satisfies it. Subscribe calls fn for every
// message of the stream matching sub, in stream order, on one goroutine, until ctx ends, and
// returns nil then; it returns an error only when it cannot subscribe.
type Subscriber interface {
	Subscribe(ctx context.Context, sub streams.Subscription, fn func(*streams.Envelope)) error
}

// latestReader is optionally implemented by the Subscriber (*streams.Bus does): Run reads the
// newest desired states from it to restore retained messages after a restart.
type latestReader interface {
	Latest(ctx context.Context, filters []string, limit int, before uint64) (streams.Page, error)
}

// Presence is told when devices come and go (applications are not reported). Connected is
// called when a device's first connection is established and Disconnected when its last one
// ends, so a reconnect that takes over a session never reads as offline. Calls are made in
// order, under a lock, on MQTT client goroutines: they must return quickly and must not call
// back into the Server.
type Presence interface {
	Connected(deviceID, protocol, remoteAddr string)
	Disconnected(deviceID, protocol string)
}

// desiredFilter matches every device's desired state.
const desiredFilter = "devices/+/state/desired"

// Server is the MQTT broker of the hub: mochi-mqtt with hooks that authenticate against the
// device registry and API keys, send every PUBLISH through the ingest pipeline, and deliver
// to subscribers only what the stream holds.
type Server struct {
	cfg      Config
	in       Ingester
	auth     protocols.Authenticator
	sub      Subscriber
	presence Presence
	log      *slog.Logger

	broker *mochi.Server
	inline *mochi.Client // publishes the fan-out; its publishes skip ACL checks and ingest
	tcp    *tcpListener
	ws     *wsListener  // nil when WSAddr is ""
	tls    *tcpListener // MQTT over TLS; nil without TLSConfig or TLSAddr
	wss    *wsListener  // MQTT over secure WebSocket; nil without TLSConfig or WSSAddr

	started atomic.Bool
	ready   chan struct{}

	// authed holds clients between OnConnect (which checks their credentials) and
	// OnConnectAuthenticate (which mochi asks next).
	authed sync.Map // *mochi.Client → struct{}
	// apps holds application clients logged in with a scoped key (tenants.go).
	apps sync.Map // *mochi.Client → key ID

	// mu guards closing and storing: publishes being stored, so shutdown can let them finish
	// (stored and acked) before closing connections.
	mu      sync.Mutex
	closing bool
	storing map[*mochi.Client]struct{}
	pending sync.WaitGroup

	presenceMu sync.Mutex
	online     map[string]int // device ID → established connections

	// Optional capabilities of presence (devices.go).
	tracker  CommandTracker
	prov     Provisioner
	provKeys sync.Map // provisioning *mochi.Client → its key, until it claimed
	acks     commandAcks

	deliveries prometheus.Counter
	connected  prometheus.Gauge

	adm admissionState // admission.go
}

// New builds the server; Run starts it. presence may be nil.
func New(cfg Config, in Ingester, auth protocols.Authenticator, sub Subscriber, presence Presence, log *slog.Logger) (*Server, error) {
	switch {
	case in == nil:
		return nil, errors.New("mqtt: an Ingester is required")
	case auth == nil:
		return nil, errors.New("mqtt: an Authenticator is required")
	case sub == nil:
		return nil, errors.New("mqtt: a Subscriber is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "mqtt")
	maxPayload := 0
	if l, ok := in.(payloadLimiter); ok {
		maxPayload = l.MaxPayload()
	}
	cfg.setDefaults(maxPayload)
	if maxPayload > 0 && cfg.MaxPacketSize <= maxPayload {
		log.Warn("mqtt_max_packet_size is not above the ingest payload limit: oversized payloads close the connection instead of getting reason 0x95 and a dead letter",
			"mqtt_max_packet_size", cfg.MaxPacketSize, "max_payload", maxPayload)
	}

	s := &Server{
		cfg:        cfg,
		in:         in,
		auth:       auth,
		sub:        sub,
		presence:   presence,
		log:        log,
		ready:      make(chan struct{}),
		storing:    map[*mochi.Client]struct{}{},
		online:     map[string]int{},
		deliveries: protocols.Deliveries.WithLabelValues(protocolName),
		connected:  protocols.Connected.WithLabelValues(protocolName),
	}
	s.tracker, _ = presence.(CommandTracker)
	s.prov, _ = presence.(Provisioner)

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.MaximumClients = math.MaxInt64
	if cfg.MaxClients > 0 {
		caps.MaximumClients = int64(cfg.MaxClients)
	}
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	// No broker-imposed message expiry: a retained desired state must outlive mochi's default
	// of one day, and queued commands expire with their session. Publishers' own MQTT 5
	// expiry intervals are still honoured.
	caps.MaximumMessageExpiryInterval = 0
	s.broker = mochi.New(&mochi.Options{
		Capabilities:           caps,
		Logger:                 slog.New(minLevel{h: log.With("source", "mochi").Handler(), min: slog.LevelWarn}),
		SysTopicResendInterval: 10,
	})
	s.inline = s.broker.NewClient(nil, mochi.LocalListener, "tributary-fanout", true)
	if err := s.broker.AddHook(&hook{s: s}, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add hook: %w", err)
	}
	s.tcp = &tcpListener{id: "tcp", address: cfg.Addr, connectTimeout: cfg.ConnectTimeout, log: log}
	if cfg.WSAddr != "" {
		s.ws = &wsListener{id: "ws", address: cfg.WSAddr, connectTimeout: cfg.ConnectTimeout, log: log}
	}
	if cfg.TLSConfig != nil && cfg.TLSAddr != "" {
		s.tls = &tcpListener{id: "tls", address: cfg.TLSAddr, tlsConfig: cfg.TLSConfig, connectTimeout: cfg.ConnectTimeout, log: log}
	}
	if cfg.TLSConfig != nil && cfg.WSSAddr != "" {
		s.wss = &wsListener{id: "wss", address: cfg.WSSAddr, tlsConfig: cfg.TLSConfig, connectTimeout: cfg.ConnectTimeout, log: log}
	}
	return s, nil
}

// Ready is closed once the listeners accept connections and the fan-out runs: every message
// stored from then on reaches the local subscribers.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the TCP listener's bound address ("" before Ready).
func (s *Server) Addr() string {
	if !s.isReady() {
		return ""
	}
	return s.tcp.Address()
}

// WSAddr is the WebSocket listener's bound address ("" before Ready or when it is off).
func (s *Server) WSAddr() string {
	if s.ws == nil || !s.isReady() {
		return ""
	}
	return s.ws.Address()
}

// TLSAddr is the MQTT over TLS listener's bound address ("" before Ready or when it is off).
func (s *Server) TLSAddr() string {
	if s.tls == nil || !s.isReady() {
		return ""
	}
	return s.tls.Address()
}

// WSSAddr is the secure WebSocket listener's bound address ("" before Ready or when it is off).
func (s *Server) WSSAddr() string {
	if s.wss == nil || !s.isReady() {
		return ""
	}
	return s.wss.Address()
}

func (s *Server) isReady() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Run starts the listeners and the fan-out, blocks until ctx ends, then stops: it stops
// accepting connections, lets publishes being stored finish (up to Config.Timeout) so they are
// acknowledged, closes every connection and returns once all of the broker's goroutines have
// ended. It returns an error when a listener cannot bind or the fan-out cannot subscribe.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("mqtt: Run called twice")
	}
	// The fan-out delivers everything stored from now on, however long it takes to subscribe.
	start := time.Now()
	s.restoreRetained(ctx)

	if err := s.broker.AddListener(s.tcp); err != nil {
		s.broker.Close()
		return fmt.Errorf("mqtt: listen on %s: %w", s.cfg.Addr, err)
	}
	if s.ws != nil {
		if err := s.broker.AddListener(s.ws); err != nil {
			s.broker.Close()
			return fmt.Errorf("mqtt: websocket listen on %s: %w", s.cfg.WSAddr, err)
		}
	}
	if s.tls != nil {
		if err := s.broker.AddListener(s.tls); err != nil {
			s.broker.Close()
			return fmt.Errorf("mqtt: TLS listen on %s: %w", s.cfg.TLSAddr, err)
		}
	}
	if s.wss != nil {
		if err := s.broker.AddListener(s.wss); err != nil {
			s.broker.Close()
			return fmt.Errorf("mqtt: secure websocket listen on %s: %w", s.cfg.WSSAddr, err)
		}
	}
	if err := s.broker.Serve(); err != nil {
		s.broker.Close()
		return fmt.Errorf("mqtt: serve: %w", err)
	}

	fanCtx, stopFan := context.WithCancel(ctx)
	defer stopFan()
	fanDone := make(chan error, 1)
	go func() {
		fanDone <- s.sub.Subscribe(fanCtx, streams.Subscription{StartTime: start}, s.fanout)
	}()
	close(s.ready)
	s.log.Info("mqtt listening", "addr", s.Addr(), "ws_addr", s.WSAddr(), "tls_addr", s.TLSAddr(), "wss_addr", s.WSSAddr(), "max_packet_size", s.cfg.MaxPacketSize)

	var err error
	select {
	case <-ctx.Done():
		stopFan()
		<-fanDone // Subscribe returns nil once its context ends
	case err = <-fanDone:
		switch {
		case ctx.Err() != nil:
			err = nil // it ended because ctx did
		case err == nil:
			err = errors.New("mqtt: fan-out: subscription ended")
		default:
			err = fmt.Errorf("mqtt: fan-out: %w", err)
		}
	}
	s.shutdown()
	return err
}

// shutdown stops accepting, waits (bounded) for publishes being stored, then closes the broker.
func (s *Server) shutdown() {
	s.tcp.stopAccepting()
	if s.ws != nil {
		s.ws.stopAccepting()
	}
	if s.tls != nil {
		s.tls.stopAccepting()
	}
	if s.wss != nil {
		s.wss.stopAccepting()
	}
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() {
		s.pending.Wait()
		close(drained)
	}()
	timer := time.NewTimer(s.cfg.Timeout)
	select {
	case <-drained:
	case <-timer.C:
		s.log.Warn("closing connections with publishes still being stored; they will not be acknowledged")
	}
	timer.Stop()
	s.broker.Close() // disconnects every client and waits for their goroutines
	<-drained        // so no publish hook is running any more
	s.log.Info("mqtt stopped")
}

// beginStore registers a publish about to be stored; false when shutting down.
func (s *Server) beginStore(cl *mochi.Client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.storing[cl] = struct{}{}
	s.pending.Add(1)
	return true
}

// endStore marks the publish of cl as answered (its ack, if any, is written).
func (s *Server) endStore(cl *mochi.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.storing[cl]; ok {
		delete(s.storing, cl)
		s.pending.Done()
	}
}

// restoreRetained republishes the newest desired states from the stream before any client
// can connect, so they are retained again after a restart.
func (s *Server) restoreRetained(ctx context.Context) {
	lr, ok := s.sub.(latestReader)
	if !ok || s.cfg.RetainedRestore < 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	page, err := lr.Latest(rctx, []string{desiredFilter}, s.cfg.RetainedRestore, 0)
	if err != nil {
		s.log.Warn("retained desired states not restored", "err", err)
		return
	}
	for _, env := range page.Messages {
		s.fanout(env)
	}
	if n := len(page.Messages); n > 0 {
		s.log.Info("restored retained desired states", "messages", n)
	}
}

// fanout publishes one stored message to the local MQTT subscribers.
func (s *Server) fanout(env *streams.Envelope) {
	retain, qos := delivery(env)
	s.publish(env.Topic, env.Payload, env.ContentType, retain, qos)
}

// Publish delivers a message to the local MQTT subscribers of topic (retaining it when retain
// is set), without storing it and without ACL checks: the caller vouches for it. qos caps the
// QoS of the delivery (the lower of it and each subscription's). The fan-out uses it for every
// stored message.
func (s *Server) Publish(topic string, payload []byte, retain bool, qos byte) {
	s.publish(topic, payload, "", retain, qos)
}

func (s *Server) publish(topic string, payload []byte, contentType string, retain bool, qos byte) {
	if qos > 2 {
		qos = 2
	}
	err := s.broker.InjectPacket(s.inline, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // inline publishes are never acknowledged; validation wants an ID for QoS > 0
		Properties:  packets.Properties{ContentType: contentType},
	})
	if err != nil {
		s.log.Warn("not delivered to mqtt subscribers", "topic", topic, "err", err)
	}
}

// deviceUp and deviceDown count a device's connections and tell Presence about the first and
// the last.
func (s *Server) deviceUp(id, remote string) {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	s.online[id]++
	if s.online[id] == 1 && s.presence != nil {
		s.presence.Connected(id, protocolName, remote)
	}
}

func (s *Server) deviceDown(id string) {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	if s.online[id]--; s.online[id] > 0 {
		return
	}
	delete(s.online, id)
	if s.presence != nil {
		s.presence.Disconnected(id, protocolName)
	}
}
