package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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

// fleet is devices publishing numbered QoS 1 telemetry ({"ts": …, "seq": n}, ts unique per
// device so that InfluxDB stores one point per message) to whichever of brokers accepts them:
// paho tries them in order and reconnects on its own, resending unacknowledged messages.
type fleet struct {
	t     *testing.T
	base  int64 // ts of seq 0, Unix ms
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	acked map[string][]int // device → seqs PUBACKed
	sent  atomic.Int64
	// nacked counts publishes whose token ended with an error: not acknowledged, may be stored.
	nacked    atomic.Int64
	timedOut  atomic.Int64 // no PUBACK and no error within 30 s
	ackedN    atomic.Int64
	clients   []paho.Client
	stores    []*settleStore
	reconnect atomic.Int64
}

// startFleet starts one publisher per device, each sending every interval with up to
// inflight messages awaiting their PUBACK.
func startFleet(t *testing.T, brokers []string, tokens map[string]string, interval time.Duration, inflight int) *fleet {
	t.Helper()
	f := &fleet{t: t, base: time.Now().Add(-time.Hour).UnixMilli(), stop: make(chan struct{}), acked: map[string][]int{}}
	ids := make([]string, 0, len(tokens))
	for id := range tokens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		o := paho.NewClientOptions().SetClientID(id).SetUsername(id).SetPassword(tokens[id]).
			SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
			SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
			SetConnectTimeout(3 * time.Second).SetWriteTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
			SetOrderMatters(false).
			SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { f.reconnect.Add(1) })
		for _, b := range brokers {
			o.AddBroker("tcp://" + b)
		}
		store := &settleStore{Store: paho.NewMemoryStore()}
		o.SetStore(store).SetCustomOpenConnectionFn(store.dial)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("mqtt connect %s: %v", id, tok.Error())
		}
		f.clients = append(f.clients, c)
		f.stores = append(f.stores, store)
		f.wg.Add(1)
		go f.publish(c, id, interval, inflight)
	}
	t.Cleanup(func() {
		f.halt()
		for i, c := range f.clients {
			f.stores[i].awaitSettled(t, c, 3*time.Second)
			c.Disconnect(50)
		}
	})
	return f
}

// settleStore is a fleet client's message store, counting the connections the client opens
// and paho's resume passes over the store. paho (v1.5.1) reports a new connection up before
// it has finished setting it up, and a Disconnect in that gap races with the setup
// (eclipse-paho/paho.mqtt.golang#550); the resume pass comes after the setup. A Disconnect
// issued once every opened connection has had its resume pass (or, on the first connect of a
// clean session, its store reset) is clear of the race.
type settleStore struct {
	paho.Store
	mu      sync.Mutex
	dials   int
	resumes int
}

func (s *settleStore) dial(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", uri.Host, o.ConnectTimeout)
	if err == nil {
		s.mu.Lock()
		s.dials++
		s.mu.Unlock()
	}
	return conn, err
}

// All is paho's resume pass after a reconnect (Connect also reads the store before it
// dials, which is not counted).
func (s *settleStore) All() []string {
	s.mu.Lock()
	if s.dials > 0 {
		s.resumes++
	}
	s.mu.Unlock()
	return s.Store.All()
}

// Reset takes the resume pass's place after the first connect of a clean session.
func (s *settleStore) Reset() {
	s.mu.Lock()
	s.resumes++
	s.mu.Unlock()
	s.Store.Reset()
}

// awaitSettled waits, at most max, until c is connected and set up.
func (s *settleStore) awaitSettled(t *testing.T, c paho.Client, max time.Duration) {
	for end := time.Now().Add(max); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		dials, resumes := s.dials, s.resumes
		s.mu.Unlock()
		if resumes >= dials && c.IsConnectionOpen() {
			return
		}
		if time.Now().After(end) {
			t.Logf("client still connecting after %v (%d connections opened, %d set up); disconnecting it anyway", max, dials, resumes)
			return
		}
	}
}

func (f *fleet) publish(c paho.Client, id string, interval time.Duration, inflight int) {
	defer f.wg.Done()
	type pending struct {
		seq int
		tok paho.Token
	}
	window := make(chan pending, inflight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range window {
			// A token waits through a reconnect: paho resends the message to the next broker.
			if !p.tok.WaitTimeout(30 * time.Second) {
				f.timedOut.Add(1)
				continue
			}
			if p.tok.Error() != nil {
				f.nacked.Add(1)
				continue
			}
			f.ackedN.Add(1)
			f.mu.Lock()
			f.acked[id] = append(f.acked[id], p.seq)
			f.mu.Unlock()
		}
	}()
	topic := "devices/" + id + "/telemetry"
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-f.stop:
			close(window)
			<-done
			return
		case <-tick.C:
		}
		payload := fmt.Sprintf(`{"ts":%d,"seq":%d}`, f.base+int64(seq), seq)
		window <- pending{seq, c.Publish(topic, 1, false, payload)}
		f.sent.Add(1)
	}
}

// halt stops publishing and waits for every outstanding PUBACK (or its timeout).
func (f *fleet) halt() {
	select {
	case <-f.stop:
		return
	default:
	}
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
