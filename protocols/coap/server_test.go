package coap

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tributary-iot/tributary/payload"
)

func TestPostConfirmableIsStoredBeforeTheResponse(t *testing.T) {
	h := newHub(t)
	cc := dial(t, h.srv.Addr())
	ctx := testCtx(t)

	tests := []struct {
		path   string
		cf     message.MediaType
		body   string
		wantCT string
	}{
		{"/devices/d1/telemetry", message.AppJSON, `{"temperature":21.5,"door":false}`, payload.JSON},
		{"/devices/d1/telemetry", message.MediaType(110), `[{"n":"t","v":1.5}]`, payload.SenMLJSON},
		{"/devices/d1/events/boot", message.AppOctets, "\x00\x01raw", payload.OctetStream},
		{"/devices/d1/state/reported", message.AppCBOR, "\xa1\x61a\x01", payload.CBOR}, // {"a":1}
		{"/devices/d1/commands/reboot/result", message.AppJSON, `{"ok":true}`, payload.JSON},
	}
	for _, tt := range tests {
		t.Run(tt.path+"/"+tt.wantCT, func(t *testing.T) {
			r := post(t, cc, tt.path, tt.cf, tt.body, "token="+h.tokens["d1"])
			if r.Code != codes.Changed {
				t.Fatalf("got %s %q, want 2.04", codeName(r.Code), r.Body)
			}
			// No polling: the message must already be stored when the response arrives.
			topic := strings.TrimPrefix(tt.path, "/")
			page, err := h.bus.Latest(ctx, []string{topic}, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Messages) != 1 {
				t.Fatalf("got %d messages on %s right after 2.04, want 1", len(page.Messages), topic)
			}
			env := page.Messages[0]
			if string(env.Payload) != tt.body || env.ContentType != tt.wantCT || env.Protocol != "coap" || env.DeviceID != "d1" {
				t.Errorf("got %q %s %s %s, want %q %s coap d1", env.Payload, env.ContentType, env.Protocol, env.DeviceID, tt.body, tt.wantCT)
			}
		})
	}
	if got := h.presence.get("d1"); got != cc.LocalAddr().String() && !strings.HasSuffix(got, portOf(cc.LocalAddr())) {
		t.Errorf("presence: got %q, want the client's address %s", got, cc.LocalAddr())
	}
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return ":" + p
}

func TestPutAndNonConfirmable(t *testing.T) {
	h := newHub(t)
	cc := dial(t, h.srv.Addr())
	resp, err := cc.Put(testCtx(t), "/devices/d1/state/reported", message.AppJSON, bytes.NewReader([]byte(`{"fw":"1.2"}`)), query("token="+h.tokens["d1"])...)
	if err != nil {
		t.Fatal(err)
	}
	if r := readReply(t, resp); r.Code != codes.Changed {
		t.Fatalf("PUT: got %s %q, want 2.04", codeName(r.Code), r.Body)
	}

	// A non-confirmable POST is stored asynchronously: poll.
	req, err := cc.NewPostRequest(testCtx(t), "/devices/d1/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"n":1}`)), query("token="+h.tokens["d1"])...)
	if err != nil {
		t.Fatal(err)
	}
	req.SetType(message.NonConfirmable)
	resp, err = cc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if r := readReply(t, resp); r.Code != codes.Changed {
		t.Fatalf("NON POST: got %s %q, want 2.04", codeName(r.Code), r.Body)
	}
	eventually(t, "NON message stored", func() bool {
		env, err := h.bus.Last(testCtx(t), "devices/d1/telemetry")
		return err == nil && env != nil && string(env.Payload) == `{"n":1}`
	})
}

// TestRetransmittedConfirmableStoredOnce sends the same datagram twice, as a device whose ACK
// was lost does: both get the same 2.04, and the message is stored once.
func TestRetransmittedConfirmableStoredOnce(t *testing.T) {
	h := newHub(t)
	conn, err := net.Dial("udp", h.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := message.Message{Code: codes.POST, Type: message.Confirmable, MessageID: 4711, Token: []byte{1, 2, 3, 4}, Payload: []byte(`{"x":1}`)}
	buf := make([]byte, 256)
	m.Options, _, _ = m.Options.SetPath(buf, "/devices/d1/telemetry")
	m.Options, _, _ = m.Options.AddString(buf[64:], message.URIQuery, "token="+h.tokens["d1"])
	m.Options, _, _ = m.Options.SetContentFormat(buf[200:], message.AppJSON)
	dgram := make([]byte, 512)
	n, err := coder.DefaultCoder.Encode(m, dgram)
	if err != nil {
		t.Fatal(err)
	}
	dgram = dgram[:n]
	for i := range 3 {
		if _, err := conn.Write(dgram); err != nil {
			t.Fatal(err)
		}
		resp := readDatagram(t, conn)
		if resp.Code != codes.Changed || resp.MessageID != 4711 || resp.Type != message.Acknowledgement {
			t.Fatalf("send %d: got %v %v mid %d, want 2.04 ACK mid 4711", i, resp.Code, resp.Type, resp.MessageID)
		}
	}
	page, err := h.bus.Latest(testCtx(t), []string{"devices/d1/telemetry"}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 {
		t.Fatalf("got %d stored messages after 3 transmissions, want 1", len(page.Messages))
	}
}

func readDatagram(t testing.TB, conn net.Conn) message.Message {
	t.Helper()
	buf := make([]byte, 2048)
	_ = conn.SetReadDeadline(timeNow().Add(testTimeout))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read datagram: %v", err)
	}
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		t.Fatalf("decode datagram: %v", err)
	}
	return m
}

func TestRejections(t *testing.T) {
	h := newHub(t)
	cc := dial(t, h.srv.Addr())
	// A client without block-wise transfers, to send one oversized datagram.
	single := dial(t, h.srv.Addr(), options.WithBlockwise(false, blockwise.SZX1024, 0))
	big := `{"a":"` + strings.Repeat("x", 5000) + `"}`
	tok1, tok2 := "token="+h.tokens["d1"], "token="+h.tokens["d2"]

	tests := []struct {
		name       string
		path       string
		cf         message.MediaType
		body       string
		query      []string
		client     string
		want       codes.Code
		diag       string // in the diagnostic payload
		deadLetter string // device whose dead letters get it; "-" for none
		reason     string // in the dead letter's reason
	}{
		{"wrong token", "/devices/d1/telemetry", message.AppJSON, `{"t":1}`, []string{"token=nope"}, "", codes.Unauthorized, "wrong token", "d1", "not authorized"},
		{"no credentials", "/devices/d1/telemetry", message.AppJSON, `{"t":1}`, nil, "", codes.Unauthorized, "credentials required", "d1", "credentials required"},
		{"wrong API key", "/devices/d1/telemetry", message.AppJSON, `{"t":1}`, []string{"key=nope"}, "", codes.Unauthorized, "invalid API key", "", "invalid API key"},
		{"unknown device", "/devices/ghost/telemetry", message.AppJSON, `{"t":1}`, []string{"token=" + h.tokens["d1"]}, "", codes.Unauthorized, "wrong token", "ghost", "not authorized"},
		{"other device's path", "/devices/d1/telemetry", message.AppJSON, `{"t":1}`, []string{"id=d2", tok2}, "", codes.Forbidden, "may publish only under devices/d2/", "d2", "forbidden"},
		{"hub-to-device topic", "/devices/d1/state/desired", message.AppJSON, `{"t":1}`, []string{tok1}, "", codes.Forbidden, "may not publish", "d1", "forbidden"},
		{"bad JSON", "/devices/d1/telemetry", message.AppJSON, `{"temperature": 21.5,`, []string{tok1}, "", codes.BadRequest, "telemetry", "d1", "invalid payload"},
		{"no fields", "/devices/d1/telemetry", message.AppJSON, `{}`, []string{tok1}, "", codes.BadRequest, "no fields", "d1", "no fields"},
		{"state not an object", "/devices/d1/state/reported", message.AppJSON, `[1]`, []string{tok1}, "", codes.BadRequest, "state/reported", "d1", "invalid payload"},
		{"oversized datagram", "/devices/d1/events/dump", message.AppJSON, big, []string{tok1}, "single", codes.RequestEntityTooLarge, "limit is 4096", "d1", "too large"},
		{"oversized block-wise", "/devices/d1/events/dump", message.AppJSON, big + big, []string{tok1}, "", codes.RequestEntityTooLarge, "limit of 4096", "-", ""},
		{"unknown path", "/devices/d1/bogus", message.AppJSON, `{"t":1}`, []string{tok1}, "", codes.NotFound, "not one of", "d1", "unknown topic"},
		{"unknown content-format", "/devices/d1/telemetry", message.MediaType(41), `<t/>`, []string{tok1}, "", codes.UnsupportedMediaType, "content-format 41", "-", ""},
		{"text telemetry", "/devices/d1/telemetry", message.TextPlain, `21.5`, []string{tok1}, "", codes.UnsupportedMediaType, "unsupported content type", "d1", "unsupported content type"},
		{"wildcard in path", "/devices/+/telemetry", message.AppJSON, `{"t":1}`, []string{tok1}, "", codes.NotFound, "not allowed", "-", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cc
			if tt.client == "single" {
				c = single
			}
			r := post(t, c, tt.path, tt.cf, tt.body, tt.query...)
			if r.Code != tt.want {
				t.Fatalf("got %s %q, want %s", codeName(r.Code), r.Body, codeName(tt.want))
			}
			if !strings.Contains(r.Body, tt.diag) || r.Format != int(message.TextPlain) {
				t.Errorf("diagnostic: got %q (content-format %d), want text/plain containing %q", r.Body, r.Format, tt.diag)
			}
			if tt.want == codes.RequestEntityTooLarge && r.Size1 != 4096 {
				t.Errorf("Size1: got %d, want 4096", r.Size1)
			}
			if tt.deadLetter == "-" {
				return
			}
			dev := tt.deadLetter
			if dev == "" {
				dev = "_unknown"
			}
			if got := lastReason(t, h.bus, dev); !strings.Contains(got, tt.reason) {
				t.Errorf("dead letter of %s: got reason %q, want it to contain %q", dev, got, tt.reason)
			}
		})
	}

	// Methods other than GET, POST, PUT.
	resp, err := cc.Delete(testCtx(t), "/devices/d1/telemetry", query(tok1)...)
	if err != nil {
		t.Fatal(err)
	}
	if r := readReply(t, resp); r.Code != codes.MethodNotAllowed {
		t.Errorf("DELETE: got %s, want 4.05", codeName(r.Code))
	}
	// Nothing above was stored.
	if env, err := h.bus.Last(testCtx(t), "devices/d1/telemetry"); err != nil || env != nil {
		t.Errorf("got %v, %v on devices/d1/telemetry, want nothing stored", env, err)
	}
}

func TestDiscovery(t *testing.T) {
	h := newHub(t)
	cc := dial(t, h.srv.Addr())
	r := get(t, cc, "/.well-known/core")
	if r.Code != codes.Content || r.Format != int(message.AppLinkFormat) {
		t.Fatalf("got %s content-format %d, want 2.05 with 40", codeName(r.Code), r.Format)
	}
	for _, want := range []string{
		`</devices/%7Bid%7D/telemetry>;rt="tributary.telemetry";if="core.s";ct="50 60 110 112";obs`,
		`</devices/%7Bid%7D/state/desired>;rt="tributary.state.desired";if="core.p";ct="50 60";obs`,
		`</devices/%7Bid%7D/commands/%7Bname%7D>;rt="tributary.command";if="core.a"`,
	} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("got %q, want it to contain %q", r.Body, want)
		}
	}
	if n := len(strings.Split(r.Body, ",<")); n != len(links) {
		t.Errorf("got %d links, want %d", n, len(links))
	}

	r = get(t, cc, "/.well-known/core", query("rt=tributary.state.desired", "id=d1")...)
	if want := `</devices/d1/state/desired>;rt="tributary.state.desired";if="core.p";ct="50 60";obs;title="desired state: GET, observe"`; r.Body != want {
		t.Errorf("?rt=: got %q, want %q", r.Body, want)
	}
	r = get(t, cc, "/.well-known/core", query("rt=tributary.command*")...)
	if n := strings.Count(r.Body, "<"); n != 2 {
		t.Errorf("?rt=tributary.command*: got %d links (%q), want 2", n, r.Body)
	}
	r = get(t, cc, "/.well-known/core", query("if=core.p")...)
	if n := strings.Count(r.Body, "<"); n != 1 || !strings.Contains(r.Body, "state/desired") {
		t.Errorf("?if=core.p: got %q, want only state/desired", r.Body)
	}
	r = get(t, cc, "/.well-known/core", query("rt=nothing")...)
	if r.Code != codes.NotFound {
		t.Errorf("?rt=nothing: got %s, want 4.04", codeName(r.Code))
	}
}

// TestRawExchanges checks what go-coap's client hides: a non-confirmable request gets a
// non-confirmable response, and unauthenticated discovery answers with one small block.
func TestRawExchanges(t *testing.T) {
	h := newHub(t)
	conn, err := net.Dial("udp", h.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 512)

	m := message.Message{Code: codes.POST, Type: message.NonConfirmable, MessageID: 7, Token: []byte{7}, Payload: []byte(`{"x":1}`)}
	m.Options, _, _ = m.Options.SetPath(buf, "/devices/d1/telemetry")
	m.Options, _, _ = m.Options.AddString(buf[64:], message.URIQuery, "token="+h.tokens["d1"])
	writeDatagram(t, conn, m)
	if resp := readDatagram(t, conn); resp.Type != message.NonConfirmable || resp.Code != codes.Changed {
		t.Errorf("NON POST: got %v %v, want a non-confirmable 2.04", resp.Type, resp.Code)
	}

	m = message.Message{Code: codes.GET, Type: message.Confirmable, MessageID: 8, Token: []byte{8}}
	m.Options, _, _ = m.Options.SetPath(buf, "/.well-known/core")
	writeDatagram(t, conn, m)
	resp := readDatagram(t, conn)
	block, err := resp.Options.GetUint32(message.Block2)
	if resp.Code != codes.Content || err != nil || len(resp.Payload) != discoveryBlock {
		t.Fatalf("discovery: got %v, %d bytes, Block2 %v, want 2.05 with one %d-byte block", resp.Code, len(resp.Payload), err, discoveryBlock)
	}
	if szx, num, more, _ := blockwise.DecodeBlockOption(block); szx != blockwise.SZX64 || num != 0 || !more {
		t.Errorf("Block2: got szx %v num %d more %v, want 64 bytes, block 0, more", szx, num, more)
	}
}
