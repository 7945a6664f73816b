package hub_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
)

func v5Connect(t *testing.T, addr, id, user, pass string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err == nil {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

// TestBadInputIsAnsweredAndDeadLettered sends each kind of bad input over MQTT 5 and CoAP and
// checks the protocol answer, the dead letter over the HTTP API and the counters on /metrics.
func TestBadInputIsAnsweredAndDeadLettered(t *testing.T) {
	h := hubtest.Start(t, func(c *hub.Config) { c.MaxPayload = 1024 })
	token := h.CreateDevice("d1", nil)
	h.CreateDevice("d2", nil)

	if _, ca, err := v5Connect(t, h.MQTTAddr(), "x1", "d1", "wrong"); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("wrong token: CONNACK %+v, %v; want reason 0x87", ca, err)
	}
	if _, ca, err := v5Connect(t, h.MQTTAddr(), "x2", "ghost", "whatever"); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("unknown device: CONNACK %+v, %v; want reason 0x87", ca, err)
	}
	dev, _, err := v5Connect(t, h.MQTTAddr(), "d1", "d1", token)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(topic, payload string) byte {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pr, err := dev.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
		if pr == nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		return pr.ReasonCode
	}
	for _, tt := range []struct {
		topic, payload string
		code           byte
	}{
		{"devices/d2/telemetry", `{"t":1}`, 0x87},
		{"devices/d1/telemetry", `{"t":`, 0x99},
		{"devices/d1/telemetry", `{"t":"` + strings.Repeat("x", 2000) + `"}`, 0x95},
		{"devices/d1/telemetry", `{"t":1}`, 0},
	} {
		if got := publish(tt.topic, tt.payload); got != tt.code {
			t.Errorf("publish %s %.20q: reason 0x%02x, want 0x%02x", tt.topic, tt.payload, got, tt.code)
		}
	}

	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	post := func(path, query, payload string) (codes.Code, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var opts []message.Option
		for q := range strings.SplitSeq(query, "&") {
			opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
		}
		resp, err := cc.Post(ctx, path, message.AppJSON, strings.NewReader(payload), opts...)
		if err != nil {
			t.Fatalf("coap post %s: %v", path, err)
		}
		body, _ := resp.ReadBody()
		return resp.Code(), string(body)
	}
	for _, tt := range []struct {
		path, query, payload string
		code                 codes.Code
		says                 string
	}{
		{"/devices/d1/telemetry", "token=wrong", `{"t":1}`, codes.Unauthorized, ""},
		{"/devices/d2/telemetry", "token=" + token + "&id=d1", `{"t":1}`, codes.Forbidden, "devices/d1/"},
		{"/devices/d1/telemetry", "token=" + token, `[1,2`, codes.BadRequest, "telemetry"},
		{"/devices/d1/nothing", "token=" + token, `{}`, codes.NotFound, ""},
	} {
		if code, body := post(tt.path, tt.query, tt.payload); code != tt.code || !strings.Contains(body, tt.says) {
			t.Errorf("coap post %s?%s: %v %q, want %v mentioning %q", tt.path, tt.query, code, body, tt.code, tt.says)
		}
	}

	var dead struct {
		Messages []struct{ Device, Topic, Protocol, Reason string }
	}
	wantReasons := []string{"not authorized", "not authorized", "forbidden", "invalid payload", "too large", "not authorized", "forbidden", "invalid payload", "unknown topic"}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		dead.Messages = nil
		h.Do("GET", "/api/v1/deadletters?limit=100", nil, &dead)
		return len(dead.Messages) >= len(wantReasons)
	}, "dead letters: got %d, want at least %d", len(dead.Messages), len(wantReasons))
	for _, want := range wantReasons {
		found := false
		for i, d := range dead.Messages {
			if strings.Contains(d.Reason, want) {
				dead.Messages = append(dead.Messages[:i], dead.Messages[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no dead letter with reason %q (left: %+v)", want, dead.Messages)
		}
	}

	resp, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{
		`tributary_messages_rejected_total{protocol="mqtt",reason="forbidden"}`,
		`tributary_messages_rejected_total{protocol="coap",reason="invalid_payload"}`,
		`tributary_dead_letters_total{reason="too_large"}`,
		`tributary_messages_in_total{protocol="mqtt"}`,
		`tributary_publish_seconds_bucket`,
	} {
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}
