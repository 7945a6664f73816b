package coap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/options/config"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/tlsconf"
)

// protocolName is the envelope's Protocol and the metrics label.
const protocolName = "coap"

// Ingester is the shared ingest pipeline; *protocols.Ingest satisfies it.
type Ingester interface {
	// Accept checks and stores one message: when m.Reliable it returns only after JetStream
	// has it. A refused message is dead-lettered and a *protocols.Rejection returned.
	Accept(ctx context.Context, m protocols.Message) (*streams.Envelope, error)
	// DeadLetterAuth records refused credentials in the dead-letter stream.
	DeadLetterAuth(ctx context.Context, protocol, deviceID, topic, reason string)
}

// payloadLimiter is an optional capability of the Ingester (*protocols.Ingest has it): with it,
// a block-wise upload is refused with 4.13 as soon as it grows past the limit, instead of
// being buffered whole first.
type payloadLimiter interface {
	MaxPayload() int
}

// Subscriber is the live message feed; *streams.Bus satisfies it.
type Subscriber interface {
	// Subscribe delivers stored messages matching sub to fn, in stream order, on one
	// goroutine, until ctx ends.
	Subscribe(ctx context.Context, sub streams.Subscription, fn func(*streams.Envelope)) error
	// Last returns the newest message stored on topic, or nil when there is none.
	Last(ctx context.Context, topic string) (*streams.Envelope, error)
}

// Presence learns which devices are talking; it is told of every authenticated device
// request. It must not block.
type Presence interface {
	Seen(deviceID, protocol, remoteAddr string)
}

// PSKStore gives the DTLS pre-shared keys. When DTLS is on, the Authenticator passed to New
// must implement it too (the hub's does, from the device registry and the API key).
//
// A device's PSK is PSKFromToken(token): the hex SHA-256 of its token, in ASCII, which is
// what the registry stores (*devices.Registry has DevicePSK). The application identity
// "app" uses the API key itself.
type PSKStore interface {
	// DevicePSK returns the key of device id; ok is false for an unknown device.
	DevicePSK(id string) (psk []byte, ok bool)
	// AppPSK returns the key for PSK identity "app" (nil or empty: applications cannot use
	// DTLS).
	AppPSK() []byte
}

// Server is the CoAP adapter: a UDP listener, an optional DTLS listener, the observe registry
// and the fan-out from the streams to observers.
type Server struct {
	cfg        Config
	in         Ingester
	auth       protocols.Authenticator
	psk        PSKStore // nil without DTLS
	sub        Subscriber
	presence   Presence // may be nil
	log        *slog.Logger
	maxPayload int // 0: not known

	obs     *observers
	ready   chan struct{}
	running atomic.Bool

	// Optional capabilities of presence (rd.go), and the UDP server for pings (ping.go).
	tracker CommandTracker
	prov    Provisioner
	rd      *devices.Directory
	udp     atomic.Pointer[udpServer.Server]
	adm     Admission // nil: no admission control (admission.go)

	mu             sync.Mutex
	addr, dtlsAddr string

	// handshakes counts and logs failed DTLS handshakes (nil without DTLS).
	handshakes *tlsconf.HandshakeLogger

	// wg owns every goroutine the server starts besides Run's own: per-peer workers,
	// observers, periodic runners.
	wg sync.WaitGroup
}

// New checks cfg and builds the server; Run starts it. presence may be nil. With
// cfg.DTLSAddr set, auth must implement PSKStore.
func New(cfg Config, in Ingester, auth protocols.Authenticator, sub Subscriber, presence Presence, log *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case in == nil:
		return nil, errors.New("coap: no ingest pipeline")
	case auth == nil:
		return nil, errors.New("coap: no authenticator")
	case sub == nil:
		return nil, errors.New("coap: no subscriber")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		in:       in,
		auth:     auth,
		sub:      sub,
		presence: presence,
		log:      log.With("component", "coap"),
		obs:      newObservers(),
		ready:    make(chan struct{}),
	}
	if pl, ok := in.(payloadLimiter); ok {
		s.maxPayload = pl.MaxPayload()
	}
	s.tracker, _ = presence.(CommandTracker)
	s.prov, _ = presence.(Provisioner)
	if dp, ok := presence.(directoryProvider); ok {
		s.rd = dp.RD()
	}
	if cfg.DTLSAddr != "" {
		psk, ok := auth.(PSKStore)
		if !ok {
			return nil, fmt.Errorf("coap: coaps_addr is set but the authenticator (%T) has no DevicePSK/AppPSK for DTLS", auth)
		}
		s.psk = psk
		s.handshakes = tlsconf.NewHandshakeLogger("coaps", log)
	}
	return s, nil
}

// Ready is closed once the listeners are bound and the fan-out is set up.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the bound UDP address ("" before Ready).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// DTLSAddr is the bound DTLS address ("" before Ready or with DTLS off).
func (s *Server) DTLSAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dtlsAddr
}

// serverOption is what the go-coap options used here are for both server kinds.
type serverOption interface {
	udpServer.Option
	dtlsServer.Option
}

// Run binds the listeners, starts the fan-out from the streams, and serves until ctx ends;
// then it stops the listeners and waits for every goroutine it started. It returns an error
// when a listener cannot be bound or fails.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("coap: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Messages stored from now on reach observers even if they are stored before the
	// consumer exists.
	start := time.Now()

	l, err := coapnet.NewListenUDP("udp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("coap: listen on %s: %w", s.cfg.Addr, err)
	}
	defer l.Close()
	var dl *coapnet.DTLSListener
	if s.cfg.DTLSAddr != "" {
		dl, err = coapnet.NewDTLSListener("udp", s.cfg.DTLSAddr, s.dtlsOptions(ctx))
		if err != nil {
			return fmt.Errorf("coap: listen (DTLS) on %s: %w", s.cfg.DTLSAddr, err)
		}
		defer dl.Close()
	}
	s.mu.Lock()
	s.addr = l.LocalAddr().String()
	if dl != nil {
		s.dtlsAddr = dl.Addr().String()
	}
	s.mu.Unlock()

	errc := make(chan error, 2)
	failed := func(err error) {
		errc <- err
		cancel()
	}
	var wg sync.WaitGroup
	udpSrv := udp.NewServer(toOptions[udpServer.Option](s.options(ctx, false))...)
	s.udp.Store(udpSrv)
	wg.Go(func() {
		if err := udpSrv.Serve(l); err != nil {
			failed(fmt.Errorf("coap: serve udp: %w", err))
		}
	})
	var dtlsSrv *dtlsServer.Server
	if dl != nil {
		dtlsSrv = dtls.NewServer(toOptions[dtlsServer.Option](s.options(ctx, true))...)
		wg.Go(func() {
			if err := dtlsSrv.Serve(dl); err != nil {
				failed(fmt.Errorf("coap: serve dtls: %w", err))
			}
		})
	}
	wg.Go(func() { s.feed(ctx, start) })
	s.log.Info("coap listening", "addr", s.Addr(), "dtls_addr", s.DTLSAddr())
	close(s.ready)

	<-ctx.Done()
	udpSrv.Stop()
	if dtlsSrv != nil {
		dtlsSrv.Stop()
	}
	wg.Wait()
	s.wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// feed runs the fan-out subscription until ctx ends. Should the subscription fail, it is set
// up again after a pause, resuming after the last message delivered.
func (s *Server) feed(ctx context.Context, start time.Time) {
	var last uint64
	fn := func(env *streams.Envelope) {
		last = env.Seq
		s.fanOut(env)
	}
	for {
		sub := streams.Subscription{StartTime: start}
		if last > 0 {
			sub = streams.Subscription{StartSeq: last + 1}
		}
		err := s.sub.Subscribe(ctx, sub, fn)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("fan-out subscription ended; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func toOptions[T any](opts []serverOption) []T {
	out := make([]T, len(opts))
	for i, o := range opts {
		out[i] = any(o).(T)
	}
	return out
}

// options configures a go-coap server. ctx is Run's: it becomes every connection's parent
// context, so handlers derive their store deadlines from it.
func (s *Server) options(ctx context.Context, isDTLS bool) []serverOption {
	return []serverOption{
		options.WithContext(ctx),
		options.WithHandlerFunc(s.handle),
		options.WithErrors(s.coapError),
		options.WithPeriodicRunner(s.periodicRunner(ctx)),
		options.WithOnNewConn(func(cc *client.Conn) { s.onNewConn(ctx, cc, isDTLS) }),
		options.WithRequestMonitor(s.monitorRequest),
		options.WithProcessReceivedMessageFunc(config.ProcessReceivedMessageFunc[*client.Conn](s.enqueue)),
		options.WithInactivityMonitor(s.cfg.InactivityTimeout, s.onInactive),
	}
}

// tick is how often go-coap checks its timers: block-wise transfers, inactivity, retransmission
// of its own confirmable messages, and the expiry of its response cache (every response is
// kept EXCHANGE_LIFETIME, 247s, to answer retransmissions; the check walks all of them, so
// ticking fast costs CPU under load). Notifications keep their own timers.
const tick = 2 * time.Second

// periodicRunner replaces go-coap's default runner (a goroutine that sleeps 4s between runs
// and so outlives the server by up to 4s) with one owned by the server.
func (s *Server) periodicRunner(ctx context.Context) func(func(time.Time) bool) {
	return func(f func(time.Time) bool) {
		s.wg.Go(func() {
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					if !f(now) {
						return
					}
				}
			}
		})
	}
}

// coapError receives go-coap's errors: almost all are caused by peers (malformed datagrams,
// failed handshakes, vanished clients), so they are logged at debug level.
func (s *Server) coapError(err error) {
	if remote, ok := failedHandshake(err); ok && s.handshakes != nil {
		s.handshakes.Failed(remote, err)
		// A failed handshake is a failed login (an unknown PSK identity, a refused certificate),
		// throttled per source address like wrong tokens.
		if s.adm != nil {
			s.adm.Auth().Failed(protocolName, remote)
		}
		s.audit(context.Background(), audit.Event{Type: audit.TypeLogin, Outcome: audit.Failure, Protocol: "coaps",
			Source: remote, Reason: "DTLS handshake failed: " + handshakeReason(err)})
		return
	}
	s.log.Debug("coap", "err", err)
}

// failedHandshake recognises a failed DTLS handshake among go-coap's errors and finds the peer's
// address in it. go-coap reports it as "dtls: <remote address>: ...: handshake error: ...", and
// the error chain may be flattened to text on the way (when closing the connection fails too),
// so the text is what is read.
func failedHandshake(err error) (remote string, ok bool) {
	var he *piondtls.HandshakeError
	msg := err.Error()
	if !errors.As(err, &he) && !strings.Contains(msg, "handshake error: ") {
		return "", false
	}
	msg = strings.TrimPrefix(msg, "dtls: ")
	remote, _, _ = strings.Cut(msg, ": ")
	if _, _, err := net.SplitHostPort(remote); err != nil {
		return "", false
	}
	return remote, true
}

// handshakeReason is the part of a failed handshake's error after "handshake error: ".
func handshakeReason(err error) string {
	msg := err.Error()
	if _, reason, ok := strings.Cut(msg, "handshake error: "); ok {
		return strings.TrimSuffix(reason, "]")
	}
	return msg
}

// connState is the server's view of one peer (a UDP source address or a DTLS session).
type connState struct {
	cc     *client.Conn
	isDTLS bool
	in     chan queued
	// pings counts keep-alive pings sent since the peer was last heard from.
	pings atomic.Int32

	// Owned by the worker goroutine (handlers run there).
	ident   *dtlsIdentity // DTLS: established on the first request
	started []*observer   // registered by the current request, started after its response

	// notifyMu lets one notification at a time be outstanding to the peer (CoAP's NSTART=1
	// congestion rule, RFC 7641 §4.5.1).
	notifyMu sync.Mutex
	// replyCM is where replies to the peer go out from (the destination address and
	// interface of its last datagram), as go-coap does for responses.
	replyCM atomic.Pointer[coapnet.ControlMessage]

	mu       sync.Mutex
	inflight map[int32]chan message.Type // message ID of an unacknowledged notification → its answer
}

type queued struct {
	req     *pool.Message
	handler config.HandlerFunc[*client.Conn]
}

type stateKey struct{}

func stateOf(cc *client.Conn) *connState {
	cs, _ := cc.Context().Value(stateKey{}).(*connState)
	return cs
}

// onNewConn gives each peer a worker goroutine that handles its requests in order. go-coap
// would run handlers on the goroutine that feeds it the peer's datagrams, and when a handler
// waits for JetStream that goroutine stops, and with it, once a small queue is full, the UDP
// read loop of every peer.
func (s *Server) onNewConn(ctx context.Context, cc *client.Conn, isDTLS bool) {
	cs := &connState{cc: cc, isDTLS: isDTLS, in: make(chan queued, s.cfg.RequestQueue), inflight: map[int32]chan message.Type{}}
	cc.SetContextValue(stateKey{}, cs)
	s.wg.Go(func() { s.work(ctx, cs) })
}

// enqueue is go-coap's ProcessReceivedMessage hook: it hands the request to the peer's
// worker without blocking.
func (s *Server) enqueue(req *pool.Message, cc *client.Conn, h config.HandlerFunc[*client.Conn]) {
	cs := stateOf(cc)
	if cs == nil {
		cc.ProcessReceivedMessageWithHandler(req, h)
		return
	}
	select {
	case cs.in <- queued{req: req, handler: h}:
	default:
		metricRequestsDropped.Inc()
		cc.ReleaseMessage(req)
	}
}

func (s *Server) work(ctx context.Context, cs *connState) {
	defer s.obs.dropConn(cs)
	done := cs.cc.Context().Done()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case q := <-cs.in:
			if s.oversizedBlock(cs, q.req) {
				continue
			}
			h := q.handler
			if q.req.Type() == message.NonConfirmable {
				// go-coap answers a non-confirmable request with a confirmable response; RFC
				// 7252 §5.2.3 says it should be non-confirmable, which spares the peer an ACK.
				h = func(w writer, r *pool.Message) {
					q.handler(w, r)
					if w.Message().Type() == message.Confirmable {
						w.Message().SetType(message.NonConfirmable)
					}
				}
			}
			cs.cc.ProcessReceivedMessageWithHandler(q.req, h)
			// Observers registered by this request start only now, after the registration
			// response has been written, so no notification overtakes it.
			for _, o := range cs.started {
				s.wg.Go(func() { s.runObserver(ctx, o) })
			}
			cs.started = cs.started[:0]
		}
	}
}

// monitorRequest sees every message from a peer before go-coap handles it. It takes the
// ACKs and Resets answering notifications (see notify) out of go-coap's way.
func (s *Server) monitorRequest(cc *client.Conn, m *pool.Message) (drop bool, err error) {
	cs := stateOf(cc)
	if cs == nil {
		return false, nil
	}
	cs.pings.Store(0)
	if cm := m.ControlMessage(); cm != nil && len(cm.Dst) > 0 && !cm.Dst.IsMulticast() {
		if cur := cs.replyCM.Load(); cur == nil || cur.IfIndex != cm.IfIndex || !cur.Src.Equal(cm.Dst) {
			cs.replyCM.Store(&coapnet.ControlMessage{IfIndex: cm.IfIndex, Src: slices.Clone(cm.Dst)})
		}
	}
	if typ := m.Type(); typ == message.Acknowledgement || typ == message.Reset {
		mid := m.MessageID()
		cs.mu.Lock()
		answer, ok := cs.inflight[mid]
		delete(cs.inflight, mid)
		cs.mu.Unlock()
		if ok {
			answer <- typ // buffered
			if m.Code() != codes.Empty {
				// Not a bare ACK: go-coap's client, for one, piggybacks the GET for the next
				// block of a block-wise notification on it.
				return false, nil
			}
			cc.InactivityMonitor().Notify()
			return true, nil
		}
	}
	return false, nil
}

// onInactive is called by go-coap's inactivity monitor for a peer not heard from for
// InactivityTimeout. Without observers the peer is forgotten. With observers it is pinged (an
// empty confirmable message, which any CoAP endpoint answers), and forgotten when two pings
// in a row go unanswered.
func (s *Server) onInactive(cc *client.Conn) {
	cs := stateOf(cc)
	if cs == nil || !s.obs.hasConn(cs) || cs.pings.Load() >= 2 {
		_ = cc.Close()
		return
	}
	cs.pings.Add(1)
	cc.InactivityMonitor().Notify() // restart the timer; an answer resets pings
	if _, err := cc.AsyncPing(func() {}); err != nil {
		_ = cc.Close()
	}
}
