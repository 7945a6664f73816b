package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/streams"
)

type params struct {
	Messages       int // per ingest run
	CoAPMessages   int
	LatencyRate    int // messages/s offered in the MQTT → MQTT latency run
	CoAPRate       int
	LatencySeconds int
	IdleConns      int
}

func fullParams() params {
	return params{Messages: 200_000, CoAPMessages: 50_000, LatencyRate: 5000, CoAPRate: 1000, LatencySeconds: 10, IdleConns: 10_000}
}

func quickParams() params {
	return params{Messages: 20_000, CoAPMessages: 5_000, LatencyRate: 1000, CoAPRate: 500, LatencySeconds: 2, IdleConns: 500}
}

// Report is what hubbench prints.
type Report struct {
	Params         params    `json:"params"`
	CeilingPerSec  float64   `json:"jetstream_async_ceiling_msgs_per_sec"`
	Ingest         []Ingest  `json:"ingest"`
	Latency        []Latency `json:"latency"`
	IdleConns      int       `json:"idle_connections"`
	BytesPerIdle   float64   `json:"rss_bytes_per_idle_connection"`
	HubRSSBefore   int64     `json:"hub_rss_before_bytes"`
	HubRSSWithIdle int64     `json:"hub_rss_with_idle_bytes"`
}

// Ingest is one ingest run.
type Ingest struct {
	Name       string  `json:"name"`
	Clients    int     `json:"clients"`
	Sent       int     `json:"sent"`
	Stored     int     `json:"stored"`
	PerSec     float64 `json:"stored_msgs_per_sec"`
	OfCeiling  float64 `json:"ratio_of_ceiling"`
	DurationMS int64   `json:"duration_ms"`
}

// Latency is one publish → subscriber latency run.
type Latency struct {
	Name     string  `json:"name"`
	Rate     int     `json:"offered_msgs_per_sec"`
	Samples  int     `json:"samples"`
	Lost     int     `json:"lost"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	Achieved float64 `json:"achieved_msgs_per_sec"`
}

func run(ctx context.Context, p params, only string) (*Report, error) {
	hubproc.RaiseFileLimit()
	want := func(name string) bool { return only == "" || slices.Contains(strings.Split(only, ","), name) }
	c, err := hubproc.Start(ctx, "-serve")
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	nc, err := nats.Connect(c.Addrs.NATS)
	if err != nil {
		return nil, fmt.Errorf("connect to the hub's NATS: %w", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	tokens, err := createDevices(c.Addrs, 100)
	if err != nil {
		return nil, err
	}
	rep := &Report{Params: p}
	b := &bench{addrs: c.Addrs, js: js, tokens: tokens, payload: telemetry128()}

	if want("ceiling") || want("qos0") || want("qos1") || want("coap") {
		fmt.Fprintln(os.Stderr, "jetstream ceiling...")
		if rep.CeilingPerSec, err = b.ceiling(ctx, p.Messages); err != nil {
			return nil, err
		}
	}
	ratio := func(r float64) float64 {
		if rep.CeilingPerSec == 0 {
			return 0
		}
		return r / rep.CeilingPerSec
	}
	for _, qos := range []byte{0, 1} {
		if !want(fmt.Sprintf("qos%d", qos)) {
			continue
		}
		for _, clients := range []int{10, 100} {
			fmt.Fprintf(os.Stderr, "mqtt qos %d, %d clients...\n", qos, clients)
			in, err := b.mqttIngest(ctx, qos, clients, p.Messages)
			if err != nil {
				return nil, err
			}
			in.OfCeiling = ratio(in.PerSec)
			rep.Ingest = append(rep.Ingest, in)
		}
	}
	if want("coap") {
		fmt.Fprintln(os.Stderr, "coap confirmable, 50 clients...")
		in, err := b.coapIngest(ctx, 50, p.CoAPMessages)
		if err != nil {
			return nil, err
		}
		in.OfCeiling = ratio(in.PerSec)
		rep.Ingest = append(rep.Ingest, in)
	}
	if want("latency") {
		fmt.Fprintln(os.Stderr, "latency mqtt → mqtt...")
		l, err := b.latencyMQTT(ctx, p.LatencyRate, time.Duration(p.LatencySeconds)*time.Second)
		if err != nil {
			return nil, err
		}
		rep.Latency = append(rep.Latency, l)
		fmt.Fprintln(os.Stderr, "latency coap → mqtt...")
		if l, err = b.latencyCoAP(ctx, p.CoAPRate, time.Duration(p.LatencySeconds)*time.Second); err != nil {
			return nil, err
		}
		rep.Latency = append(rep.Latency, l)
	}
	if want("idle") {
		fmt.Fprintf(os.Stderr, "%d idle mqtt connections...\n", p.IdleConns)
		if err := b.idle(ctx, c, p.IdleConns, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

type bench struct {
	addrs   hubproc.Addrs
	js      jetstream.JetStream
	tokens  map[string]string
	payload []byte
}

// telemetry128 is a 128-byte JSON telemetry message.
func telemetry128() []byte {
	p := []byte(`{"temperature":21.53,"humidity":40.2,"pressure":1013.25,"door":false,"fw":"1.2.3","battery":87.5,"rssi":-71,"pad":"`)
	for len(p) < 126 {
		p = append(p, 'x')
	}
	return append(p, '"', '}')
}

func createDevices(a hubproc.Addrs, n int) (map[string]string, error) {
	tokens := make(map[string]string, n)
	for i := range n {
		id := fmt.Sprintf("bench-%03d", i)
		body, _ := json.Marshal(map[string]any{"id": id, "type": "bench"})
		req, _ := http.NewRequest("POST", "http://"+a.HTTP+"/api/v1/devices", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		var out struct{ Token, Error string }
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return nil, fmt.Errorf("create device %s: %s %s", id, resp.Status, out.Error)
		}
		tokens[id] = out.Token
	}
	return tokens, nil
}

func deviceIDs(tokens map[string]string, n int) []string {
	ids := make([]string, 0, len(tokens))
	for id := range tokens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids[:n]
}

// ceiling publishes the same messages (same headers as the hub writes) straight into a stream
// configured like the hub's, with async publishes: what JetStream itself can store here.
func (b *bench) ceiling(ctx context.Context, n int) (float64, error) {
	s, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCHCEILING", Subjects: []string{"benchceiling.>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, MaxAge: 168 * time.Hour})
	if err != nil {
		return 0, err
	}
	defer b.js.DeleteStream(context.Background(), "BENCHCEILING")
	start := time.Now()
	for i := range n {
		env := &streams.Envelope{DeviceID: "bench-000", Topic: "devices/bench-000/telemetry", ContentType: "application/json", Protocol: "mqtt", Payload: b.payload}
		env.Stamp(time.Now())
		msg, _ := env.ToMsg()
		msg.Subject = fmt.Sprintf("benchceiling.devices.bench-%03d.telemetry", i%100)
		if _, err := b.js.PublishMsgAsync(msg); err != nil {
			return 0, err
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("ceiling: publishes not acknowledged after 2 minutes")
	}
	el := time.Since(start)
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return float64(info.State.Msgs) / el.Seconds(), nil
}

func (b *bench) storedCount(ctx context.Context) (uint64, error) {
	s, err := b.js.Stream(ctx, streams.StreamMessages)
	if err != nil {
		return 0, err
	}
	// Only telemetry counts: status events of connecting devices land in the same stream.
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("iot.devices.*.telemetry"))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// waitStored waits until the IOT stream holds target messages or nothing new arrives for 3 s.
func (b *bench) waitStored(ctx context.Context, target uint64) (uint64, time.Time, error) {
	last, lastChange := uint64(0), time.Now()
	for {
		n, err := b.storedCount(ctx)
		if err != nil {
			return 0, time.Time{}, err
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if n >= target || time.Since(lastChange) > 3*time.Second {
			return n, lastChange, nil
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

func (r *Report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "JetStream async publish ceiling\t%.0f msgs/s\n\n", r.CeilingPerSec)
	fmt.Fprintln(tw, "ingest\tclients\tsent\tstored\tmsgs/s\t÷ ceiling")
	for _, in := range r.Ingest {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.2f\n", in.Name, in.Clients, in.Sent, in.Stored, in.PerSec, in.OfCeiling)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "latency\toffered/s\tachieved/s\tsamples\tlost\tp50 ms\tp99 ms\tmax ms")
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%d\t%.2f\t%.2f\t%.2f\n", l.Name, l.Rate, l.Achieved, l.Samples, l.Lost, l.P50ms, l.P99ms, l.MaxMS)
	}
	if r.IdleConns > 0 {
		fmt.Fprintf(tw, "\nidle MQTT connections\t%d\n", r.IdleConns)
		fmt.Fprintf(tw, "hub RSS before / with them\t%.1f MiB / %.1f MiB\n", float64(r.HubRSSBefore)/(1<<20), float64(r.HubRSSWithIdle)/(1<<20))
		fmt.Fprintf(tw, "RSS per idle connection\t%.1f KB\n", r.BytesPerIdle/1000)
	}
	tw.Flush()
}
