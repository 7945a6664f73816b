package scenario

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/streams"
)

// Line is one message of a scenario file: newline-delimited JSON, one envelope per line, in
// the order the messages were stored. It has the shape of a message in the HTTP API, so pages
// of /api/v1/devices/{id}/messages can be imported too ("seq" is accepted and ignored).
//
//	{"id":"...","device":"d1","topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z",
//	 "received_at":"2026-11-22T10:00:00.012Z","content_type":"application/json","protocol":"mqtt",
//	 "payload":{"temperature":21.5}}
//
// A payload that is compact JSON is embedded as "payload"; anything else (CBOR, JSON with
// insignificant white space) is "payload_base64", so the bytes survive the round trip exactly.
type Line struct {
	Seq           uint64            `json:"seq,omitempty"`
	ID            string            `json:"id,omitempty"`
	Device        string            `json:"device,omitempty"`
	Topic         string            `json:"topic"`
	EventTime     time.Time         `json:"event_time"`
	ReceivedAt    time.Time         `json:"received_at,omitzero"`
	ContentType   string            `json:"content_type,omitempty"`
	Protocol      string            `json:"protocol,omitempty"`
	ReplayID      string            `json:"replay_id,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 []byte            `json:"payload_base64,omitempty"`
	Meta          map[string]string `json:"meta,omitempty"`
}

// LineOf converts an envelope for a scenario file.
func LineOf(e *streams.Envelope) Line {
	l := Line{ID: e.ID, Device: e.DeviceID, Topic: e.Topic, EventTime: e.EventTime.UTC(), ReceivedAt: e.ReceivedAt.UTC(),
		ContentType: e.ContentType, Protocol: e.Protocol, Meta: e.Meta}
	if compactJSON(e.Payload) {
		l.Payload = e.Payload
	} else {
		l.PayloadBase64 = e.Payload
	}
	return l
}

// compactJSON reports whether b is JSON that encoding/json would embed byte for byte.
func compactJSON(b []byte) bool {
	if len(b) == 0 || !json.Valid(b) {
		return false
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return false
	}
	return bytes.Equal(buf.Bytes(), b)
}

// Encoder writes scenario lines.
type Encoder struct {
	enc *json.Encoder
}

// NewEncoder writes NDJSON to w.
func NewEncoder(w io.Writer) *Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &Encoder{enc: enc}
}

// Encode writes one envelope as one line.
func (e *Encoder) Encode(env *streams.Envelope) error { return e.enc.Encode(LineOf(env)) }

// MaxLine is the longest line accepted (a 1 MiB payload in base64 with its envelope).
const MaxLine = 2 << 20

// Decode reads a scenario file (NDJSON, gzip-compressed or not: recognised by its magic bytes)
// and calls fn for every message in order. Blank lines are skipped. The first malformed line
// stops decoding with an error that names the line and the field; fn's error stops it too.
func Decode(r io.Reader, fn func(line int, env *streams.Envelope) error) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("%w: gzip: %v", simulator.ErrInvalid, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	n, lineNo := 0, 0
	for sc.Scan() {
		lineNo++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		env, err := decodeLine(b)
		if err != nil {
			return n, fmt.Errorf("%w: line %d: %v", simulator.ErrInvalid, lineNo, err)
		}
		if err := fn(lineNo, env); err != nil {
			return n, err
		}
		n++
	}
	if err := sc.Err(); err != nil {
		switch {
		case errors.Is(err, bufio.ErrTooLong):
			return n, fmt.Errorf("%w: line %d: longer than %d bytes", simulator.ErrInvalid, lineNo+1, MaxLine)
		case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader), errors.Is(err, io.ErrUnexpectedEOF):
			return n, fmt.Errorf("%w: line %d: gzip: %v", simulator.ErrInvalid, lineNo+1, err)
		}
		return n, fmt.Errorf("%w: line %d: %w", simulator.ErrInvalid, lineNo+1, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: the file holds no messages", simulator.ErrInvalid)
	}
	return n, nil
}

func decodeLine(b []byte) (*streams.Envelope, error) {
	if b[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l Line
	if err := dec.Decode(&l); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("invalid JSON: the line ends too early")
		case errors.As(err, &syn):
			return nil, fmt.Errorf("invalid JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return nil, fmt.Errorf("%s: got JSON %s, want %s", typ.Field, typ.Value, typ.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return nil, fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		case strings.Contains(err.Error(), "parsing time"):
			return nil, fmt.Errorf("a time is not RFC 3339: %v", err)
		}
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	return l.envelope()
}

func (l Line) envelope() (*streams.Envelope, error) {
	switch {
	case l.Topic == "":
		return nil, errors.New("topic: required")
	case l.EventTime.IsZero():
		return nil, errors.New("event_time: required")
	case len(l.Payload) > 0 && len(l.PayloadBase64) > 0:
		return nil, errors.New("payload and payload_base64: give one, not both")
	case l.Device != "" && !devices.ValidID(l.Device):
		return nil, fmt.Errorf("device: %q is not a valid device ID", l.Device)
	case strings.HasPrefix(l.Topic, simulator.SandboxTopicPrefix+"/"):
		return nil, fmt.Errorf("topic: %q is replay output (under %s/)", l.Topic, simulator.SandboxTopicPrefix)
	}
	if _, err := streams.TopicToSubject(l.Topic); err != nil {
		return nil, fmt.Errorf("topic: %v", err)
	}
	if dt, ok := protocols.ParseDeviceTopic(l.Topic); ok {
		if !devices.ValidID(dt.DeviceID) {
			return nil, fmt.Errorf("topic: %q: %q is not a valid device ID", l.Topic, dt.DeviceID)
		}
		if l.Device == "" {
			l.Device = dt.DeviceID
		} else if l.Device != dt.DeviceID {
			return nil, fmt.Errorf("device: %q does not match topic %q", l.Device, l.Topic)
		}
	}
	for k, v := range l.Meta {
		if k == "" || strings.ContainsAny(k, ": \r\n") || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("meta: %q: keys must be non-empty without spaces or ':', values on one line", k)
		}
	}
	for _, f := range []struct{ name, v string }{{"id", l.ID}, {"content_type", l.ContentType}, {"protocol", l.Protocol}} {
		if strings.ContainsAny(f.v, "\r\n") || len(f.v) > 256 {
			return nil, fmt.Errorf("%s: must be one line of at most 256 bytes", f.name)
		}
	}
	env := &streams.Envelope{ID: l.ID, DeviceID: l.Device, Topic: l.Topic, EventTime: l.EventTime, ReceivedAt: l.ReceivedAt,
		ContentType: l.ContentType, Protocol: l.Protocol, Meta: l.Meta}
	if len(l.Payload) > 0 {
		env.Payload = []byte(l.Payload)
	} else {
		env.Payload = l.PayloadBase64
	}
	if env.ReceivedAt.IsZero() {
		env.ReceivedAt = env.EventTime
	}
	return env, nil
}
