package coap

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

// maxTopicLen bounds the topic a path may name, in bytes.
const maxTopicLen = 512

// wellKnownCore is the discovery resource (RFC 6690), as a topic-style path.
const wellKnownCore = ".well-known/core"

// request is what a CoAP request addresses and the credentials it carries in its URI query.
type request struct {
	// Topic is the Uri-Path options joined by "/": "devices/d1/telemetry".
	Topic string
	// Device is the parsed topic when it is under devices/ (IsDevice).
	Device   protocols.DeviceTopic
	IsDevice bool
	// Token (?token=), Key (?key=) and ID (?id=) are the URI-query credentials.
	Token, Key, ID string
	// ContentType is the Content-Format option as a content type; "" when there is none.
	ContentType string
	// Filters are the discovery query (?rt=, ?if=, ?ct=, ?href=).
	Filters []linkFilter
}

// failure is a request refused before it reaches the ingest pipeline.
type failure struct {
	Code codes.Code
	Msg  string
	Opts []message.Option // e.g. Max-Age with 4.29
}

func fail(code codes.Code, format string, args ...any) *failure {
	return &failure{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// parseRequest reads the path, URI query and Content-Format of a request. It never looks at
// the payload and never authenticates.
func parseRequest(opts message.Options) (request, *failure) {
	var r request
	var b strings.Builder
	n := 0
	for _, o := range opts {
		if o.ID != message.URIPath {
			continue
		}
		seg := string(o.Value)
		if strings.ContainsAny(seg, "/+#\x00") {
			return r, fail(codes.NotFound, "path segment %q: '/', '+', '#' and NUL are not allowed", seg)
		}
		if n > 0 {
			b.WriteByte('/')
		}
		b.WriteString(seg)
		n++
		if b.Len() > maxTopicLen {
			return r, fail(codes.NotFound, "path longer than %d bytes", maxTopicLen)
		}
	}
	r.Topic = b.String()
	if r.Topic == "" {
		return r, fail(codes.NotFound, "no path: use /devices/{id}/telemetry, /devices/{id}/events/{name}, ... (see /.well-known/core)")
	}
	if r.Topic != wellKnownCore {
		if _, err := streams.TopicToSubject(r.Topic); err != nil {
			return r, fail(codes.NotFound, "path /%s is not a valid topic", r.Topic)
		}
		r.Device, r.IsDevice = protocols.ParseDeviceTopic(r.Topic)
	}

	for _, o := range opts {
		if o.ID != message.URIQuery {
			continue
		}
		k, v, _ := strings.Cut(string(o.Value), "=")
		var dst *string
		switch k {
		case "token":
			dst = &r.Token
		case "key":
			dst = &r.Key
		case "id":
			dst = &r.ID
		case "rt", "if", "ct", "href":
			r.Filters = append(r.Filters, linkFilter{attr: k, value: v})
			continue
		default:
			continue // unknown parameters are ignored, as HTTP servers do
		}
		if *dst != "" {
			return r, fail(codes.BadRequest, "query parameter %s= given twice", k)
		}
		if v == "" {
			return r, fail(codes.BadRequest, "query parameter %s= is empty", k)
		}
		*dst = v
	}

	if cf, err := opts.GetUint32(message.ContentFormat); err == nil {
		ct, ok := payload.ContentTypeFromCoAP(int(cf))
		if !ok {
			return r, fail(codes.UnsupportedMediaType, "content-format %d is not supported: use 50 (JSON), 60 (CBOR), 110 (SenML JSON), 112 (SenML CBOR), 42 (octet-stream) or 0 (text)", cf)
		}
		r.ContentType = ct
	} else if opts.HasOption(message.ContentFormat) {
		return r, fail(codes.BadRequest, "content-format option: %v", err)
	}
	return r, nil
}

// acceptsFormat reports whether a message of kind k may carry content type ct ("" always
// may: the codec sniffs). Telemetry and state have fixed formats; events and command
// results take any bytes.
func acceptsFormat(k protocols.Kind, ct string) bool {
	switch {
	case ct == "", ct == payload.OctetStream:
		return true
	case k == protocols.KindTelemetry:
		return ct == payload.JSON || ct == payload.CBOR || ct == payload.SenMLJSON || ct == payload.SenMLCBOR
	case k == protocols.KindStateReported, k == protocols.KindStateDesired:
		return ct == payload.JSON || ct == payload.CBOR
	}
	return true
}

// peer identifies one request on the wire, for the dedup ID.
type peer struct {
	Addr      string
	MessageID int32
	Token     []byte
}

// toMessage turns a parsed request into the ingest pipeline's message. The ID is derived from
// the peer's address, message ID and token, the topic and the payload, so a retransmitted
// confirmable request that reaches the store twice (e.g. after its exchange state was lost)
// is stored once by JetStream's Msg-Id dedup.
func toMessage(r request, from protocols.Identity, body []byte, confirmable bool, p peer) protocols.Message {
	return protocols.Message{
		From:        from,
		Topic:       r.Topic,
		ContentType: r.ContentType,
		Payload:     body,
		Protocol:    protocolName,
		Reliable:    confirmable,
		ID:          dedupID(p, r.Topic, body),
	}
}

func dedupID(p peer, topic string, body []byte) string {
	h := sha256.New()
	var mid [4]byte
	binary.BigEndian.PutUint32(mid[:], uint32(p.MessageID))
	h.Write([]byte(p.Addr))
	h.Write([]byte{0})
	h.Write(mid[:])
	h.Write([]byte{byte(len(p.Token))})
	h.Write(p.Token)
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(body)
	var sum [sha256.Size]byte
	return "coap-" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}
