package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

// observer is one observation (RFC 7641): a peer, its request token and a topic. Its own
// goroutine sends the notifications from a bounded queue, so a slow or vanished peer never
// holds up the fan-out or other observers.
type observer struct {
	cs     *connState
	device string // the device observing ("" for an application)
	key    string // the application's scoped API key ID ("" for the admin key or a device)
	token  string // the request token's bytes
	topic  string
	queue  chan *streams.Envelope
	done   chan struct{} // closed when the observation ends

	// after skips envelopes already represented in the registration response (stream
	// sequence ≤ after), set by the handler before the goroutine starts. seq is the last
	// Observe value sent.
	after uint64
	seq   atomic.Uint32
}

// nextSeq returns the next Observe option value: 24 bits, increasing modulo 2^24.
func (o *observer) nextSeq() uint32 {
	return o.seq.Add(1) & 0xFFFFFF
}

// observers is the registry: observations by topic (for the fan-out) and by peer and token.
type observers struct {
	mu      sync.RWMutex
	byTopic map[string]map[*observer]struct{}
	byConn  map[*connState]map[string]*observer
	n       int
}

func newObservers() *observers {
	return &observers{byTopic: map[string]map[*observer]struct{}{}, byConn: map[*connState]map[string]*observer{}}
}

// add registers o, replacing an observation of the same peer and token (a re-registration:
// the Observe sequence carries on, so the client does not take new notifications for stale
// ones). It refuses when a limit is reached.
func (r *observers) add(o *observer, maxTotal, maxPerPeer int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	peer := r.byConn[o.cs]
	if old := peer[o.token]; old != nil {
		// +2: old may still be sending one notification.
		o.seq.Store(old.seq.Load() + 2)
		r.removeLocked(old)
		peer = r.byConn[o.cs]
	}
	if r.n >= maxTotal || len(peer) >= maxPerPeer {
		return false
	}
	if peer == nil {
		peer = map[string]*observer{}
		r.byConn[o.cs] = peer
	}
	peer[o.token] = o
	t := r.byTopic[o.topic]
	if t == nil {
		t = map[*observer]struct{}{}
		r.byTopic[o.topic] = t
	}
	t[o] = struct{}{}
	r.n++
	protocols.Connected.WithLabelValues(protocolName).Inc()
	return true
}

// remove ends o; removing twice is harmless.
func (r *observers) remove(o *observer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(o)
}

func (r *observers) removeLocked(o *observer) {
	peer := r.byConn[o.cs]
	if peer[o.token] != o {
		return
	}
	delete(peer, o.token)
	if len(peer) == 0 {
		delete(r.byConn, o.cs)
	}
	t := r.byTopic[o.topic]
	delete(t, o)
	if len(t) == 0 {
		delete(r.byTopic, o.topic)
	}
	r.n--
	protocols.Connected.WithLabelValues(protocolName).Dec()
	close(o.done)
}

// removeToken ends the observation of cs with token (a GET with Observe=1).
func (r *observers) removeToken(cs *connState, token string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.byConn[cs][token]; o != nil {
		r.removeLocked(o)
	}
}

// dropConn ends every observation of a peer that is gone.
func (r *observers) dropConn(cs *connState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.byConn[cs] {
		r.removeLocked(o)
	}
}

func (r *observers) hasConn(cs *connState) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byConn[cs]) > 0
}

func (r *observers) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// fanOut is the Subscriber callback: it queues env for every observer of its topic. It never
// blocks: when an observer's queue is full its oldest notification is dropped, which RFC 7641
// §4.5.2 allows (a client is owed the latest state, not every intermediate one).
func (s *Server) fanOut(env *streams.Envelope) {
	s.obs.mu.RLock()
	defer s.obs.mu.RUnlock()
	for o := range s.obs.byTopic[env.Topic] {
		select {
		case o.queue <- env:
			continue
		default:
		}
		select {
		case <-o.queue:
			metricNotifyDropped.WithLabelValues("queue_full").Inc()
		default:
		}
		select {
		case o.queue <- env:
		default:
			metricNotifyDropped.WithLabelValues("queue_full").Inc()
		}
	}
}

// runObserver sends o's notifications until the observation ends.
func (s *Server) runObserver(ctx context.Context, o *observer) {
	closed := o.cs.cc.Context().Done()
	for {
		select {
		case <-o.done:
			return
		case <-ctx.Done():
			return
		case <-closed:
			s.obs.remove(o)
			return
		case env := <-o.queue:
			if env.Seq != 0 && env.Seq <= o.after {
				continue
			}
			if !s.keyCurrent(o.key) {
				s.obs.remove(o) // the key was revoked or expired
				return
			}
			switch err := s.notify(ctx, o, env); {
			case err == nil:
			case errors.Is(err, errReset):
				s.log.Debug("observation cancelled by Reset", "remote", o.cs.cc.RemoteAddr().String(), "topic", o.topic)
				s.obs.remove(o)
				return
			case errors.Is(err, errObserverDone), ctx.Err() != nil:
				return
			default:
				metricNotifyDropped.WithLabelValues("unacknowledged").Inc()
				s.log.Debug("observer dropped", "remote", o.cs.cc.RemoteAddr().String(), "topic", o.topic, "err", err)
				s.obs.remove(o)
				return
			}
			protocols.Deliveries.WithLabelValues(protocolName).Inc()
			s.notified(o, env.Payload)
		}
	}
}

// CoAP transmission parameters (RFC 7252 §4.8) for notifications.
const (
	ackTimeout      = 2 * time.Second
	ackRandomFactor = 1.5
	maxRetransmit   = 4
	notifyBlockSize = 1024 // larger payloads go block-wise (RFC 7959 §2.6)
	notifyBlockSZX  = blockwise.SZX1024
)

var (
	errReset        = errors.New("notification answered with Reset")
	errUnacked      = errors.New("notification not acknowledged")
	errObserverDone = errors.New("observation ended")
)

// notify sends one confirmable notification and waits for its ACK, retransmitting as RFC 7252
// §4.2 says. It does the confirmable exchange itself instead of leaving it to go-coap's
// WriteMessage, because only so it knows the message ID and can tell an ACK from a Reset,
// which cancels the observation (RFC 7641 §3.6).
func (s *Server) notify(ctx context.Context, o *observer, env *streams.Envelope) error {
	cs := o.cs
	cc := cs.cc
	cs.notifyMu.Lock()
	defer cs.notifyMu.Unlock()

	m := cc.AcquireMessage(ctx)
	defer cc.ReleaseMessage(m)
	m.SetCode(codes.Content)
	m.SetToken(message.Token(o.token))
	m.SetType(message.Confirmable)
	m.SetObserve(o.nextSeq())
	if cf, ok := payload.CoAPFormat(env.ContentType); ok {
		m.SetContentFormat(message.MediaType(cf))
	}
	if env.Seq > 0 {
		m.SetOptionBytes(message.ETag, etag(env.Seq))
	}
	body := env.Payload
	if len(body) > notifyBlockSize {
		// The first block; the client GETs the rest (RFC 7959 §2.6).
		block, _ := blockwise.EncodeBlockOption(notifyBlockSZX, 0, true)
		m.SetOptionUint32(message.Block2, block)
		m.SetOptionUint32(message.Size2, uint32(len(body)))
		body = body[:notifyBlockSize]
	}
	if len(body) > 0 {
		m.SetBody(bytes.NewReader(body))
	}
	if cm := cs.replyCM.Load(); cm != nil {
		m.SetControlMessage(cm)
	}
	mid := cc.GetMessageID()
	m.SetMessageID(mid)
	answer := make(chan message.Type, 1)
	cs.mu.Lock()
	cs.inflight[mid] = answer
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		delete(cs.inflight, mid)
		cs.mu.Unlock()
	}()

	deadline := time.Now().Add(s.cfg.NotifyTimeout)
	timeout := time.Duration(float64(ackTimeout) * (1 + rand.Float64()*(ackRandomFactor-1)))
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for attempt := 0; ; attempt++ {
		if err := cc.Session().WriteMessage(m); err != nil {
			return fmt.Errorf("send notification: %w", err)
		}
		timer.Reset(min(timeout, time.Until(deadline)))
		select {
		case typ := <-answer:
			if typ == message.Reset {
				return errReset
			}
			return nil
		case <-timer.C:
		case <-o.done:
			return errObserverDone
		case <-ctx.Done():
			return ctx.Err()
		case <-cc.Context().Done():
			return errObserverDone
		}
		if attempt >= maxRetransmit || !time.Now().Before(deadline) {
			return errUnacked
		}
		timeout *= 2
	}
}
