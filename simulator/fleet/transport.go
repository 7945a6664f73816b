package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// transport is a device's connection to the hub: a real MQTT or CoAP client.
type transport interface {
	connect(ctx context.Context) error
	// publish sends one telemetry message; for MQTT QoS 1 and CoAP it returns once the hub
	// has answered.
	publish(ctx context.Context, payload []byte) error
	close()
}

// requestTimeout bounds one connect or acknowledged publish.
const requestTimeout = 10 * time.Second

func newTransport(prof *Profile, ep Endpoints, id, token string) (transport, error) {
	switch prof.Protocol {
	case "mqtt":
		if ep.MQTT == "" {
			return nil, errors.New("the hub has no MQTT address")
		}
		opts := paho.NewClientOptions().AddBroker("tcp://" + ep.MQTT).SetClientID(id).
			SetUsername(id).SetPassword(token).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(60 * time.Second).
			SetConnectTimeout(requestTimeout).SetWriteTimeout(requestTimeout).SetOrderMatters(false)
		return &mqttTransport{opts: opts, topic: "devices/" + id + "/telemetry", qos: byte(prof.QoS)}, nil
	case "coap":
		if ep.CoAP == "" {
			return nil, errors.New("the hub has no CoAP address")
		}
		con := prof.Confirmable == nil || *prof.Confirmable
		return &coapTransport{addr: ep.CoAP, path: "/devices/" + id + "/telemetry",
			query: message.Option{ID: message.URIQuery, Value: []byte("token=" + token)}, con: con}, nil
	}
	return nil, fmt.Errorf("unknown protocol %q", prof.Protocol)
}

type mqttTransport struct {
	opts  *paho.ClientOptions
	c     paho.Client
	topic string
	qos   byte
}

func (t *mqttTransport) connect(ctx context.Context) error {
	t.c = paho.NewClient(t.opts)
	tok := t.c.Connect()
	if err := wait(ctx, tok); err != nil {
		// Given up on: once the attempt ends (within the connect timeout), drop the connection.
		c := t.c
		go func() {
			tok.WaitTimeout(requestTimeout)
			c.Disconnect(0)
		}()
		return fmt.Errorf("mqtt connect: %w", err)
	}
	return nil
}

// wait waits for tok until ctx ends or requestTimeout passes.
func wait(ctx context.Context, tok paho.Token) error {
	timer := time.NewTimer(requestTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errors.New("no answer in time")
	}
}

func (t *mqttTransport) publish(ctx context.Context, payload []byte) error {
	tok := t.c.Publish(t.topic, t.qos, false, payload)
	if t.qos == 0 {
		select {
		case <-tok.Done():
			return tok.Error()
		default:
			return nil
		}
	}
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("mqtt publish: %w", err)
	}
	return nil
}

func (t *mqttTransport) close() {
	if t.c != nil {
		t.c.Disconnect(10)
	}
}

type coapTransport struct {
	addr, path string
	query      message.Option
	con        bool
	cc         *udpclient.Conn
}

func (t *coapTransport) connect(context.Context) error {
	cc, err := udp.Dial(t.addr, options.WithErrors(func(error) {}))
	if err != nil {
		return fmt.Errorf("coap dial: %w", err)
	}
	t.cc = cc
	return nil
}

func (t *coapTransport) publish(ctx context.Context, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := t.cc.NewPostRequest(ctx, t.path, message.AppJSON, bytes.NewReader(payload), t.query)
	if err != nil {
		return err
	}
	defer t.cc.ReleaseMessage(req)
	if !t.con {
		req.SetType(message.NonConfirmable)
	}
	resp, err := t.cc.Do(req)
	if err != nil {
		return fmt.Errorf("coap post: %w", err)
	}
	defer t.cc.ReleaseMessage(resp)
	if c := resp.Code(); c != codes.Changed && c != codes.Created {
		return fmt.Errorf("coap post: %s", c)
	}
	return nil
}

func (t *coapTransport) close() {
	if t.cc != nil {
		_ = t.cc.Close()
		t.cc = nil
	}
}
