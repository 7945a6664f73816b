package protocols

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/streams"
)

// Publisher stores envelopes. *streams.Bus satisfies it.
type Publisher interface {
	// Publish returns once the message is stored.
	Publish(ctx context.Context, env *streams.Envelope) (uint64, error)
	// PublishAsync queues the message with bounded pending acknowledgements.
	PublishAsync(env *streams.Envelope) error
	// DeadLetter stores a rejected message with its reason.
	DeadLetter(ctx context.Context, env *streams.Envelope, reason string) error
}

// Authenticator checks the credentials devices and applications present. *hub wiring combines
// the device registry and the API keys into one.
type Authenticator interface {
	// AuthenticateDevice returns nil when token is the device's current token.
	AuthenticateDevice(ctx context.Context, id, token string) error
	// AuthenticateApp returns nil when key is a valid API key.
	AuthenticateApp(ctx context.Context, key string) error
}

// AppUsername is the MQTT username (and CoAP identity) applications use with an API key.
const AppUsername = "app"

// Identity is who sent a message: a device (DeviceID set) or an application.
type Identity struct {
	DeviceID string
	App      bool
	// Key is an application's scoped API key (nil: the admin key, with every right).
	Key *auth.Principal
}

// Message is one inbound publish, as an adapter sees it.
type Message struct {
	From        Identity
	Topic       string
	ContentType string // "" lets the payload codec sniff
	Payload     []byte
	Protocol    string // "mqtt", "coap", "http"
	// Reliable asks for a synchronous store (MQTT QoS 1/2, CoAP confirmable): Accept returns
	// only after JetStream has the message.
	Reliable bool
	// ID, when set, is the dedup ID (e.g. derived from a CoAP message ID and peer).
	ID string
	// Meta is copied to the envelope.
	Meta map[string]string
}

// Ingest is the pipeline every adapter feeds: topic check, payload validation, store, and
// dead letters for what is rejected.
type Ingest struct {
	pub        Publisher
	log        *slog.Logger
	maxPayload int
	maxLevels  int // 0: no bound (SetMaxTopicLevels)
	now        func() time.Time
	// tenantOf is the registry's TenantOf (see SetTenants); nil: single tenant.
	tenantOf func(deviceID string) string
}

// DefaultMaxPayload is the largest accepted device payload unless configured otherwise.
const DefaultMaxPayload = 256 << 10

// NewIngest builds the pipeline. maxPayload ≤ 0 means DefaultMaxPayload.
func NewIngest(pub Publisher, maxPayload int, log *slog.Logger) *Ingest {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	return &Ingest{pub: pub, log: log.With("component", "ingest"), maxPayload: maxPayload, now: time.Now}
}

// SetMaxTopicLevels bounds the levels of a topic; a deeper one is refused as an unknown topic
// (and dead-lettered). n ≤ 0: no bound. Call it before the pipeline is used.
func (in *Ingest) SetMaxTopicLevels(n int) { in.maxLevels = n }

// MaxPayload is the configured payload limit in bytes.
func (in *Ingest) MaxPayload() int { return in.maxPayload }

// Accept checks and stores one message. On rejection it returns a *Rejection after writing the
// message to the dead-letter stream; the envelope is returned either way (nil only when it could
// not be built).
func (in *Ingest) Accept(ctx context.Context, m Message) (*streams.Envelope, error) {
	env := &streams.Envelope{
		ID:          m.ID,
		Topic:       m.Topic,
		ContentType: m.ContentType,
		Protocol:    m.Protocol,
		Payload:     m.Payload,
		Meta:        m.Meta,
		DeviceID:    m.From.DeviceID,
	}
	env.Stamp(in.now())
	metricIn.WithLabelValues(m.Protocol).Inc()

	if rej := in.check(m, env); rej != nil {
		in.deadLetter(ctx, env, rej)
		return env, rej
	}
	in.stampTenant(m, env)
	var err error
	if m.Reliable {
		_, err = in.pub.Publish(ctx, env)
	} else {
		err = in.pub.PublishAsync(env)
	}
	if err != nil {
		metricRejected.WithLabelValues(m.Protocol, "unavailable").Inc()
		in.log.Warn("store failed", "topic", m.Topic, "err", err)
		return env, &Rejection{Kind: ErrUnavailable, Reason: err.Error()}
	}
	return env, nil
}

// check validates topic and payload and fills in the event time and content type.
func (in *Ingest) check(m Message, env *streams.Envelope) *Rejection {
	if len(m.Payload) > in.maxPayload {
		return reject(ErrTooLarge, "payload is %d bytes, the limit is %d", len(m.Payload), in.maxPayload)
	}
	if in.maxLevels > 0 {
		if n := strings.Count(m.Topic, "/") + 1; n > in.maxLevels {
			return reject(ErrUnknownTopic, "topic has %d levels, the limit is %d", n, in.maxLevels)
		}
	}
	dt, isDevice := ParseDeviceTopic(m.Topic)
	if m.From.App && m.From.Key != nil {
		if rej := appPublish(*m.From.Key, m.Topic, dt, isDevice, in.tenantOf); rej != nil {
			return rej
		}
	}
	if !isDevice {
		if m.From.App {
			if _, err := streams.TopicToSubject(m.Topic); err != nil {
				return reject(ErrUnknownTopic, "topic %q: %v", m.Topic, err)
			}
			return nil // applications may use their own topics
		}
		return reject(ErrForbidden, "device %s may publish only under devices/%s/", m.From.DeviceID, m.From.DeviceID)
	}
	if !m.From.App && dt.DeviceID != m.From.DeviceID {
		return reject(ErrForbidden, "device %s may publish only under devices/%s/", m.From.DeviceID, m.From.DeviceID)
	}
	if !devices.ValidID(dt.DeviceID) {
		return reject(ErrUnknownTopic, "topic %q: %q is not a valid device ID", m.Topic, dt.DeviceID)
	}
	env.DeviceID = dt.DeviceID
	switch {
	case dt.Kind == KindInvalid:
		return reject(ErrUnknownTopic, "topic %q is not one of devices/{id}/telemetry, events/{name}, state/reported, commands/{name}/result", m.Topic)
	case !m.From.App && !dt.Kind.FromDevice():
		return reject(ErrForbidden, "devices may not publish to %s topics (%s)", dt.Kind, m.Topic)
	case dt.Kind == KindStatus:
		return reject(ErrForbidden, "%s: status events are published by the hub only", m.Topic)
	}
	switch dt.Kind {
	case KindTelemetry:
		ms, err := payload.DecodeTelemetry(m.ContentType, m.Payload)
		if err != nil {
			return reject(ErrInvalidPayload, "telemetry: %s", payloadReason(err))
		}
		if env.ContentType == "" {
			env.ContentType = sniffedType(m.Payload)
		}
		if t := ms[0].Time; !t.IsZero() {
			env.EventTime = t
		}
	case KindStateReported, KindStateDesired:
		if len(m.Payload) > devices.MaxStateSize {
			return reject(ErrTooLarge, "%s: state documents are limited to %d bytes, this one is %d", dt.Kind, devices.MaxStateSize, len(m.Payload))
		}
		if _, err := payload.DecodeObject(m.ContentType, m.Payload); err != nil {
			return reject(ErrInvalidPayload, "%s: %s", dt.Kind, payloadReason(err))
		}
		if env.ContentType == "" {
			env.ContentType = sniffedType(m.Payload)
		}
	}
	return nil
}

func payloadReason(err error) string {
	var pe *payload.Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return err.Error()
}

// sniffedType names what the codec found when the sender gave no content type.
func sniffedType(b []byte) string {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return payload.JSON
		case '[':
			return payload.SenMLJSON
		}
		break
	}
	if len(b) > 0 && b[0]>>5 == 4 { // CBOR major type 4: array
		return payload.SenMLCBOR
	}
	return payload.CBOR
}

// deadLetterKeep is how much of an oversized payload is kept in its dead letter.
const deadLetterKeep = 4 << 10

func (in *Ingest) deadLetter(ctx context.Context, env *streams.Envelope, rej *Rejection) {
	reason := ReasonCode(rej)
	metricRejected.WithLabelValues(env.Protocol, reason).Inc()
	dl := *env
	if len(dl.Payload) > deadLetterKeep {
		dl.Meta = cloneMeta(env.Meta)
		dl.Meta["original_size"] = fmt.Sprint(len(env.Payload))
		dl.Payload = env.Payload[:deadLetterKeep]
	}
	if err := in.pub.DeadLetter(ctx, &dl, rej.Error()); err != nil {
		in.log.Error("dead letter not stored", "topic", env.Topic, "reason", rej.Error(), "err", err)
		return
	}
	metricDeadLettered.WithLabelValues(reason).Inc()
}

func cloneMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// DeadLetterAuth records a refused connection or request (wrong token, unknown device) so it is
// visible over the API like any rejected message.
func (in *Ingest) DeadLetterAuth(ctx context.Context, protocol, deviceID, topic, reason string) {
	env := &streams.Envelope{DeviceID: deviceID, Topic: topic, Protocol: protocol}
	env.Stamp(in.now())
	in.deadLetter(ctx, env, &Rejection{Kind: ErrNotAuthorized, Reason: reason})
}
