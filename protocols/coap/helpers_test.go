package coap

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	netclient "github.com/plgd-dev/go-coap/v3/net/client"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

const testKey = "test-api-key-0123456789"

// testAuth is what the hub wires: the device registry plus one API key.
type testAuth struct {
	reg *devices.Registry
	key string
}

func (a testAuth) AuthenticateDevice(ctx context.Context, id, token string) error {
	return a.reg.AuthenticateDevice(ctx, id, token)
}

func (a testAuth) AuthenticateApp(_ context.Context, key string) error {
	if subtle.ConstantTimeCompare([]byte(key), []byte(a.key)) != 1 {
		return errors.New("wrong API key")
	}
	return nil
}

func (a testAuth) DevicePSK(id string) ([]byte, bool) { return a.reg.DevicePSK(id) }
func (a testAuth) AppPSK() []byte                     { return []byte(a.key) }

var _ PSKStore = testAuth{}

// presence records Seen calls.
type presence struct {
	mu   sync.Mutex
	seen map[string]string // device → remote address
}

func (p *presence) Seen(deviceID, protocol, remote string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if protocol != "coap" {
		panic("protocol " + protocol)
	}
	p.seen[deviceID] = remote
}

func (p *presence) get(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[id]
}

// hub is a real bus, registry, ingest pipeline and CoAP server on loopback.
type hub struct {
	t        testing.TB
	bus      *streams.Bus
	reg      *devices.Registry
	srv      *Server
	tokens   map[string]string
	presence *presence
	stop     func() error
}

type hubOption func(*Config, *int)

func withConfig(f func(*Config)) hubOption { return func(c *Config, _ *int) { f(c) } }

func newHub(t testing.TB, opts ...hubOption) *hub {
	t.Helper()
	bus := streamstest.New(t)
	return startHub(t, bus, opts...)
}

func startHub(t testing.TB, bus *streams.Bus, opts ...hubOption) *hub {
	t.Helper()
	ctx := context.Background()
	log := streamstest.Logger(t)
	reg, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	h := &hub{t: t, bus: bus, reg: reg, tokens: map[string]string{}, presence: &presence{seen: map[string]string{}}}
	for _, id := range []string{"d1", "d2"} {
		_, tok, err := reg.Create(ctx, devices.Device{ID: id})
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		h.tokens[id] = tok
	}
	cfg := Config{Addr: "127.0.0.1:0", DTLSAddr: "127.0.0.1:0"}
	maxPayload := 4096
	for _, o := range opts {
		o(&cfg, &maxPayload)
	}
	in := protocols.NewIngest(bus, maxPayload, log)
	h.srv, err = New(cfg, in, testAuth{reg: reg, key: testKey}, bus, h.presence, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.srv.Run(runCtx) }()
	select {
	case <-h.srv.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready after 10s")
	}
	var once sync.Once
	var runErr error
	h.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = errors.New("Run did not return 20s after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// quietErrors keeps go-coap clients from printing to stdout.
func quietErrors(error) {}

// dial connects a go-coap UDP client, closed at cleanup.
func dial(t testing.TB, addr string, opts ...udp.Option) *client.Conn {
	t.Helper()
	opts = append([]udp.Option{options.WithErrors(quietErrors)}, opts...)
	cc, err := udp.Dial(addr, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { closeClient(cc) })
	return cc
}

func closeClient(cc *client.Conn) {
	_ = cc.Close()
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
	}
}

// dialDTLS connects over DTLS with a PSK identity and key.
func dialDTLS(t testing.TB, addr, identity string, key []byte) *client.Conn {
	t.Helper()
	cc, err := coapdtls.Dial(addr, coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(quietErrors))
	if err != nil {
		t.Fatalf("dial DTLS %s: %v", addr, err)
	}
	t.Cleanup(func() { closeClient(cc) })
	return cc
}

func query(kv ...string) []message.Option {
	out := make([]message.Option, len(kv))
	for i, q := range kv {
		out[i] = message.Option{ID: message.URIQuery, Value: []byte(q)}
	}
	return out
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reply is a response read out of its pooled message.
type reply struct {
	Code   codes.Code
	Body   string
	Format int // -1: none
	Seq    int // Observe; -1: none
	ETag   []byte
	Size1  int // -1: none
}

func readReply(t testing.TB, m *pool.Message) reply {
	t.Helper()
	r := reply{Code: m.Code(), Format: -1, Seq: -1, Size1: -1}
	b, err := m.ReadBody()
	if err != nil {
		t.Errorf("read body: %v", err)
	}
	r.Body = string(b)
	if cf, err := m.ContentFormat(); err == nil {
		r.Format = int(cf)
	}
	if s, err := m.Observe(); err == nil {
		r.Seq = int(s)
	}
	if e, err := m.Options().GetBytes(message.ETag); err == nil {
		r.ETag = append([]byte(nil), e...)
	}
	if s, err := m.Options().GetUint32(message.Size1); err == nil {
		r.Size1 = int(s)
	}
	return r
}

func post(t testing.TB, cc *client.Conn, path string, cf message.MediaType, body string, q ...string) reply {
	t.Helper()
	resp, err := cc.Post(testCtx(t), path, cf, bytes.NewReader([]byte(body)), query(q...)...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer cc.ReleaseMessage(resp)
	return readReply(t, resp)
}

func get(t testing.TB, cc *client.Conn, path string, opts ...message.Option) reply {
	t.Helper()
	resp, err := cc.Get(testCtx(t), path, opts...)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer cc.ReleaseMessage(resp)
	return readReply(t, resp)
}

// observe registers an observation and returns its notifications, the registration response
// first.
func observe(t testing.TB, cc *client.Conn, path string, q ...string) (netclient.Observation, <-chan reply) {
	t.Helper()
	ch := make(chan reply, 256)
	obs, err := cc.Observe(testCtx(t), path, func(m *pool.Message) { ch <- readReply(t, m) }, query(q...)...)
	if err != nil {
		t.Fatalf("observe %s: %v", path, err)
	}
	return obs, ch
}

func next(t testing.TB, ch <-chan reply) reply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
		return reply{}
	}
}

// eventually polls cond every 10ms until it holds or 10s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deadLetter returns the reason of the newest dead letter of device ("" for the _unknown
// bucket: pass "").
func deadLetters(t testing.TB, bus *streams.Bus, device string) []*streams.Envelope {
	t.Helper()
	page, err := bus.DeadLetters(testCtx(t), device, 100, 0)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	return page.Messages
}

func lastReason(t testing.TB, bus *streams.Bus, device string) string {
	t.Helper()
	dl := deadLetters(t, bus, device)
	if len(dl) == 0 {
		return ""
	}
	return dl[len(dl)-1].Meta[streams.MetaReason]
}

func publishBus(t testing.TB, bus *streams.Bus, topic, contentType, body string) uint64 {
	t.Helper()
	dev := strings.Split(topic, "/")[1]
	seq, err := bus.Publish(testCtx(t), &streams.Envelope{ID: streams.NewID(), DeviceID: dev, Topic: topic, ContentType: contentType, Protocol: "mqtt", Payload: []byte(body), ReceivedAt: time.Now(), EventTime: time.Now()})
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return seq
}

func codeName(c codes.Code) string { return fmt.Sprintf("%s (%s)", codeString(c), c) }

const testTimeout = 10 * time.Second

var timeNow = time.Now

func coderEncode(m message.Message, b []byte) (int, error) { return coder.DefaultCoder.Encode(m, b) }

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}
