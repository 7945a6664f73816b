package streams

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Envelope is the one message type used from protocol adapter to sink. On NATS the payload is
// the message body, unchanged, and everything else travels in headers, so a plain nats.go
// subscriber sees exactly the bytes the device sent.
type Envelope struct {
	// ID is unique per message and doubles as the JetStream Msg-Id, so a retried publish of
	// the same message is stored once.
	ID       string
	DeviceID string
	// Topic is MQTT-style, e.g. "devices/d1/telemetry"; the NATS subject is derived from it.
	Topic string
	// EventTime is the device's timestamp when it gave one, else ReceivedAt.
	EventTime   time.Time
	ReceivedAt  time.Time
	ContentType string
	// Protocol is where the message came in: "mqtt", "coap", "http", "hub", "simulator".
	Protocol string
	Payload  []byte
	// ReplayID marks messages re-published by a replay.
	ReplayID string
	// Tenant owns the message (the sending device's or application key's tenant); "" is the
	// default tenant, and is not written as a header, so single-tenant messages are unchanged.
	Tenant string
	// Meta carries extra string attributes (command ID, rejection reason, ...).
	Meta map[string]string
	// Seq is the stream sequence; set only on envelopes read from a stream.
	Seq uint64
}

// NATS header names. Nats-Msg-Id is JetStream's own dedup header.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderDevice      = "Tb-Device"
	HeaderEventTime   = "Tb-Event-Time" // Unix nanoseconds
	HeaderReceived    = "Tb-Received"   // Unix nanoseconds
	HeaderContentType = "Content-Type"
	HeaderProtocol    = "Tb-Protocol"
	HeaderReplay      = "Tb-Replay"
	HeaderTopic       = "Tb-Topic" // only where the subject does not carry the topic (dead letters)
	HeaderTenant      = "Tb-Tenant"
	headerMetaPrefix  = "Tb-M-"
)

// NewID returns a new unique message ID.
func NewID() string { return nuid.Next() }

// Stamp fills in ID, ReceivedAt and EventTime when they are unset.
func (e *Envelope) Stamp(now time.Time) {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.ReceivedAt.IsZero() {
		e.ReceivedAt = now
	}
	if e.EventTime.IsZero() {
		e.EventTime = e.ReceivedAt
	}
}

// ToMsg encodes the envelope as a NATS message on its topic's subject.
func (e *Envelope) ToMsg() (*nats.Msg, error) {
	subj, err := TopicToSubject(e.Topic)
	if err != nil {
		return nil, err
	}
	return e.toMsg(subj), nil
}

func (e *Envelope) toMsg(subject string) *nats.Msg {
	h := make(nats.Header, 8+len(e.Meta))
	if e.ID != "" {
		h[HeaderMsgID] = []string{e.ID}
	}
	if e.DeviceID != "" {
		h[HeaderDevice] = []string{e.DeviceID}
	}
	if !e.EventTime.IsZero() {
		h[HeaderEventTime] = []string{strconv.FormatInt(e.EventTime.UnixNano(), 10)}
	}
	if !e.ReceivedAt.IsZero() {
		h[HeaderReceived] = []string{strconv.FormatInt(e.ReceivedAt.UnixNano(), 10)}
	}
	if e.ContentType != "" {
		h[HeaderContentType] = []string{e.ContentType}
	}
	if e.Protocol != "" {
		h[HeaderProtocol] = []string{e.Protocol}
	}
	if e.ReplayID != "" {
		h[HeaderReplay] = []string{e.ReplayID}
	}
	if e.Tenant != "" {
		h[HeaderTenant] = []string{e.Tenant}
	}
	for k, v := range e.Meta {
		h[headerMetaPrefix+k] = []string{v}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: e.Payload}
}

// FromMsg decodes an envelope from a NATS message. The topic comes from the Tb-Topic header
// when present, else from the subject (dead letters without a topic have none).
func FromMsg(subject string, h nats.Header, data []byte) (*Envelope, error) {
	e := &Envelope{Payload: data}
	if t := h.Get(HeaderTopic); t != "" {
		e.Topic = t
	} else if strings.HasPrefix(subject, deadLetterPrefix+".") {
		// A dead letter of something that had no topic, e.g. a refused connection: the
		// subject names the device, not a topic.
	} else {
		topic, err := SubjectToTopic(subject)
		if err != nil {
			return nil, err
		}
		e.Topic = topic
	}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch k {
		case HeaderMsgID:
			e.ID = v
		case HeaderDevice:
			e.DeviceID = v
		case HeaderEventTime:
			e.EventTime = parseNanos(v)
		case HeaderReceived:
			e.ReceivedAt = parseNanos(v)
		case HeaderContentType:
			e.ContentType = v
		case HeaderProtocol:
			e.Protocol = v
		case HeaderReplay:
			e.ReplayID = v
		case HeaderTenant:
			e.Tenant = v
		default:
			if name, ok := strings.CutPrefix(k, headerMetaPrefix); ok {
				if e.Meta == nil {
					e.Meta = make(map[string]string)
				}
				e.Meta[name] = v
			}
		}
	}
	return e, nil
}

func parseNanos(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// String is for logs: it leaves out the payload.
func (e *Envelope) String() string {
	return fmt.Sprintf("%s %s (%s, %d bytes)", e.ID, e.Topic, e.Protocol, len(e.Payload))
}
