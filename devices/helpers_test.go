package devices_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// call sends an authenticated API request with a raw body and headers (k, v pairs) and
// returns the status, the body and the response headers.
func call(t *testing.T, h *hubtest.Hub, method, path string, body []byte, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, h.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header
}

// jsonCall is call with v marshalled as the body (nil: none) and the answer decoded into out.
func jsonCall(t *testing.T, h *hubtest.Hub, method, path string, v, out any, headers ...string) int {
	t.Helper()
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	code, data, _ := call(t, h, method, path, body, headers...)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, code, data, err)
		}
	}
	return code
}

// apiError is the error field of an answer.
type apiError struct {
	Error string `json:"error"`
}

// deviceJSON is a device as the API shows it.
type deviceJSON struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Tags        map[string]string `json:"tags"`
	Metadata    map[string]any    `json:"metadata"`
	Status      string            `json:"status"`
	LastSeen    *time.Time        `json:"last_seen"`
	Protocol    string            `json:"protocol"`
	RemoteAddr  string            `json:"remote_addr"`
	StatusSince *time.Time        `json:"status_since"`
	Token       string            `json:"token"`
}

func getDevice(t *testing.T, h *hubtest.Hub, id string) deviceJSON {
	t.Helper()
	var d deviceJSON
	if code := jsonCall(t, h, "GET", "/api/v1/devices/"+id, nil, &d); code != 200 {
		t.Fatalf("GET device %s: %d", id, code)
	}
	return d
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	hubtest.Eventually(t, d, cond, format, args...)
}

// mqttDevice connects an MQTT 3.1.1 client; opts may change the options first.
func mqttDevice(t *testing.T, h *hubtest.Hub, clientID, user, pass string, opts ...func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	for _, f := range opts {
		f(o)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s as %s: %v", clientID, user, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return c
}

func mqttSubscribe(t *testing.T, c paho.Client, filter string, qos byte, fn paho.MessageHandler) {
	t.Helper()
	if tok := c.Subscribe(filter, qos, fn); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

// coapDial opens a CoAP client to the hub.
func coapDial(t *testing.T, h *hubtest.Hub) *client.Conn {
	t.Helper()
	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func query(q string) message.Option { return message.Option{ID: message.URIQuery, Value: []byte(q)} }

// coapDo sends a confirmable request and returns the code and the payload.
func coapDo(t *testing.T, cc *client.Conn, method codes.Code, path string, cf message.MediaType, body string, queries ...string) (codes.Code, string, message.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := cc.NewPostRequest(ctx, path, cf, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.SetBody(nil)
	}
	req.SetCode(method)
	if body == "" {
		req.Remove(message.ContentFormat)
	}
	for _, q := range queries {
		req.AddOptionString(message.URIQuery, q)
	}
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatalf("coap %v %s: %v", method, path, err)
	}
	data, _ := resp.ReadBody()
	opts := make(message.Options, len(resp.Options()))
	copy(opts, resp.Options())
	return resp.Code(), string(data), opts
}

// natsCollector subscribes with nats.go and keeps what arrives.
type natsCollector struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func natsSubscribe(t *testing.T, h *hubtest.Hub, subject string) *natsCollector {
	t.Helper()
	nc, err := nats.Connect(h.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := &natsCollector{}
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

// statuses returns the status events received for device id, in order.
func (c *natsCollector) statuses(id string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, m := range c.msgs {
		if m.Subject != "iot.devices."+id+".status" {
			continue
		}
		var ev map[string]any
		if json.Unmarshal(m.Data, &ev) == nil {
			out = append(out, ev)
		}
	}
	return out
}

// collector keeps MQTT messages.
type collector struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (c *collector) add(_ paho.Client, m paho.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *collector) payloads(topic string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if topic == "" || m.Topic() == topic {
			out = append(out, string(m.Payload()))
		}
	}
	return out
}

func newPublish(topic, payload string) *paho5.Publish {
	return &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}
}
