package mqtt_test

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/mqtt"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

const (
	apiKey      = "test-api-key"
	testTimeout = 10 * time.Second
	// testMaxPayload is the ingest payload limit in these tests; the broker's packet limit is
	// then testMaxPayload + 64 KiB.
	testMaxPayload = 4096
)

// creds is the hub's Authenticator in small: the device registry plus one API key.
type creds struct {
	reg *devices.Registry
	key string
}

func (c creds) AuthenticateDevice(ctx context.Context, id, token string) error {
	return c.reg.AuthenticateDevice(ctx, id, token)
}

func (c creds) AuthenticateApp(_ context.Context, key string) error {
	if subtle.ConstantTimeCompare([]byte(key), []byte(c.key)) != 1 {
		return errors.New("wrong API key")
	}
	return nil
}

// presenceLog records Presence calls.
type presenceLog struct {
	mu     sync.Mutex
	events []string
}

func (p *presenceLog) Connected(id, protocol, remote string) {
	p.add(fmt.Sprintf("up %s %s %t", id, protocol, remote != ""))
}
func (p *presenceLog) Disconnected(id, protocol string) {
	p.add(fmt.Sprintf("down %s %s", id, protocol))
}
func (p *presenceLog) add(e string) {
	p.mu.Lock()
	p.events = append(p.events, e)
	p.mu.Unlock()
}
func (p *presenceLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.events, ", ")
}

// hub is a running MQTT adapter over a real embedded JetStream and device registry.
type hub struct {
	bus      *streams.Bus
	reg      *devices.Registry
	srv      *mqtt.Server
	presence *presenceLog
	tokens   map[string]string // device ID → token
	stop     func() error      // cancels Run and returns its error
}

// startHub starts everything with devices d1 and d2 registered. cfg.Addr and cfg.WSAddr
// default to free loopback ports.
func startHub(t testing.TB, cfg mqtt.Config) *hub {
	t.Helper()
	return startHubWith(t, cfg, nil)
}

// startHubWith is startHub with the ingest pipeline wrapped by wrap (when not nil); setup
// runs on the server before Run.
func startHubWith(t testing.TB, cfg mqtt.Config, wrap func(*protocols.Ingest) mqtt.Ingester, setup ...func(*mqtt.Server)) *hub {
	t.Helper()
	ctx := context.Background()
	log := streamstest.Logger(t)
	bus := streamstest.New(t)
	reg, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		t.Fatalf("device registry: %v", err)
	}
	h := &hub{bus: bus, reg: reg, presence: &presenceLog{}, tokens: map[string]string{}}
	for _, id := range []string{"d1", "d2"} {
		if _, h.tokens[id], err = reg.Create(ctx, devices.Device{ID: id}); err != nil {
			t.Fatalf("create device %s: %v", id, err)
		}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.WSAddr == "" {
		cfg.WSAddr = "127.0.0.1:0"
	}
	var in mqtt.Ingester = protocols.NewIngest(bus, testMaxPayload, log)
	if wrap != nil {
		in = wrap(in.(*protocols.Ingest))
	}
	h.srv, err = mqtt.New(cfg, in, creds{reg: reg, key: apiKey}, bus, h.presence, log)
	if err != nil {
		t.Fatalf("mqtt.New: %v", err)
	}
	for _, f := range setup {
		f(h.srv)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.srv.Run(runCtx) }()
	var once sync.Once
	var runErr error
	h.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(testTimeout):
				runErr = fmt.Errorf("Run did not return after cancel; the adapter's goroutines:\n%s", strings.Join(adapterGoroutines(), "\n\n"))
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	})
	select {
	case <-h.srv.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(testTimeout):
		t.Fatalf("not ready after %v", testTimeout)
	}
	return h
}

// waitFor polls cond until it returns nil or the deadline passes, then fails with its last error.
func waitFor(t testing.TB, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", testTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// msg is a message an MQTT client received.
type msg struct {
	Topic, Payload, ContentType string
	QoS                         byte
	Retain                      bool
}

// inbox collects received messages.
type inbox struct {
	mu   sync.Mutex
	msgs []msg
}

func (b *inbox) add(m msg) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *inbox) all() []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]msg(nil), b.msgs...)
}

// count is how many received messages have this topic and payload.
func (b *inbox) count(topic, payload string) int {
	n := 0
	for _, m := range b.all() {
		if m.Topic == topic && m.Payload == payload {
			n++
		}
	}
	return n
}

// waitFor waits until a message with this topic and payload has arrived and returns it.
func (b *inbox) waitFor(t testing.TB, topic, payload string) msg {
	t.Helper()
	var got msg
	waitFor(t, func() error {
		for _, m := range b.all() {
			if m.Topic == topic && m.Payload == payload {
				got = m
				return nil
			}
		}
		return fmt.Errorf("received %d messages %v, want one on %s with %s", len(b.all()), b.all(), topic, payload)
	})
	return got
}

// v3 connects an MQTT 3.1.1 client (clean session, no automatic reconnect). url is
// "tcp://host:port" or "ws://host:port/mqtt".
func v3(t testing.TB, url, clientID, user, pass string) (pahov3.Client, *inbox, error) {
	t.Helper()
	in := &inbox{}
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(testTimeout).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			in.add(msg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()})
		})
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(testTimeout) {
		return nil, nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return c, in, err
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c, in, nil
}

// mustV3 is v3 that fails the test on error.
func mustV3(t testing.TB, url, clientID, user, pass string) (pahov3.Client, *inbox) {
	t.Helper()
	c, in, err := v3(t, url, clientID, user, pass)
	if err != nil {
		t.Fatalf("v3 connect %s as %s: %v", clientID, user, err)
	}
	return c, in
}

// v3Code is the CONNACK return code of a refused MQTT 3.1.1 connection.
func v3Code(t testing.TB, url, user, pass string) byte {
	t.Helper()
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("refused-" + user).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(testTimeout)
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(testTimeout) {
		t.Fatalf("v3 connect as %q timed out", user)
	}
	if tok.Error() == nil {
		c.Disconnect(0)
		t.Fatalf("v3 connect as %q with password %q: got success, want refusal", user, pass)
	}
	return tok.(*pahov3.ConnectToken).ReturnCode()
}

func v3Publish(t testing.TB, c pahov3.Client, topic string, qos byte, payload string) error {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(testTimeout) {
		return errors.New("publish not acknowledged")
	}
	return tok.Error()
}

func v3Subscribe(t testing.TB, c pahov3.Client, filter string, qos byte) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(testTimeout) {
		t.Fatalf("subscribe %s: no SUBACK", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*pahov3.SubscribeToken).Result()[filter]
}

// v5client is an MQTT 5 client with the messages it received.
type v5client struct {
	*paho.Client
	in   *inbox
	conn net.Conn
}

// v5 connects an MQTT 5 client over TCP; the CONNACK is returned also when refused.
func v5(t testing.TB, addr, clientID, user, pass string, will *paho.WillMessage) (*v5client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	in := &inbox{}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			m := msg{Topic: pr.Packet.Topic, Payload: string(pr.Packet.Payload), QoS: pr.Packet.QoS, Retain: pr.Packet.Retain}
			if pr.Packet.Properties != nil {
				m.ContentType = pr.Packet.Properties.ContentType
			}
			in.add(m)
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{
		ClientID: clientID, Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != "",
		KeepAlive: 30, CleanStart: true, WillMessage: will,
	})
	if err != nil {
		return nil, ca, err
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		<-c.Done()
	})
	return &v5client{Client: c, in: in, conn: conn}, ca, nil
}

func mustV5(t testing.TB, addr, clientID, user, pass string) *v5client {
	t.Helper()
	c, _, err := v5(t, addr, clientID, user, pass, nil)
	if err != nil {
		t.Fatalf("v5 connect %s as %s: %v", clientID, user, err)
	}
	return c
}

// publish sends a QoS 0/1 publish and returns the PUBACK reason code (0 for QoS 0).
func (c *v5client) publish(t testing.TB, topic string, qos byte, payload []byte, contentType string) byte {
	t.Helper()
	p := &paho.Publish{Topic: topic, QoS: qos, Payload: payload}
	if contentType != "" {
		p.Properties = &paho.PublishProperties{ContentType: contentType}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pr, err := c.Publish(ctx, p)
	if pr == nil {
		t.Fatalf("v5 publish %s: no response: %v", topic, err)
	}
	return pr.ReasonCode
}

// subscribe returns the SUBACK reason code.
func (c *v5client) subscribe(t testing.TB, filter string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil || len(sa.Reasons) != 1 {
		t.Fatalf("v5 subscribe %s: no SUBACK: %v", filter, err)
	}
	return sa.Reasons[0]
}

// deadLetter waits for a dead letter of device (or "" for any) whose reason contains want.
func (h *hub) deadLetter(t testing.TB, device, want string) *streams.Envelope {
	t.Helper()
	var found *streams.Envelope
	waitFor(t, func() error {
		page, err := h.bus.DeadLetters(context.Background(), device, 100, 0)
		if err != nil {
			return err
		}
		var reasons []string
		for _, d := range page.Messages {
			if strings.Contains(d.Meta[streams.MetaReason], want) {
				found = d
				return nil
			}
			reasons = append(reasons, d.Meta[streams.MetaReason])
		}
		return fmt.Errorf("dead letters of %q: got reasons %q, want one containing %q", device, reasons, want)
	})
	return found
}

// stored returns the messages stored on topic.
func (h *hub) stored(t testing.TB, topic string) []*streams.Envelope {
	t.Helper()
	page, err := h.bus.Latest(context.Background(), []string{topic}, 100, 0)
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	return page.Messages
}

// adapterGoroutines lists goroutines running code of the adapter or of mochi.
func adapterGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/mochi-mqtt/server") || strings.Contains(g, "tributary/protocols/mqtt.") {
			out = append(out, g)
		}
	}
	return out
}

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
