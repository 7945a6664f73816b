package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

var (
	metricWSClients   = protocols.Connected.WithLabelValues("ws")
	metricWSDelivered = protocols.Deliveries.WithLabelValues("ws")
)

const (
	// maxWSSubscriptions is how many topic filters one WebSocket connection may hold at once.
	maxWSSubscriptions = 32
	// maxWSRequest is the largest client message accepted.
	maxWSRequest = 16 << 10
)

// wsRequest is what a WebSocket client sends:
//
//	{"op":"subscribe","topic":"devices/+/telemetry","fields":["temperature"],"since":41}
//	{"op":"unsubscribe","topic":"devices/+/telemetry"}
//
// since (optional) resumes after that stream sequence; without it delivery starts when the
// subscription is made. Subscribing again to the same topic replaces the subscription.
type wsRequest struct {
	Op     string   `json:"op"`
	Topic  string   `json:"topic"`
	Fields []string `json:"fields,omitempty"`
	Since  *uint64  `json:"since,omitempty"`
}

// wsReply is a control message from the server: "subscribed", "unsubscribed", "skipped" and
// "error".
type wsReply struct {
	Type  string `json:"type"`
	Topic string `json:"topic,omitempty"`
	Error string `json:"error,omitempty"`
	*skipInfo
}

// wsMessage is a delivered message: the Message fields plus the type and the subscription's
// topic filter that matched.
type wsMessage struct {
	Type         string `json:"type"`
	Subscription string `json:"subscription"`
	Message
}

// wsSub is one subscription of a connection.
type wsSub struct {
	filter string
	proj   *projection
	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
}

// wsConn is one WebSocket client.
type wsConn struct {
	s     *Server
	conn  *websocket.Conn
	queue *liveQueue
	ctx   context.Context
	// cancel ends the connection (a revoked key's stream).
	cancel context.CancelFunc
	mu     sync.Mutex
	subs   map[string]*wsSub
}

// websocket serves GET /api/v1/ws. Clients may also subscribe in the URL, with topic=, fields=
// and since= as for the SSE endpoint. Server messages are JSON text frames:
//
//	{"type":"message","subscription":"<filter>", ...the Message fields (seq, topic, payload, ...)}
//	{"type":"subscribed","topic":"<filter>"}  {"type":"unsubscribed","topic":"<filter>"}
//	{"type":"skipped","skipped":N,"first_seq":a,"last_seq":b}
//	{"type":"error","topic":"<filter>","error":"<reason>"}
func (s *Server) websocket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var initial *liveParams
	if len(q["topic"]) > 0 {
		p, err := parseLive(q["topic"], q["fields"], q.Get("since"), time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		initial = &p
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	conn.SetReadLimit(maxWSRequest)
	metricWSClients.Inc()
	defer metricWSClients.Dec()
	ctx, cancel := s.liveContext(r)
	defer cancel()
	c := &wsConn{s: s, conn: conn, queue: newLiveQueue(), ctx: ctx, cancel: cancel, subs: map[string]*wsSub{}}
	defer c.unsubscribeAll()
	if initial != nil {
		for _, f := range initial.sub.Filters {
			sub := initial.sub
			sub.Filters = []string{f}
			c.subscribe(f, initial.proj, sub)
		}
	}
	readErr := make(chan error, 1)
	go func() { readErr <- c.readLoop() }()
	err = c.writeLoop(readErr)
	var ce websocket.CloseError
	switch {
	case err == nil, errors.As(err, &ce), ctx.Err() != nil:
		conn.Close(websocket.StatusNormalClosure, "")
	case errors.Is(err, context.DeadlineExceeded):
		conn.Close(websocket.StatusPolicyViolation, "client too slow")
	default:
		conn.Close(websocket.StatusInternalError, "")
	}
	cancel()
	<-readErr
}

// readLoop handles client requests until the connection ends.
func (c *wsConn) readLoop() error {
	for {
		typ, data, err := c.conn.Read(c.ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			c.reply(wsReply{Type: "error", Error: "want JSON text messages"})
			continue
		}
		var req wsRequest
		if err := json.Unmarshal(data, &req); err != nil {
			c.reply(wsReply{Type: "error", Error: "not a JSON request: " + err.Error()})
			continue
		}
		switch req.Op {
		case "subscribe":
			last := ""
			if req.Since != nil {
				last = strconv.FormatUint(*req.Since, 10)
			}
			p, err := parseLive([]string{req.Topic}, req.Fields, last, time.Now())
			if req.Topic == "" {
				err = errors.New("topic: want an MQTT-style topic filter")
			}
			if err != nil {
				c.reply(wsReply{Type: "error", Topic: req.Topic, Error: err.Error()})
				continue
			}
			c.subscribe(req.Topic, p.proj, p.sub)
		case "unsubscribe":
			if !c.unsubscribe(req.Topic) {
				c.reply(wsReply{Type: "error", Topic: req.Topic, Error: "not subscribed"})
				continue
			}
			c.reply(wsReply{Type: "unsubscribed", Topic: req.Topic})
		default:
			c.reply(wsReply{Type: "error", Error: "op: want subscribe or unsubscribe, got " + strconv.Quote(req.Op)})
		}
	}
}

// subscribe starts (or replaces) the subscription for filter. The reply is written before the
// consumer starts, so nothing of it can precede "subscribed"; since the subscription starts at
// the time of the request (or a sequence), nothing published after the reply is missed.
func (c *wsConn) subscribe(filter string, proj *projection, sub streams.Subscription) {
	c.unsubscribe(filter)
	c.mu.Lock()
	if len(c.subs) >= maxWSSubscriptions {
		c.mu.Unlock()
		c.reply(wsReply{Type: "error", Topic: filter, Error: "too many subscriptions on this connection (at most " + strconv.Itoa(maxWSSubscriptions) + ")"})
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	ws := &wsSub{filter: filter, proj: proj, cancel: cancel, done: make(chan struct{})}
	c.subs[filter] = ws
	c.mu.Unlock()
	if !c.reply(wsReply{Type: "subscribed", Topic: filter}) {
		cancel()
		close(ws.done)
		return
	}
	go func() {
		defer close(ws.done)
		allow := c.s.liveFilter(c.ctx, c.cancel)
		err := c.s.deps.Messages.Subscribe(ctx, sub, func(e *streams.Envelope) {
			if allow(e) {
				c.queue.push(e, ws)
			}
		})
		if err != nil && ctx.Err() == nil {
			c.s.log.Warn("live subscription", "filter", filter, "err", err)
			ws.closed.Store(true)
			c.mu.Lock()
			if c.subs[filter] == ws {
				delete(c.subs, filter)
			}
			c.mu.Unlock()
			c.reply(wsReply{Type: "error", Topic: filter, Error: err.Error()})
		}
	}()
}

// unsubscribe ends the subscription for filter; false if there was none.
func (c *wsConn) unsubscribe(filter string) bool {
	c.mu.Lock()
	ws := c.subs[filter]
	delete(c.subs, filter)
	c.mu.Unlock()
	if ws == nil {
		return false
	}
	ws.closed.Store(true)
	ws.cancel()
	<-ws.done
	return true
}

func (c *wsConn) unsubscribeAll() {
	c.mu.Lock()
	filters := make([]string, 0, len(c.subs))
	for f := range c.subs {
		filters = append(filters, f)
	}
	c.mu.Unlock()
	for _, f := range filters {
		c.unsubscribe(f)
	}
}

// reply writes a control message; false when the connection failed.
func (c *wsConn) reply(r wsReply) bool {
	data, _ := json.Marshal(r)
	return c.write(data) == nil
}

func (c *wsConn) write(data []byte) error {
	ctx, cancel := context.WithTimeout(c.ctx, liveWriteTimeout)
	defer cancel()
	return c.conn.Write(ctx, websocket.MessageText, data)
}

// writeLoop delivers queued messages until the connection or the reader ends.
func (c *wsConn) writeLoop(readErr chan error) error {
	keepAlive := time.NewTicker(liveKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return nil
		case err := <-readErr:
			readErr <- err // for the caller's receive
			return err
		case <-keepAlive.C:
			ctx, cancel := context.WithTimeout(c.ctx, liveWriteTimeout)
			err := c.conn.Ping(ctx)
			cancel()
			if err != nil {
				return err
			}
		case <-c.queue.notify:
			items, skip := c.queue.take()
			for _, it := range items {
				if it.sub.closed.Load() {
					continue // unsubscribed after it was queued
				}
				m, ok := it.sub.proj.message(it.env)
				if !ok {
					continue
				}
				data, _ := json.Marshal(wsMessage{Type: "message", Subscription: it.sub.filter, Message: m})
				if err := c.write(data); err != nil {
					return err
				}
				metricWSDelivered.Inc()
			}
			if skip.Skipped > 0 { // skipped messages are newer than every queued one
				if !c.reply(wsReply{Type: "skipped", skipInfo: &skip}) {
					return context.DeadlineExceeded
				}
			}
		}
	}
}
