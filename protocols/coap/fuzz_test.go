package coap

import (
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

// FuzzParseRequest feeds arbitrary datagrams through the request → ingest message conversion:
// CoAP decoding, path, URI query, Content-Format, the ingest message and what a device may
// read. Seeds are in testdata/fuzz/FuzzParseRequest.
func FuzzParseRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, datagram []byte) {
		m := message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(datagram, &m); err != nil {
			return
		}
		r, fl := parseRequest(m.Options)
		if fl != nil {
			if fl.Code>>5 != 4 || fl.Msg == "" {
				t.Fatalf("failure %v %q: want a 4.xx code with a diagnostic", fl.Code, fl.Msg)
			}
			return
		}
		if r.Topic == "" || len(r.Topic) > maxTopicLen {
			t.Fatalf("topic %q: want 1..%d bytes", r.Topic, maxTopicLen)
		}
		if r.Topic != wellKnownCore {
			subj, err := streams.TopicToSubject(r.Topic)
			if err != nil {
				t.Fatalf("topic %q accepted but has no subject: %v", r.Topic, err)
			}
			if back, err := streams.SubjectToTopic(subj); err != nil || back != r.Topic {
				t.Fatalf("topic %q → %q → %q, %v: want a round trip", r.Topic, subj, back, err)
			}
		}
		if r.IsDevice != strings.HasPrefix(r.Topic, "devices/") {
			t.Fatalf("topic %q: IsDevice %v", r.Topic, r.IsDevice)
		}
		if r.ContentType != "" {
			cf, err := m.Options.GetUint32(message.ContentFormat)
			if got, ok := payload.CoAPFormat(r.ContentType); err != nil || !ok || uint32(got) != cf {
				t.Fatalf("content type %q from content-format %d (%v): maps back to %d, %v", r.ContentType, cf, err, got, ok)
			}
		}

		p := peer{Addr: "192.0.2.1:5683", MessageID: m.MessageID, Token: m.Token}
		for _, from := range []protocols.Identity{{DeviceID: "d1"}, {App: true}} {
			msg := toMessage(r, from, m.Payload, m.Type == message.Confirmable, p)
			if msg.Topic != r.Topic || msg.Protocol != "coap" || msg.From != from || !strings.HasPrefix(msg.ID, "coap-") {
				t.Fatalf("message %+v from request %+v", msg, r)
			}
			if again := toMessage(r, from, m.Payload, true, p); again.ID != msg.ID {
				t.Fatalf("dedup ID not deterministic: %s, %s", msg.ID, again.ID)
			}
			if f := mayRead(from, r); f != nil && f.Code>>5 != 4 {
				t.Fatalf("mayRead: code %v", f.Code)
			}
		}
		if r.IsDevice {
			_ = acceptsFormat(r.Device.Kind, r.ContentType)
		}
		dev := r.ID
		if !devices.ValidID(dev) {
			dev = ""
		}
		if links := linkFormat(dev, r.Filters); strings.Contains(links, "{") {
			t.Fatalf("link format with a raw brace: %q", links)
		}
	})
}
