package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tributary-iot/tributary/hub/hubproc"
)

func (b *bench) mqttClient(id, user, pass string) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + b.addrs.MQTT).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetOrderMatters(false).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(30 * time.Second)
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("mqtt connect %s: %v", id, t.Error())
	}
	return c, nil
}

// mqttIngest has clients devices publish n messages in all, and measures how fast the hub
// stores them. QoS 1 publishers keep up to 32 messages in flight each, as MQTT allows.
func (b *bench) mqttIngest(ctx context.Context, qos byte, clients, n int) (Ingest, error) {
	ids := deviceIDs(b.tokens, clients)
	conns := make([]paho.Client, len(ids))
	for i, id := range ids {
		c, err := b.mqttClient(fmt.Sprintf("%s-q%d-%d", id, qos, clients), id, b.tokens[id])
		if err != nil {
			return Ingest{}, err
		}
		conns[i] = c
		defer c.Disconnect(100)
	}
	base, err := b.storedCount(ctx)
	if err != nil {
		return Ingest{}, err
	}
	per := n / clients
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := "devices/" + ids[i] + "/telemetry"
			window := make(chan paho.Token, 32)
			for range per {
				t := c.Publish(topic, qos, false, b.payload)
				if qos == 0 {
					continue
				}
				select {
				case window <- t:
				default:
					old := <-window
					if old.Wait(); old.Error() != nil {
						errs <- old.Error()
						return
					}
					window <- t
				}
			}
			close(window)
			for t := range window {
				t.Wait()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return Ingest{}, fmt.Errorf("qos %d publish: %w", qos, err)
	}
	sent := per * clients
	got, at, err := b.waitStored(ctx, base+uint64(sent))
	if err != nil {
		return Ingest{}, err
	}
	el := at.Sub(start)
	stored := int(got - base)
	return Ingest{Name: fmt.Sprintf("MQTT QoS %d", qos), Clients: clients, Sent: sent, Stored: stored,
		PerSec: float64(stored) / el.Seconds(), DurationMS: el.Milliseconds()}, nil
}

func (b *bench) coapClient() (*client.Conn, error) {
	return udp.Dial(b.addrs.CoAP)
}

func (b *bench) coapPost(ctx context.Context, cc *client.Conn, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/devices/"+id+"/telemetry", message.AppJSON, bytes.NewReader(body),
		message.Option{ID: message.URIQuery, Value: []byte("token=" + b.tokens[id])})
	if err != nil {
		return err
	}
	if resp.Code() != codes.Changed && resp.Code() != codes.Created {
		return fmt.Errorf("coap post: %v", resp.Code())
	}
	return nil
}

// coapIngest has clients CoAP devices POST n confirmable messages in all, each waiting for its
// response (sent only once the message is stored).
func (b *bench) coapIngest(ctx context.Context, clients, n int) (Ingest, error) {
	ids := deviceIDs(b.tokens, clients)
	base, err := b.storedCount(ctx)
	if err != nil {
		return Ingest{}, err
	}
	per := n / clients
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, id := range ids {
		cc, err := b.coapClient()
		if err != nil {
			return Ingest{}, err
		}
		defer cc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if err := b.coapPost(ctx, cc, id, b.payload); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return Ingest{}, err
	}
	got, err := b.storedCount(ctx)
	if err != nil {
		return Ingest{}, err
	}
	stored := int(got - base)
	return Ingest{Name: "CoAP CON", Clients: clients, Sent: per * clients, Stored: stored, PerSec: float64(stored) / el.Seconds(), DurationMS: el.Milliseconds()}, nil
}

// latencyProbe is the payload of latency runs: when it was sent and which run it belongs to.
type latencyProbe struct {
	Run  string `json:"run"`
	Sent int64  `json:"sent"`
	Seq  int    `json:"seq"`
	Pad  string `json:"pad"`
}

// collector subscribes as an application and records publish → delivery latencies of one run.
type collector struct {
	mu   sync.Mutex
	lat  []time.Duration
	seen map[int]bool
}

func (b *bench) subscribe(run string) (paho.Client, *collector, error) {
	col := &collector{seen: map[int]bool{}}
	sub, err := b.mqttClient("latency-sub-"+run, "app", b.addrs.APIKey)
	if err != nil {
		return nil, nil, err
	}
	t := sub.Subscribe("devices/+/telemetry", 0, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		var p latencyProbe
		if json.Unmarshal(m.Payload(), &p) != nil || p.Run != run {
			return
		}
		col.mu.Lock()
		if !col.seen[p.Seq] {
			col.seen[p.Seq] = true
			col.lat = append(col.lat, now.Sub(time.Unix(0, p.Sent)))
		}
		col.mu.Unlock()
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, nil, fmt.Errorf("subscribe: %v", t.Error())
	}
	return sub, col, nil
}

func (col *collector) result(name string, rate, sent int, el time.Duration) Latency {
	col.mu.Lock()
	defer col.mu.Unlock()
	lat := slices.Clone(col.lat)
	slices.Sort(lat)
	l := Latency{Name: name, Rate: rate, Samples: len(lat), Lost: sent - len(lat), Achieved: float64(sent) / el.Seconds()}
	if len(lat) > 0 {
		l.P50ms, l.P99ms = percentile(lat, 0.50), percentile(lat, 0.99)
		l.MaxMS = float64(lat[len(lat)-1].Microseconds()) / 1000
	}
	return l
}

// paced runs send(seq) from workers goroutines at rate messages/s in all for d, and returns how
// many were sent and how long it took.
func paced(workers, rate int, d time.Duration, send func(worker, seq int) error) (int, time.Duration, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	var firstErr error
	per := rate / workers
	interval := time.Second / time.Duration(per)
	n := int(d / interval)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(w) * interval / time.Duration(workers))
			for i := range n {
				if wait := time.Until(next); wait > 0 {
					time.Sleep(wait)
				}
				next = next.Add(interval)
				if err := send(w, w*n+i); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				total++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return total, time.Since(start), firstErr
}

func (b *bench) latencyMQTT(ctx context.Context, rate int, d time.Duration) (Latency, error) {
	run := fmt.Sprint("mqtt-", time.Now().UnixNano())
	sub, col, err := b.subscribe(run)
	if err != nil {
		return Latency{}, err
	}
	defer sub.Disconnect(100)
	ids := deviceIDs(b.tokens, 10)
	pubs := make([]paho.Client, len(ids))
	for i, id := range ids {
		if pubs[i], err = b.mqttClient("latency-pub-"+id, id, b.tokens[id]); err != nil {
			return Latency{}, err
		}
		defer pubs[i].Disconnect(100)
	}
	pad := string(bytes.Repeat([]byte("x"), 60))
	sent, el, err := paced(len(ids), rate, d, func(w, seq int) error {
		p, _ := json.Marshal(latencyProbe{Run: run, Sent: time.Now().UnixNano(), Seq: seq, Pad: pad})
		pubs[w].Publish("devices/"+ids[w]+"/telemetry", 1, false, p)
		return nil
	})
	if err != nil {
		return Latency{}, err
	}
	waitSamples(col, sent)
	return col.result("MQTT QoS 1 → MQTT", rate, sent, el), nil
}

func (b *bench) latencyCoAP(ctx context.Context, rate int, d time.Duration) (Latency, error) {
	run := fmt.Sprint("coap-", time.Now().UnixNano())
	sub, col, err := b.subscribe(run)
	if err != nil {
		return Latency{}, err
	}
	defer sub.Disconnect(100)
	ids := deviceIDs(b.tokens, 10)
	conns := make([]*client.Conn, len(ids))
	for i := range ids {
		if conns[i], err = b.coapClient(); err != nil {
			return Latency{}, err
		}
		defer conns[i].Close()
	}
	pad := string(bytes.Repeat([]byte("x"), 60))
	sent, el, err := paced(len(ids), rate, d, func(w, seq int) error {
		p, _ := json.Marshal(latencyProbe{Run: run, Sent: time.Now().UnixNano(), Seq: seq, Pad: pad})
		return b.coapPost(ctx, conns[w], ids[w], p)
	})
	if err != nil {
		return Latency{}, err
	}
	waitSamples(col, sent)
	return col.result("CoAP CON → MQTT", rate, sent, el), nil
}

func waitSamples(col *collector, want int) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		col.mu.Lock()
		n := len(col.lat)
		col.mu.Unlock()
		if n >= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// idle opens n MQTT connections that then stay quiet, and measures the hub's RSS growth.
func (b *bench) idle(ctx context.Context, c *hubproc.Child, n int, rep *Report) error {
	before, err := c.RSS()
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	connectPkt := func(clientID string) []byte {
		var v bytes.Buffer
		str := func(s string) { v.WriteByte(byte(len(s) >> 8)); v.WriteByte(byte(len(s))); v.WriteString(s) }
		str("MQTT")
		v.Write([]byte{4, 0xC2, 0x01, 0x2C}) // level 4, username+password+clean session, keep-alive 300 s
		str(clientID)
		str("app")
		str(b.addrs.APIKey)
		pkt := []byte{0x10}
		for l := v.Len(); ; {
			d := byte(l % 128)
			l /= 128
			if l > 0 {
				d |= 0x80
			}
			pkt = append(pkt, d)
			if l == 0 {
				break
			}
		}
		return append(pkt, v.Bytes()...)
	}
	var mu sync.Mutex
	sem := make(chan struct{}, 100)
	var wg sync.WaitGroup
	var firstErr error
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := net.DialTimeout("tcp", b.addrs.MQTT, 10*time.Second)
			if err == nil {
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				_, err = conn.Write(connectPkt(fmt.Sprintf("idle-%05d", i)))
			}
			ack := make([]byte, 4)
			if err == nil {
				_, err = io.ReadFull(conn, ack)
			}
			if err == nil && ack[3] != 0 {
				err = fmt.Errorf("connack return code %d", ack[3])
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("idle connection %d: %w", i, err)
				}
				if conn != nil {
					conn.Close()
				}
				return
			}
			conn.SetDeadline(time.Time{})
			conns = append(conns, conn)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	time.Sleep(2 * time.Second) // let the hub's per-connection goroutines settle
	after, err := c.RSS()
	if err != nil {
		return err
	}
	rep.IdleConns = len(conns)
	rep.HubRSSBefore, rep.HubRSSWithIdle = before, after
	rep.BytesPerIdle = float64(after-before) / float64(len(conns))
	return nil
}
