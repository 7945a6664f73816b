package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/natscluster"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// onCluster points a hub at the NATS cluster (replicas left at the default: 3 on a cluster).
func onCluster(c *natscluster.Cluster) func(*hub.Config) {
	return func(cfg *hub.Config) { cfg.NATSURL, cfg.NATSAddr = c.URL(), "" }
}

// withInflux makes the hub write telemetry to db.
func withInflux(db influxtest.DB) func(*hub.Config) {
	return func(cfg *hub.Config) {
		cfg.InfluxURL, cfg.InfluxOrg, cfg.InfluxToken, cfg.InfluxBucket = db.URL, db.Org, db.Token, db.Bucket
	}
}

// startPair starts hubs A and B as child processes sharing sh, this test binary re-executed
// (TestMain serves the hub); A is killed and B stopped at cleanup. They live until then, not
// until the test function returns, so the clients a test starts later are cleaned up (and
// disconnect) while both hubs still run.
func startPair(t *testing.T, sh hubproc.Shared) (a, b *hubproc.Child) {
	t.Helper()
	ctx := context.Background()
	var err error
	if a, err = hubproc.StartShared(ctx, sh, "-test.run=^$"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Kill)
	if b, err = hubproc.StartShared(ctx, sh, "-test.run=^$"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return a, b
}

// createDevices registers n devices "<prefix>-NN" through the hub's API at httpAddr and
// returns their tokens.
func createDevices(t *testing.T, httpAddr, prefix string, n int) map[string]string {
	t.Helper()
	tokens := make(map[string]string, n)
	for i := range n {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		body := strings.NewReader(fmt.Sprintf(`{"id":%q,"type":"meter"}`, id))
		req, _ := http.NewRequest("POST", "http://"+httpAddr+"/api/v1/devices", body)
		req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("create device %s: %v", id, err)
		}
		var out struct{ Token, Error string }
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create device %s: %s %s", id, resp.Status, out.Error)
		}
		tokens[id] = out.Token
	}
	return tokens
}

// fleet is MQTT 5 devices (paho.golang's autopaho, moving to the next broker when one goes)
// publishing numbered QoS 1 telemetry ({"ts": …, "seq": n}, ts unique per device so that
// InfluxDB stores one point per message). A message counts as acknowledged only when its PUBACK
// with a success code came back; a publish that failed (the connection dropped, an error code,
// no answer in 10 s) is sent again once a connection is up, as a device would, so a message may
// be stored twice but none is given up while the test runs. (Paho's MQTT 3.1.1 client cannot
// be used for this count: when it resends after a reconnect, it completes the original publish
// token as if it had been acknowledged.)
type fleet struct {
	t     *testing.T
	base  int64 // ts of seq 0, Unix ms
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	acked map[string][]int // device → seqs PUBACKed
	sent  atomic.Int64     // distinct messages (seqs)
	// retried counts failed attempts, each followed by another.
	retried  atomic.Int64
	timedOut atomic.Int64 // seqs still not acknowledged 30 s after the fleet halted
	ackedN   atomic.Int64
	clients  []*autopaho.ConnectionManager
	// reconnect counts connections after each device's first.
	reconnect atomic.Int64
	haltedAt  atomic.Int64 // Unix ns
}

// startFleet starts one publisher per device, each sending every interval with up to
// inflight messages awaiting their PUBACK.
func startFleet(t *testing.T, brokers []string, tokens map[string]string, interval time.Duration, inflight int) *fleet {
	t.Helper()
	f := &fleet{t: t, base: time.Now().Add(-time.Hour).UnixMilli(), stop: make(chan struct{}), acked: map[string][]int{}}
	var urls []*url.URL
	for _, b := range brokers {
		urls = append(urls, &url.URL{Scheme: "mqtt", Host: b})
	}
	for _, id := range slices.Sorted(maps.Keys(tokens)) {
		var ups atomic.Int64
		cm, err := autopaho.NewConnection(context.Background(), autopaho.ClientConfig{
			ServerUrls: urls, KeepAlive: 30, CleanStartOnInitialConnection: true,
			ReconnectBackoff: func(int) time.Duration { return 200 * time.Millisecond },
			ConnectTimeout:   3 * time.Second,
			ConnectUsername:  id, ConnectPassword: []byte(tokens[id]),
			OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
				if ups.Add(1) > 1 {
					f.reconnect.Add(1)
				}
			},
			ClientConfig: paho.ClientConfig{ClientID: id},
		})
		if err != nil {
			t.Fatalf("mqtt %s: %v", id, err)
		}
		f.clients = append(f.clients, cm)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = cm.AwaitConnection(ctx)
		cancel()
		if err != nil {
			t.Fatalf("mqtt connect %s: %v", id, err)
		}
		f.wg.Add(1)
		go f.publish(cm, id, interval, inflight)
	}
	t.Cleanup(func() {
		f.halt()
		for _, c := range f.clients {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c.Disconnect(ctx)
			cancel()
		}
	})
	return f
}

func (f *fleet) publish(cm *autopaho.ConnectionManager, id string, interval time.Duration, inflight int) {
	defer f.wg.Done()
	window := make(chan struct{}, inflight)
	var pending sync.WaitGroup
	defer pending.Wait()
	topic := "devices/" + id + "/telemetry"
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		select { // a full window holds the device back, as its MQTT client would
		case window <- struct{}{}:
		case <-f.stop:
			return
		}
		f.sent.Add(1)
		payload := []byte(fmt.Sprintf(`{"ts":%d,"seq":%d}`, f.base+int64(seq), seq))
		pending.Go(func() {
			defer func() { <-window }()
			f.deliver(cm, id, topic, seq, payload)
		})
	}
}

// deliver publishes one message until a PUBACK acknowledges it, or until 30 s after halt.
func (f *fleet) deliver(cm *autopaho.ConnectionManager, id, topic string, seq int, payload []byte) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: payload})
		cancel()
		if err == nil && resp.ReasonCode < 0x80 {
			f.ackedN.Add(1)
			f.mu.Lock()
			f.acked[id] = append(f.acked[id], seq)
			f.mu.Unlock()
			return
		}
		f.retried.Add(1)
		if h := f.haltedAt.Load(); h != 0 && time.Since(time.Unix(0, h)) > 30*time.Second {
			f.timedOut.Add(1)
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		if cm.AwaitConnection(ctx) == nil {
			time.Sleep(20 * time.Millisecond) // the connection may be the one that just failed
		}
		cancel()
	}
}

// halt stops publishing and waits for every outstanding PUBACK (or its timeout).
func (f *fleet) halt() {
	select {
	case <-f.stop:
		return
	default:
	}
	f.haltedAt.Store(time.Now().UnixNano())
	close(f.stop)
	f.wg.Wait()
}

// ackedSnapshot is a copy of the acknowledged seqs per device.
func (f *fleet) ackedSnapshot() map[string][]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string][]int, len(f.acked))
	for k, v := range f.acked {
		out[k] = slices.Clone(v)
	}
	return out
}

// seqCounts is how often each device's seq was seen.
type seqCounts map[string]map[int]int

func (c seqCounts) add(dev string, seq int) {
	if c[dev] == nil {
		c[dev] = map[int]int{}
	}
	c[dev][seq]++
}

// check reports acknowledged messages that are missing and messages stored more than once.
func (c seqCounts) check(acked map[string][]int) (missing, dups, distinct int, example string) {
	for dev, seqs := range acked {
		for _, s := range seqs {
			if c[dev][s] == 0 {
				missing++
				if example == "" {
					example = fmt.Sprintf("%s seq %d", dev, s)
				}
			}
		}
	}
	for _, m := range c {
		for _, n := range m {
			distinct++
			dups += n - 1
		}
	}
	return
}

// streamSeqs reads every device telemetry message in the IOT stream.
func streamSeqs(t *testing.T, natsURL string) seqCounts {
	t.Helper()
	out := seqCounts{}
	readStream(t, natsURL, streams.SubjectPrefix+".devices.*.telemetry", func(m jetstream.Msg) {
		topic, _ := streams.SubjectToTopic(m.Subject())
		var p struct{ Seq *int }
		if json.Unmarshal(m.Data(), &p) != nil || p.Seq == nil {
			return // a probe or another test's message
		}
		out.add(strings.Split(topic, "/")[1], *p.Seq)
	})
	return out
}

// readStream hands each message of the IOT stream on subjects matching filter to each: as
// many as the stream counts when the read starts, however slowly they come.
func readStream(t *testing.T, natsURL, filter string, each func(jetstream.Msg)) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streams.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	for read := uint64(0); read < total; read++ {
		m, err := it.Next()
		if err != nil {
			t.Fatalf("read %s after %d of %d messages: %v", filter, read, total, err)
		}
		each(m)
	}
}

// influxSeqs reads every telemetry point's seq from db, by device.
func influxSeqs(t *testing.T, db influxtest.DB) seqCounts {
	t.Helper()
	q := url.Values{"db": {db.Database}, "q": {`SELECT "seq" FROM "telemetry" GROUP BY "device"`}}
	resp, err := http.Get(db.URL + "/query?" + q.Encode())
	if err != nil {
		t.Fatalf("influx query: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			Error  string
			Series []struct {
				Tags   map[string]string
				Values [][]any // [time, seq]
			}
		}
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("influx query: %s %v", resp.Status, err)
	}
	c := seqCounts{}
	for _, r := range out.Results {
		if r.Error != "" {
			t.Fatalf("influx query: %s", r.Error)
		}
		for _, s := range r.Series {
			for _, v := range s.Values {
				n, _ := v[1].(json.Number)
				seq, err := strconv.Atoi(n.String())
				if err != nil {
					t.Fatalf("influx seq %q: %v", v[1], err)
				}
				c.add(s.Tags["device"], seq)
			}
		}
	}
	return c
}

func total(acked map[string][]int) int {
	n := 0
	for _, s := range acked {
		n += len(s)
	}
	return n
}
