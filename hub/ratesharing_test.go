package hub_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestTenantRateHeldAcrossInstances: two hubs share NATS and a tenant limited to 60 msgs/s.
// Devices flood the tenant through both (400 msgs/s offered, QoS 0): together the hubs store
// the limit, not twice it. Then the flood goes on through hub A alone: A takes over nearly
// the whole limit (a fixed split by instance count would leave it half).
func TestTenantRateHeldAcrossInstances(t *testing.T) {
	t.Parallel()
	const (
		limit    = 60.0
		flooders = 20 // half on each hub
		perFlood = 20 // msgs/s each
	)
	ns := streamstest.Server(t)
	cfg := func(c *hub.Config) {
		c.NATSURL, c.NATSAddr = ns.ClientURL(), ""
		c.TenantRate, c.TenantBurst = limit, 20
	}
	a := hubtest.Start(t, cfg)
	b := hubtest.Start(t, cfg)
	tokens := createDevices(t, a, "rs", flooders, nil)

	stored := recordStored(t, ns.ClientURL())
	storedRate := func(from, to time.Time) float64 {
		time.Sleep(500 * time.Millisecond) // one stored just before to may arrive a little later
		return float64(stored.between(from, to)) / to.Sub(from).Seconds()
	}

	stops := map[*hubtest.Hub]chan struct{}{a: make(chan struct{}), b: make(chan struct{})}
	var wg sync.WaitGroup
	var sent atomic.Int64
	for i := range flooders {
		h := a
		if i%2 == 1 {
			h = b
		}
		id := fmt.Sprintf("rs%d", i)
		c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(id).
			SetUsername(id).SetPassword(tokens[id]).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("flooder %s: connect: %v", id, tok.Error())
		}
		flood(&wg, c, "devices/"+id+"/telemetry", perFlood, stops[h], &sent)
	}
	defer func() {
		for _, s := range stops {
			select {
			case <-s:
			default:
				close(s)
			}
		}
		wg.Wait()
	}()

	// Both hubs flooded: the bursts drain and the reports settle the split first.
	time.Sleep(3 * time.Second)
	from := time.Now()
	time.Sleep(4 * time.Second)
	both := storedRate(from, time.Now())

	close(stops[b])
	time.Sleep(3 * time.Second)
	from = time.Now()
	time.Sleep(4 * time.Second)
	aAlone := storedRate(from, time.Now())
	t.Logf("tenant limit %.0f/s, %d msgs/s offered: stored %.1f/s through two hubs, then %.1f/s through hub A alone", limit, flooders*perFlood, both, aAlone)
	if both < limit*0.9 || both > limit*1.1 {
		t.Errorf("two hubs stored %.1f msgs/s of a tenant limited to %.0f/s, want the limit ±10%%", both, limit)
	}
	if aAlone < limit*0.9 || aAlone > limit*1.1 {
		t.Errorf("hub A alone stored %.1f msgs/s once hub B's devices stopped, want the tenant's whole %.0f/s ±10%%", aAlone, limit)
	}
}

// TestTenantConnectionsCountedAcrossInstances: a tenant allowed 3 device connections holds 2 on
// hub A and 1 on hub B; a 4th connection, to hub B, is refused with CONNACK 0x97 naming the
// limit, and is let in once a connection on hub A ends.
func TestTenantConnectionsCountedAcrossInstances(t *testing.T) {
	t.Parallel()
	ns := streamstest.Server(t)
	cfg := func(c *hub.Config) {
		c.NATSURL, c.NATSAddr = ns.ClientURL(), ""
		c.TenantMaxConnections = 3
	}
	a := hubtest.Start(t, cfg)
	b := hubtest.Start(t, cfg)
	tokens := createDevices(t, a, "cc", 4, nil)
	connect := func(h *hubtest.Hub, id string) (*paho.Client, *paho.Connack, error) {
		c, ca, _, err := v5From(t, "", h.MQTTAddr(), id, id, tokens[id])
		return c, ca, err
	}
	a0, _, err := connect(a, "cc0")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := connect(a, "cc1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := connect(b, "cc2"); err != nil {
		t.Fatal(err)
	}
	// Hub B learns of A's connections from A's next report (every second).
	var ca *paho.Connack
	hubtest.Eventually(t, 5*time.Second, func() bool {
		c, got, err := connect(b, "cc3")
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
			time.Sleep(200 * time.Millisecond)
			return false
		}
		ca = got
		return true
	}, "a 4th connection of a tenant limited to 3 (2 on hub A, 1 on hub B) was let into hub B")
	if ca == nil || ca.ReasonCode != 0x97 || ca.Properties == nil || !strings.Contains(ca.Properties.ReasonString, "tenant default may hold 3 connections") {
		t.Fatalf("CONNACK %+v, want 0x97 naming the tenant's limit", ca)
	}
	a0.Disconnect(&paho.Disconnect{})
	hubtest.Eventually(t, 5*time.Second, func() bool {
		c, _, err := connect(b, "cc3")
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
		}
		return err == nil
	}, "the 4th connection still refused after a connection on hub A ended")
}

// storedLog records when the hub received each telemetry message stored (its Tb-Received
// header), as seen by a NATS subscriber: a subscriber that falls behind does not move a message
// into or out of a measured window.
type storedLog struct {
	mu sync.Mutex
	at []time.Time
}

func recordStored(t *testing.T, natsURL string) *storedLog {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l := &storedLog{}
	if _, err := nc.Subscribe("iot.devices.*.telemetry", func(m *nats.Msg) {
		ns, err := strconv.ParseInt(m.Header.Get(streams.HeaderReceived), 10, 64)
		if err != nil {
			t.Errorf("stored message without %s: %v", streams.HeaderReceived, err)
			return
		}
		l.mu.Lock()
		l.at = append(l.at, time.Unix(0, ns))
		l.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

// between counts the messages received in [from, to).
func (l *storedLog) between(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.at {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// last is when the latest message seen was received (zero before any).
func (l *storedLog) last() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.at) == 0 {
		return time.Time{}
	}
	return l.at[len(l.at)-1]
}
