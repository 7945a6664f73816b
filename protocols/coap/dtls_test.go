package coap

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/payload"
)

func TestPSKFromToken(t *testing.T) {
	// echo -n secret | sha256sum
	const want = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
	if got := string(PSKFromToken("secret")); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestDTLSDevice(t *testing.T) {
	h := newHub(t)
	psk := PSKFromToken(h.tokens["d1"])
	cc := dialDTLS(t, h.srv.DTLSAddr(), "d1", psk)

	// Discovery names the session's device, first request or not.
	if r := get(t, cc, "/.well-known/core", query("rt=tributary.telemetry")...); !strings.HasPrefix(r.Body, "</devices/d1/telemetry>") {
		t.Errorf("discovery over DTLS: got %q, want d1's links", r.Body)
	}

	// No query credentials: the PSK identity is the device.
	r := post(t, cc, "/devices/d1/telemetry", message.AppJSON, `{"t":1}`)
	if r.Code != codes.Changed {
		t.Fatalf("POST over DTLS: got %s %q, want 2.04", codeName(r.Code), r.Body)
	}
	env, err := h.bus.Last(testCtx(t), "devices/d1/telemetry")
	if err != nil || env == nil || string(env.Payload) != `{"t":1}` || env.Protocol != "coap" || env.DeviceID != "d1" {
		t.Fatalf("got %v, %v, want the message stored from d1 over coap", env, err)
	}
	if h.presence.get("d1") == "" {
		t.Error("presence not told of the DTLS device")
	}
	// Another device's path.
	r = post(t, cc, "/devices/d2/telemetry", message.AppJSON, `{"t":1}`)
	if r.Code != codes.Forbidden || !strings.Contains(r.Body, "devices/d1/") {
		t.Errorf("POST to d2 as d1: got %s %q, want 4.03", codeName(r.Code), r.Body)
	}
	// Query credentials do not override the session's identity.
	r = post(t, cc, "/devices/d2/telemetry", message.AppJSON, `{"t":1}`, "token="+h.tokens["d2"])
	if r.Code != codes.Forbidden {
		t.Errorf("POST to d2 as d1 with d2's token: got %s %q, want 4.03", codeName(r.Code), r.Body)
	}

	// A rotated token ends what the old key can do.
	if _, err := h.reg.RotateToken(testCtx(t), "d1"); err != nil {
		t.Fatal(err)
	}
	r = post(t, cc, "/devices/d1/telemetry", message.AppJSON, `{"t":2}`)
	if r.Code != codes.Unauthorized || !strings.Contains(r.Body, "connect again") {
		t.Errorf("POST after token rotation: got %s %q, want 4.01", codeName(r.Code), r.Body)
	}
}

func TestDTLSRefusesWrongKeys(t *testing.T) {
	h := newHub(t)
	addr, err := net.ResolveUDPAddr("udp", h.srv.DTLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	// A wrong key shows as the server dropping the client's Finished message (DTLS discards
	// records it cannot decrypt), so the client gives up at its deadline.
	handshake := func(identity string, key []byte, wait ...time.Duration) error {
		conn, err := piondtls.DialWithOptions("udp", addr,
			piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			piondtls.WithPSKIdentityHint([]byte(identity)),
			piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), append(wait, 2*time.Second)[0])
		defer cancel()
		return conn.HandshakeContext(ctx)
	}
	if err := handshake("d1", PSKFromToken(h.tokens["d1"]), 10*time.Second); err != nil {
		t.Fatalf("right key: %v", err)
	}
	if err := handshake("d1", PSKFromToken("wrong")); err == nil {
		t.Error("wrong key: handshake succeeded, want it to fail")
	}
	if err := handshake("d1", []byte(h.tokens["d1"])); err == nil {
		t.Error("the raw token as key: handshake succeeded, want it to fail (the key is its SHA-256)")
	}
	if err := handshake("ghost", PSKFromToken("x")); err == nil {
		t.Error("unknown identity: handshake succeeded, want it to fail")
	}
	if got := lastReason(t, h.bus, "ghost"); !strings.Contains(got, "unknown PSK identity") {
		t.Errorf("dead letter: got reason %q, want it to name the unknown PSK identity", got)
	}
	if err := handshake("app", []byte("not the key")); err == nil {
		t.Error("app with a wrong key: handshake succeeded, want it to fail")
	}
}

func TestDTLSAppObservesAndCloseDeregisters(t *testing.T) {
	h := newHub(t, withConfig(func(c *Config) { c.NotifyTimeout = time.Second }))
	app := dialDTLS(t, h.srv.DTLSAddr(), "app", []byte(testKey))
	_, ch := observe(t, app, "/devices/d2/events/alarm")
	if reg := next(t, ch); reg.Code != codes.Content {
		t.Fatalf("registration: got %s %q, want 2.05", codeName(reg.Code), reg.Body)
	}
	dev := dialDTLS(t, h.srv.DTLSAddr(), "d2", PSKFromToken(h.tokens["d2"]))
	if r := post(t, dev, "/devices/d2/events/alarm", message.AppJSON, `{"level":3}`); r.Code != codes.Changed {
		t.Fatalf("POST: got %s %q, want 2.04", codeName(r.Code), r.Body)
	}
	if n := next(t, ch); n.Body != `{"level":3}` || n.Format != int(message.AppJSON) {
		t.Errorf("notification: got %q content-format %d, want {\"level\":3} 50", n.Body, n.Format)
	}
	publishBus(t, h.bus, "devices/d2/events/alarm", payload.JSON, `{"level":4}`)
	if n := next(t, ch); n.Body != `{"level":4}` {
		t.Errorf("notification: got %q, want {\"level\":4}", n.Body)
	}
	// The client's close_notify usually ends the session at once; it is a datagram, though,
	// and when it is lost the next notification goes unacknowledged and ends the observation.
	closeClient(app)
	publishBus(t, h.bus, "devices/d2/events/alarm", payload.JSON, `{"level":5}`)
	eventually(t, "observer removed after the DTLS client closed", func() bool { return h.srv.obs.count() == 0 })
}
