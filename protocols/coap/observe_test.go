package coap

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/protocols"
)

func TestObserveGetsMessagesFromEveryProtocolOnce(t *testing.T) {
	h := newHub(t)
	delivered := metricValue(protocols.Deliveries.WithLabelValues("coap"))
	connected := metricValue(protocols.Connected.WithLabelValues("coap"))

	app := dial(t, h.srv.Addr())
	obs, ch := observe(t, app, "/devices/d1/telemetry", "key="+testKey)
	reg := next(t, ch)
	if reg.Code != codes.Content || reg.Body != "" || reg.Seq < 0 {
		t.Fatalf("registration: got %s %q seq %d, want 2.05, empty, with Observe", codeName(reg.Code), reg.Body, reg.Seq)
	}
	if got := metricValue(protocols.Connected.WithLabelValues("coap")) - connected; got != 1 {
		t.Errorf("connected gauge: got +%v, want +1", got)
	}

	publishBus(t, h.bus, "devices/d1/telemetry", payload.JSON, `{"via":"mqtt"}`)
	dev := dial(t, h.srv.Addr())
	if r := post(t, dev, "/devices/d1/telemetry", message.AppJSON, `{"via":"coap"}`, "token="+h.tokens["d1"]); r.Code != codes.Changed {
		t.Fatalf("POST: got %s %q, want 2.04", codeName(r.Code), r.Body)
	}
	// A sentinel: if anything were delivered twice, it would arrive before it.
	publishBus(t, h.bus, "devices/d1/telemetry", payload.JSON, `{"via":"sentinel"}`)

	prev := reg.Seq
	for _, want := range []string{`{"via":"mqtt"}`, `{"via":"coap"}`, `{"via":"sentinel"}`} {
		n := next(t, ch)
		if n.Code != codes.Content || n.Body != want || n.Format != int(message.AppJSON) {
			t.Fatalf("got %s %q content-format %d, want 2.05 %q 50", codeName(n.Code), n.Body, n.Format, want)
		}
		if n.Seq <= prev {
			t.Errorf("Observe: got %d after %d, want it increasing", n.Seq, prev)
		}
		prev = n.Seq
	}
	eventually(t, "3 deliveries counted", func() bool {
		return metricValue(protocols.Deliveries.WithLabelValues("coap"))-delivered == 3
	})

	// Observe=1 deregisters.
	if err := obs.Cancel(testCtx(t)); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	eventually(t, "observer removed", func() bool { return h.srv.obs.count() == 0 })
	if got := metricValue(protocols.Connected.WithLabelValues("coap")) - connected; got != 0 {
		t.Errorf("connected gauge after cancel: got %+v, want +0", got)
	}
	publishBus(t, h.bus, "devices/d1/telemetry", payload.JSON, `{"via":"late"}`)
	select {
	case n := <-ch:
		t.Errorf("got notification %q after cancel, want none", n.Body)
	default:
	}
}

func TestStateDesired(t *testing.T) {
	h := newHub(t)
	dev := dial(t, h.srv.Addr())
	tok := "token=" + h.tokens["d1"]

	if r := get(t, dev, "/devices/d1/state/desired", query(tok)...); r.Code != codes.NotFound {
		t.Errorf("GET before any desired state: got %s %q, want 4.04", codeName(r.Code), r.Body)
	}
	publishBus(t, h.bus, "devices/d1/state/desired", payload.JSON, `{"led":"on"}`)
	r := get(t, dev, "/devices/d1/state/desired", query(tok)...)
	if r.Code != codes.Content || r.Body != `{"led":"on"}` || r.Format != int(message.AppJSON) || len(r.ETag) == 0 {
		t.Fatalf("GET: got %s %q content-format %d etag %x, want 2.05 {\"led\":\"on\"} 50 with an ETag", codeName(r.Code), r.Body, r.Format, r.ETag)
	}
	r2 := get(t, dev, "/devices/d1/state/desired", append(query(tok), message.Option{ID: message.ETag, Value: r.ETag})...)
	if r2.Code != codes.Valid || r2.Body != "" {
		t.Errorf("GET with the current ETag: got %s %q, want 2.03 without payload", codeName(r2.Code), r2.Body)
	}

	_, ch := observe(t, dev, "/devices/d1/state/desired", tok)
	reg := next(t, ch)
	if reg.Code != codes.Content || reg.Body != `{"led":"on"}` || reg.Seq < 0 {
		t.Fatalf("registration: got %s %q seq %d, want 2.05 with the current desired state", codeName(reg.Code), reg.Body, reg.Seq)
	}
	publishBus(t, h.bus, "devices/d1/state/desired", payload.JSON, `{"led":"off"}`)
	n := next(t, ch)
	if n.Body != `{"led":"off"}` || n.Seq <= reg.Seq {
		t.Errorf("notification: got %q seq %d, want {\"led\":\"off\"} after seq %d", n.Body, n.Seq, reg.Seq)
	}

	// What a device may read.
	for _, tt := range []struct {
		path string
		q    []string
		want codes.Code
	}{
		{"/devices/d1/telemetry", []string{tok}, codes.Forbidden},
		{"/devices/d1/state/reported", []string{tok}, codes.Forbidden},
		{"/devices/d2/state/desired", []string{"id=d1", tok}, codes.Forbidden},
		{"/devices/d2/state/desired", []string{tok}, codes.Unauthorized}, // d1's token is not d2's
		{"/devices/d1/nonsense", []string{tok}, codes.NotFound},
		{"/devices/d1/commands/reboot", []string{tok}, codes.NotFound}, // allowed, nothing stored
		{"/devices/d2/state/desired", []string{"key=" + testKey}, codes.NotFound},
	} {
		if r := get(t, dev, tt.path, query(tt.q...)...); r.Code != tt.want {
			t.Errorf("GET %s %v: got %s %q, want %s", tt.path, tt.q, codeName(r.Code), r.Body, codeName(tt.want))
		}
	}
}

// TestObserveCommandsDoesNotReplay: a device re-registering after a reconnect must not get
// the last command again.
func TestObserveCommandsDoesNotReplay(t *testing.T) {
	h := newHub(t)
	publishBus(t, h.bus, "devices/d1/commands/reboot", payload.JSON, `{"old":true}`)
	dev := dial(t, h.srv.Addr())
	_, ch := observe(t, dev, "/devices/d1/commands/reboot", "token="+h.tokens["d1"])
	if reg := next(t, ch); reg.Code != codes.Content || reg.Body != "" {
		t.Fatalf("registration: got %s %q, want 2.05 without payload", codeName(reg.Code), reg.Body)
	}
	publishBus(t, h.bus, "devices/d1/commands/reboot", payload.JSON, `{"delay":5}`)
	if n := next(t, ch); n.Body != `{"delay":5}` {
		t.Errorf("got %q, want the new command", n.Body)
	}
}

// rawObserver registers an observation from a plain UDP socket, so the test controls what
// the "client" answers to notifications.
func rawObserver(t *testing.T, addr, path string, q ...string) net.Conn {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m := message.Message{Code: codes.GET, Type: message.Confirmable, MessageID: 1, Token: []byte("raw-obs")}
	buf := make([]byte, 512)
	m.Options, _, _ = m.Options.SetObserve(buf, 0)
	m.Options, _, _ = m.Options.SetPath(buf[8:], path)
	for i, v := range q {
		m.Options, _, _ = m.Options.AddString(buf[128+64*i:], message.URIQuery, v)
	}
	writeDatagram(t, conn, m)
	if resp := readDatagram(t, conn); resp.Code != codes.Content {
		t.Fatalf("raw observe: got %v, want 2.05", resp.Code)
	}
	return conn
}

func writeDatagram(t testing.TB, conn net.Conn, m message.Message) {
	t.Helper()
	b := make([]byte, 1024)
	n, err := coderEncode(m, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b[:n]); err != nil {
		t.Fatal(err)
	}
}

// TestSlowObserverDoesNotStallOthers: one observer never acknowledges; another gets every
// message promptly and in order, the silent one's queue overflows (counted) and it is dropped
// once its notification times out.
func TestSlowObserverDoesNotStallOthers(t *testing.T) {
	h := newHub(t, withConfig(func(c *Config) { c.NotifyQueue = 4; c.NotifyTimeout = 2 * time.Second }))
	full := metricValue(metricNotifyDropped.WithLabelValues("queue_full"))
	unacked := metricValue(metricNotifyDropped.WithLabelValues("unacknowledged"))

	rawObserver(t, h.srv.Addr(), "/devices/d1/telemetry", "key="+testKey)
	app := dial(t, h.srv.Addr())
	_, ch := observe(t, app, "/devices/d1/telemetry", "key="+testKey)
	next(t, ch)

	// In lockstep: each message is published once the healthy observer has the one before,
	// so only the silent observer's queue can overflow.
	const n = 20
	for i := range n {
		publishBus(t, h.bus, "devices/d1/telemetry", payload.JSON, `{"i":`+strconv.Itoa(i)+`}`)
		if got := next(t, ch); got.Body != `{"i":`+strconv.Itoa(i)+`}` {
			t.Fatalf("notification %d: got %q, want {\"i\":%d}", i, got.Body, i)
		}
	}
	if got := metricValue(metricNotifyDropped.WithLabelValues("queue_full")) - full; got < n-4-1 {
		t.Errorf("queue_full drops: got %v, want at least %d", got, n-4-1)
	}
	eventually(t, "silent observer dropped", func() bool { return h.srv.obs.count() == 1 })
	if got := metricValue(metricNotifyDropped.WithLabelValues("unacknowledged")) - unacked; got != 1 {
		t.Errorf("unacknowledged drops: got %v, want 1", got)
	}
}

// TestResetCancelsObservation: answering a notification with Reset ends the observation
// (RFC 7641 §3.6), long before the notification would time out.
func TestResetCancelsObservation(t *testing.T) {
	h := newHub(t)
	conn := rawObserver(t, h.srv.Addr(), "/devices/d1/telemetry", "key="+testKey)
	if h.srv.obs.count() != 1 {
		t.Fatalf("got %d observers, want 1", h.srv.obs.count())
	}
	publishBus(t, h.bus, "devices/d1/telemetry", payload.JSON, `{"x":1}`)
	n := readDatagram(t, conn)
	if n.Type != message.Confirmable || n.Code != codes.Content || string(n.Payload) != `{"x":1}` {
		t.Fatalf("got %v %v %q, want a confirmable 2.05 notification", n.Type, n.Code, n.Payload)
	}
	writeDatagram(t, conn, message.Message{Type: message.Reset, Code: codes.Empty, MessageID: n.MessageID})
	eventually(t, "observer removed by Reset", func() bool { return h.srv.obs.count() == 0 })
}

func TestObserverLimits(t *testing.T) {
	h := newHub(t, withConfig(func(c *Config) { c.MaxObserversPerPeer = 1 }))
	refused := metricValue(metricObserveRefused)
	app := dial(t, h.srv.Addr())
	observe(t, app, "/devices/d1/telemetry", "key="+testKey)
	resp, err := app.Get(testCtx(t), "/devices/d2/telemetry", append(query("key="+testKey), message.Option{ID: message.Observe, Value: []byte{}})...)
	if err != nil {
		t.Fatal(err)
	}
	if r := readReply(t, resp); r.Seq != -1 {
		t.Errorf("second observation of a peer limited to 1: got Observe %d, want a plain response", r.Seq)
	}
	if got := metricValue(metricObserveRefused) - refused; got != 1 {
		t.Errorf("refused: got %v, want 1", got)
	}
	if got := h.srv.obs.count(); got != 1 {
		t.Errorf("got %d observers, want 1", got)
	}
}

// TestLargeNotificationIsBlockwise: a notification larger than a block goes out as its first
// block; go-coap's client fetches the rest with GET and Block2.
func TestLargeNotificationIsBlockwise(t *testing.T) {
	h := newHub(t)
	app := dial(t, h.srv.Addr())
	_, ch := observe(t, app, "/devices/d1/events/dump", "key="+testKey)
	next(t, ch)
	big := `{"blob":"` + strings.Repeat("0123456789", 300) + `"}`
	publishBus(t, h.bus, "devices/d1/events/dump", payload.JSON, big)
	if n := next(t, ch); n.Body != big {
		t.Errorf("got %d bytes, want %d", len(n.Body), len(big))
	}
}

// TestInactivePeers: a silent peer is pinged once its inactivity timeout passes; one that
// does not answer is forgotten with its observations, one that does keeps them.
func TestInactivePeers(t *testing.T) {
	h := newHub(t, withConfig(func(c *Config) { c.InactivityTimeout = time.Second }))
	app := dial(t, h.srv.Addr())
	_, ch := observe(t, app, "/devices/d1/telemetry", "key="+testKey)
	next(t, ch)
	rawObserver(t, h.srv.Addr(), "/devices/d1/telemetry", "key="+testKey) // answers nothing
	if got := h.srv.obs.count(); got != 2 {
		t.Fatalf("got %d observers, want 2", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.srv.obs.count() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("got %d observers 30s on, want the silent peer's dropped", h.srv.obs.count())
		}
		time.Sleep(50 * time.Millisecond)
	}
	publishBus(t, h.bus, "devices/d1/telemetry", payload.JSON, `{"still":"here"}`)
	if n := next(t, ch); n.Body != `{"still":"here"}` {
		t.Errorf("got %q, want the pinged observer still served", n.Body)
	}
}
