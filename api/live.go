package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/streams"
)

// Live subscribers (SSE and WebSocket) share one rule for slow consumers: each connection has a
// bounded buffer between the stream consumer and the client's socket. When it is full, newer
// messages are skipped for that client only (the stream consumer never waits on a client, so no
// other subscriber is stalled), and before the next message it does get, the client is sent a
// "skipped" event with how many were skipped and the range of their sequences. A client that
// takes no data for liveWriteTimeout is disconnected.
const (
	// liveBufferMessages is how many messages a live subscriber may fall behind.
	liveBufferMessages = 1024
	// liveBufferBytes caps the payload bytes held for one live subscriber; at least one message
	// is always held, so a single large message is never skipped for its size alone.
	liveBufferBytes = 4 << 20
	// liveWriteTimeout is how long one write to a live client may block before the connection is
	// closed.
	liveWriteTimeout = 30 * time.Second
	// liveKeepAlive is how often an idle live connection gets a comment (SSE) or ping (WebSocket).
	liveKeepAlive = 15 * time.Second
	// maxProjectedFields limits fields= to this many names.
	maxProjectedFields = 64
)

// liveItem is one queued delivery; sub is the WebSocket subscription it belongs to (nil for SSE).
type liveItem struct {
	env *streams.Envelope
	sub *wsSub
}

// skipInfo says what was skipped since the last take: how many, and their first and last stream
// sequences (a client may reconnect with since=first-1 to fetch them, within retention).
type skipInfo struct {
	Skipped  int    `json:"skipped"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// liveQueue decouples a live client from the stream consumers feeding it: push never blocks,
// memory is bounded by liveBufferMessages and liveBufferBytes, and what is dropped is counted
// for the client to see.
type liveQueue struct {
	mu     sync.Mutex
	items  []liveItem
	bytes  int
	skip   skipInfo
	notify chan struct{}
}

func newLiveQueue() *liveQueue { return &liveQueue{notify: make(chan struct{}, 1)} }

func (q *liveQueue) push(e *streams.Envelope, sub *wsSub) {
	q.mu.Lock()
	if len(q.items) > 0 && (len(q.items) >= liveBufferMessages || q.bytes+len(e.Payload) > liveBufferBytes) {
		if q.skip.Skipped == 0 {
			q.skip.FirstSeq = e.Seq
		}
		q.skip.Skipped++
		q.skip.LastSeq = e.Seq
		metricLiveSkipped.Inc()
	} else {
		q.items = append(q.items, liveItem{env: e, sub: sub})
		q.bytes += len(e.Payload)
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take returns what is queued and what was skipped since the last take. Messages are skipped
// only while the queue is full, so every skipped message is newer than every returned one.
func (q *liveQueue) take() ([]liveItem, skipInfo) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, skip := q.items, q.skip
	q.items, q.bytes, q.skip = nil, 0, skipInfo{}
	return items, skip
}

// projection is a parsed fields= list: the payload is decoded as telemetry (JSON object with
// nested objects flattened to dotted names, or SenML JSON/CBOR) and replaced by a JSON object of
// just these fields. all ("*") keeps every field, flattened.
type projection struct {
	all    bool
	fields []string
}

// parseFields reads fields=a,b (comma-separated, repeatable); nil when none are asked for.
func parseFields(values []string) (*projection, error) {
	var names []string
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				names = append(names, f)
			}
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	p := &projection{}
	for _, f := range names {
		switch {
		case f == "*":
			p.all = true
		case len(f) > payload.MaxFieldName:
			return nil, fmt.Errorf("field name longer than %d bytes", payload.MaxFieldName)
		case !slices.Contains(p.fields, f):
			p.fields = append(p.fields, f)
		}
	}
	if len(p.fields) > maxProjectedFields {
		return nil, fmt.Errorf("at most %d fields, got %d", maxProjectedFields, len(p.fields))
	}
	return p, nil
}

// message converts e for a live client. With a projection it reports false when the message
// carries none of the requested fields (or is not telemetry), and it is then not sent.
func (p *projection) message(e *streams.Envelope) (Message, bool) {
	m := NewMessage(e)
	if p == nil {
		return m, true
	}
	ms, err := payload.DecodeTelemetry(e.ContentType, e.Payload)
	if err != nil {
		return m, false
	}
	out := map[string]any{}
	for _, meas := range ms { // SenML packs: a later record of a field wins
		for k, v := range meas.Fields {
			if p.all || slices.Contains(p.fields, k) {
				out[k] = v
			}
		}
	}
	if len(out) == 0 {
		return m, false
	}
	m.Payload, _ = json.Marshal(out)
	m.PayloadBase64 = nil
	m.ContentType = "application/json"
	return m, true
}

// liveParams are what a live request asks for.
type liveParams struct {
	sub  streams.Subscription
	proj *projection
}

// parseLive reads topic= (repeatable MQTT-style filters, default "#"), fields= and the resume
// point: last (Last-Event-ID or since=, a stream sequence) resumes right after it; without one,
// delivery starts at the time of the request, so whatever is published after the client has its
// answer is delivered.
func parseLive(filters, fields []string, last string, now time.Time) (liveParams, error) {
	if len(filters) == 0 {
		filters = []string{"#"}
	}
	for _, f := range filters {
		if err := streams.ValidFilter(f); err != nil {
			return liveParams{}, fmt.Errorf("topic %q: %v", f, err)
		}
	}
	proj, err := parseFields(fields)
	if err != nil {
		return liveParams{}, fmt.Errorf("fields: %v", err)
	}
	p := liveParams{sub: streams.Subscription{Filters: filters, StartTime: now}, proj: proj}
	if last != "" {
		n, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			return liveParams{}, fmt.Errorf("want a message sequence to resume after, got %q", last)
		}
		p.sub.StartSeq, p.sub.StartTime = n+1, time.Time{}
	}
	return p, nil
}

// stream serves GET /api/v1/stream?topic=<filter>[&topic=...][&fields=a,b][&since=<seq>] as
// Server-Sent Events:
//
//	id: <seq>            event: message   data: <Message JSON>
//	                     event: skipped   data: {"skipped":N,"first_seq":a,"last_seq":b}
//	                     event: error     data: "<reason>"
//
// The id is the stream sequence; a client reconnecting with Last-Event-ID (EventSource does so by
// itself) or ?since=<seq> gets every matching message after it, with no gap, within retention.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("since")
	}
	p, err := parseLive(q["topic"], q["fields"], last, time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	if err := rc.Flush(); err != nil {
		return
	}

	metricLiveClients.Inc()
	defer metricLiveClients.Dec()
	ctx, cancel := s.liveContext(r)
	defer cancel()
	queue := newLiveQueue()
	subErr := make(chan error, 1)
	go func() {
		allow := s.liveFilter(ctx, cancel)
		subErr <- s.deps.Messages.Subscribe(ctx, p.sub, func(e *streams.Envelope) {
			if allow(e) {
				queue.push(e, nil)
			}
		})
	}()
	defer func() { cancel(); <-subErr }()
	keepAlive := time.NewTicker(liveKeepAlive)
	defer keepAlive.Stop()
	var buf []byte
	for {
		buf = buf[:0]
		select {
		case <-ctx.Done():
			return
		case err := <-subErr:
			subErr <- err // for the deferred receive
			if err != nil && ctx.Err() == nil {
				s.log.Warn("live subscription", "filters", p.sub.Filters, "err", err)
				buf = fmt.Appendf(buf, "event: error\ndata: %s\n\n", jsonString(err.Error()))
				writeSSE(rc, w, buf)
			}
			return
		case <-keepAlive.C:
			buf = append(buf, ": keep-alive\n\n"...)
		case <-queue.notify:
			items, skip := queue.take()
			for _, it := range items {
				m, ok := p.proj.message(it.env)
				if !ok {
					continue
				}
				data, _ := json.Marshal(m)
				buf = fmt.Appendf(buf, "id: %d\nevent: message\ndata: %s\n\n", it.env.Seq, data)
				metricLiveDelivered.Inc()
			}
			if skip.Skipped > 0 { // skipped messages are newer than every queued one
				data, _ := json.Marshal(skip)
				buf = fmt.Appendf(buf, "event: skipped\ndata: %s\n\n", data)
			}
		}
		if len(buf) > 0 && !writeSSE(rc, w, buf) {
			return
		}
	}
}

// writeSSE writes and flushes buf within liveWriteTimeout; false means the client is gone or
// too slow and the stream should end.
func writeSSE(rc *http.ResponseController, w http.ResponseWriter, buf []byte) bool {
	_ = rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout))
	if _, err := w.Write(buf); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// liveContext is the request's context, also cancelled by CloseLive. The http.Server serving
// the request calls CloseLive when it shuts down: its Shutdown never sees a live stream go idle
// and would otherwise wait out its deadline.
func (s *Server) liveContext(r *http.Request) (context.Context, context.CancelFunc) {
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok {
		if _, loaded := s.hooked.LoadOrStore(srv, true); !loaded {
			srv.RegisterOnShutdown(s.CloseLive)
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.liveCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// CloseLive ends every live stream (SSE and WebSocket). It is registered with the
// http.Server's RegisterOnShutdown at the first live request; call it directly where the
// server is stopped otherwise (httptest.Server.Close).
func (s *Server) CloseLive() { s.liveStop() }

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
