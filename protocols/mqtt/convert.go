package mqtt

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

// This file holds the pure translations between MQTT and the hub: who a client is, how a
// PUBLISH becomes an ingest message, how the pipeline's answer becomes an MQTT answer, and how a
// stored envelope goes back out. The hooks in hooks.go only wire them to mochi.

// protocolName is the Protocol of messages that came in over MQTT, and the label of this
// adapter's metrics.
const protocolName = "mqtt"

// MetaRetain is the envelope Meta key set to "true" when an MQTT client published with the
// retain flag, so that the fan-out retains the message on every hub instance.
const MetaRetain = "retain"

// identify tells devices (username = device ID) from applications (username "app"). Only
// clients that passed authentication reach the hooks that call it.
func identify(username []byte) protocols.Identity {
	if string(username) == protocols.AppUsername {
		return protocols.Identity{App: true}
	}
	return protocols.Identity{DeviceID: string(username)}
}

// toMessage turns an MQTT PUBLISH (or Will) into an ingest message: QoS 1 and 2 ask for a
// synchronous store, the MQTT 5 Content-Type property (when present) names the payload format,
// and the retain flag travels in Meta.
func toMessage(from protocols.Identity, pk packets.Packet) protocols.Message {
	m := protocols.Message{
		From:        from,
		Topic:       pk.TopicName,
		ContentType: contentType(pk.Properties.ContentType),
		Payload:     pk.Payload,
		Protocol:    protocolName,
		Reliable:    pk.FixedHeader.Qos > 0,
	}
	if pk.FixedHeader.Retain {
		m.Meta = map[string]string{MetaRetain: "true"}
	}
	return m
}

// maxContentType bounds what is kept of a Content-Type property; media types are short
// (RFC 6838 allows 127 characters for each of type and subtype).
const maxContentType = 255

// contentType cleans an MQTT 5 Content-Type property: surrounding space is dropped, and a value
// that cannot be a media type (too long, control characters, invalid UTF-8) becomes "" so the
// payload codec sniffs the format instead.
func contentType(ct string) string {
	ct = strings.TrimSpace(ct)
	if len(ct) > maxContentType || !utf8.ValidString(ct) {
		return ""
	}
	for i := 0; i < len(ct); i++ {
		if ct[i] < 0x20 || ct[i] == 0x7f {
			return ""
		}
	}
	return ct
}

// action is what the publish hook does with a client's PUBLISH after the pipeline answered.
type action int

const (
	// actAck acknowledges (PUBACK/PUBREC success) without delivering directly: delivery comes
	// from the fan-out of the stored message.
	actAck action = iota
	// actNack acknowledges with an MQTT 5 failure reason code.
	actNack
	// actNoAck sends nothing: the (QoS 0) message is dropped.
	actNoAck
	// actDisconnect closes the connection (MQTT 3.1.1 has no way to refuse a PUBLISH).
	actDisconnect
	// actRetry sends no PUBACK and closes the connection: MQTT clients resend an
	// unacknowledged QoS 1/2 PUBLISH only when they reconnect (MQTT 3.1.1 §4.4, MQTT 5
	// §4.4), so a connection kept open would leave the message in flight for good.
	actRetry
)

func (a action) String() string {
	return [...]string{"ack", "nack", "no ack", "disconnect", "retry"}[a]
}

// outcome decides the answer to a PUBLISH of the given protocol version and QoS that the
// pipeline answered with err (nil: stored).
//
//	pipeline answer                        MQTT 5 QoS 1/2     MQTT 5 QoS 0   MQTT 3.1.1
//	stored                                 ack                -              ack
//	forbidden (foreign topic, hub kind)    nack 0x87          drop           disconnect
//	unknown topic / invalid / too large    nack 0x90/99/95    drop           ack and drop
//	storage unavailable, timeout           retry              drop           retry (QoS 1/2)
//
// An MQTT 3.1.1 client cannot be told its message was refused other than by closing the
// connection, which SPEC.md asks for foreign topics only. A payload the hub cannot accept is
// acknowledged and dropped instead (it is in the dead-letter stream): a client that never got
// the PUBACK would resend the same poison message on every reconnect.
func outcome(version, qos byte, err error) (action, packets.Code) {
	if err == nil {
		return actAck, packets.CodeSuccess
	}
	code, refused := reasonCode(err)
	switch {
	case !refused && qos > 0:
		return actRetry, packets.ErrImplementationSpecificError
	case !refused:
		return actNoAck, packets.ErrImplementationSpecificError
	case version < 5 && code.Code == packets.ErrNotAuthorized.Code:
		return actDisconnect, code
	case version < 5:
		return actAck, code
	case qos == 0:
		return actNoAck, code
	}
	return actNack, code
}

// reasonCode maps a pipeline rejection to its MQTT 5 reason code (the table in
// protocols/errors.go). refused is false for errors that are not a refusal of the message
// itself (storage unavailable, timeouts), which a retry may cure.
func reasonCode(err error) (code packets.Code, refused bool) {
	switch {
	case errors.Is(err, protocols.ErrNotAuthorized), errors.Is(err, protocols.ErrForbidden):
		return packets.ErrNotAuthorized, true
	case errors.Is(err, protocols.ErrUnknownTopic):
		return packets.ErrTopicNameInvalid, true
	case errors.Is(err, protocols.ErrInvalidPayload):
		return packets.ErrPayloadFormatInvalid, true
	case errors.Is(err, protocols.ErrTooLarge):
		return packets.ErrPacketTooLarge, true
	}
	return packets.ErrImplementationSpecificError, false
}

// maxReasonString bounds the reason string sent in a PUBACK, so the ack fits any sensible
// client maximum packet size.
const maxReasonString = 200

// reasonString is the MQTT 5 Reason String for a refusal: the pipeline's own words (which say
// what is wrong, e.g. where the JSON breaks), cut to a valid UTF-8 prefix.
func reasonString(err error) string {
	var rej *protocols.Rejection
	s := err.Error()
	if errors.As(err, &rej) {
		s = rej.Reason
	}
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxReasonString {
		s = s[:maxReasonString]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// delivery says how the fan-out publishes a stored message to local MQTT subscribers.
//
// Desired state is retained, so a device gets the latest one whenever it (re)subscribes; so is
// any message its MQTT publisher sent with the retain flag. Hub-to-device kinds (desired state,
// commands) go out at QoS 1, so they are resent until acknowledged and queued for disconnected
// persistent sessions; everything else at QoS 0, since the stream is the durable record
// (applications that must not miss a message resume from it). A subscriber gets the lower of
// this and its subscription's QoS.
func delivery(env *streams.Envelope) (retain bool, qos byte) {
	if dt, ok := protocols.ParseDeviceTopic(env.Topic); ok {
		switch dt.Kind {
		case protocols.KindStateDesired:
			return true, 1
		case protocols.KindCommand:
			qos = 1
		}
	}
	return env.Meta[MetaRetain] == "true", qos
}
