package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
)

// Message is how the API shows a stored message. A JSON payload is embedded as it is; any other
// payload is base64 in payload_base64.
type Message struct {
	Seq           uint64            `json:"seq"`
	ID            string            `json:"id"`
	Device        string            `json:"device,omitempty"`
	Topic         string            `json:"topic"`
	EventTime     time.Time         `json:"event_time"`
	ReceivedAt    time.Time         `json:"received_at"`
	ContentType   string            `json:"content_type,omitempty"`
	Protocol      string            `json:"protocol,omitempty"`
	ReplayID      string            `json:"replay_id,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 []byte            `json:"payload_base64,omitempty"`
	Reason        string            `json:"reason,omitempty"`
	Meta          map[string]string `json:"meta,omitempty"`
}

// NewMessage converts an envelope for the API.
func NewMessage(e *streams.Envelope) Message {
	m := Message{
		Seq: e.Seq, ID: e.ID, Device: e.DeviceID, Topic: e.Topic, EventTime: e.EventTime, ReceivedAt: e.ReceivedAt,
		ContentType: e.ContentType, Protocol: e.Protocol, ReplayID: e.ReplayID,
	}
	if json.Valid(e.Payload) && len(e.Payload) > 0 {
		m.Payload = e.Payload
	} else {
		m.PayloadBase64 = e.Payload
	}
	for k, v := range e.Meta {
		if k == streams.MetaReason {
			m.Reason = v
			continue
		}
		if m.Meta == nil {
			m.Meta = map[string]string{}
		}
		m.Meta[k] = v
	}
	return m
}

type messagePage struct {
	Messages []Message `json:"messages"`
	// Before is the cursor for older messages (pass as ?before=); absent on the last page.
	Before uint64 `json:"before,omitempty"`
}

func newPage(p streams.Page) messagePage {
	out := messagePage{Messages: make([]Message, 0, len(p.Messages)), Before: p.Before}
	for _, e := range p.Messages {
		out.Messages = append(out.Messages, NewMessage(e))
	}
	return out
}

// pageParams reads ?limit= (default 100, at most 1000) and ?before= (a sequence).
func pageParams(r *http.Request) (limit int, before uint64, msg string) {
	q := r.URL.Query()
	limit = 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return 0, 0, "limit: want a whole number from 1 to 1000, got " + strconv.Quote(l)
		}
		limit = n
	}
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil || n == 0 {
			return 0, 0, "before: want a positive message sequence, got " + strconv.Quote(b)
		}
		before = n
	}
	return limit, before, ""
}

func (s *Server) deviceMessages(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !devices.ValidID(id) {
		writeError(w, http.StatusBadRequest, "invalid device ID "+strconv.Quote(id))
		return
	}
	if _, err := s.deps.Devices.Get(id); err != nil {
		s.deviceError(w, err)
		return
	}
	limit, before, msg := pageParams(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	// The device's traffic both ways; its status events (devices/{id}/status) are the hub's
	// and not listed here.
	base := "devices/" + id + "/"
	page, err := s.deps.Messages.Latest(r.Context(), []string{base + "telemetry", base + "events/#", base + "state/#", base + "commands/#"}, limit, before)
	if err != nil {
		s.log.Error("read messages", "device", id, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, newPage(page))
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	limit, before, msg := pageParams(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	page, err := s.deps.Messages.DeadLetters(r.Context(), r.URL.Query().Get("device"), limit, before)
	if err != nil {
		s.log.Error("read dead letters", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	page.Messages = s.visibleMessages(r, page.Messages)
	writeJSON(w, http.StatusOK, newPage(page))
}
