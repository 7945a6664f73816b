package hubtest

import (
	"context"
	"net"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
)

// MQTT5 connects an MQTT 5 client to the hub; onPublish (may be nil) receives what is
// delivered. The CONNACK is returned even when the hub refuses the connection, so tests can
// check its reason code. A connected client is disconnected when the test ends.
func (h *Hub) MQTT5(t testing.TB, clientID, user, pass string, onPublish func(*paho5.Publish)) (*paho5.Client, *paho5.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", h.MQTTAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho5.ClientConfig{Conn: conn}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			onPublish(pr.Packet)
			return true, nil
		}}
	}
	c := paho5.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{ClientID: clientID, Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err == nil {
		t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	}
	return c, ca, err
}
