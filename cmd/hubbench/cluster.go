package main

// hubbench -only cluster: ingest with 1, 2 and 3 hub instances on a 3-node NATS cluster.
//
//	go run ./cmd/hubbench -only cluster            # ~1 minute
//	go run ./cmd/hubbench -only cluster -quick
//
// The three NATS nodes run in this process (streams and KV buckets with 3 replicas); the hubs
// are child processes. For each instance count: 100 devices, spread evenly over the hubs,
// publish QoS 1 flat out (32 in flight each) — stored msgs/s and PUBACK latency percentiles —
// and then a paced run at a fixed rate, publishing through every hub with one subscriber on hub
// 1, for end-to-end latency percentiles (most of it crosses instances).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// ClusterRun is one instance count.
type ClusterRun struct {
	Hubs       int     `json:"hubs"`
	Clients    int     `json:"clients"`
	Sent       int     `json:"sent"`
	Stored     int     `json:"stored"`
	PerSec     float64 `json:"stored_msgs_per_sec"`
	AckP50ms   float64 `json:"puback_p50_ms"`
	AckP99ms   float64 `json:"puback_p99_ms"`
	DurationMS int64   `json:"duration_ms"`
	Latency    Latency `json:"latency"`
}

// ClusterReport is what -only cluster prints.
type ClusterReport struct {
	Messages int          `json:"messages_per_run"`
	Runs     []ClusterRun `json:"runs"`
}

func clusterMain(ctx context.Context, quick, jsonOut bool) error {
	p := fullParams()
	if quick {
		p = quickParams()
	}
	hubproc.RaiseFileLimit()
	dir, err := os.MkdirTemp("", "hubbench-cluster-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	nc3, err := natscluster.Start(natscluster.Options{Nodes: 3, Dir: dir})
	if err != nil {
		return err
	}
	defer nc3.Close()
	nc, err := nats.Connect(nc3.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	rep := &ClusterReport{Messages: p.Messages / 2}
	var tokens map[string]string
	for n := 1; n <= 3; n++ {
		fmt.Fprintf(os.Stderr, "%d hub(s) on the 3-node cluster...\n", n)
		var benches []*bench
		var children []*hubproc.Child
		for range n {
			c, err := hubproc.StartShared(ctx, hubproc.Shared{NATSURL: nc3.URL()}, "-serve")
			if err != nil {
				return err
			}
			children = append(children, c)
			benches = append(benches, &bench{addrs: c.Addrs, js: js, payload: telemetry128()})
		}
		if tokens == nil { // the registry is shared: devices created once serve every run
			if tokens, err = createDevices(children[0].Addrs, 100); err != nil {
				return err
			}
		}
		for _, b := range benches {
			b.tokens = tokens
		}
		run, err := clusterIngest(ctx, benches, 100, rep.Messages)
		if err == nil {
			run.Latency, err = clusterLatency(benches, p.LatencyRate/2, time.Duration(p.LatencySeconds)*time.Second)
		}
		for _, c := range children {
			c.Stop()
		}
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, run)
	}
	if jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.print(os.Stdout)
	return nil
}

// clusterIngest has clients devices, spread round-robin over the hubs, publish n QoS 1
// messages in all with up to 32 in flight each.
func clusterIngest(ctx context.Context, benches []*bench, clients, n int) (ClusterRun, error) {
	ids := deviceIDs(benches[0].tokens, clients)
	conns := make([]paho.Client, len(ids))
	for i, id := range ids {
		b := benches[i%len(benches)]
		c, err := b.mqttClient(fmt.Sprintf("%s-cluster-%d", id, len(benches)), id, b.tokens[id])
		if err != nil {
			return ClusterRun{}, err
		}
		conns[i] = c
		defer c.Disconnect(100)
	}
	b := benches[0]
	base, err := b.storedCount(ctx)
	if err != nil {
		return ClusterRun{}, err
	}
	per := n / clients
	var mu sync.Mutex
	var acks []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			type inflight struct {
				tok  paho.Token
				sent time.Time
			}
			window := make(chan inflight, 32)
			var mine []time.Duration
			wait := func(f inflight) bool {
				if f.tok.Wait(); f.tok.Error() != nil {
					errs <- f.tok.Error()
					return false
				}
				mine = append(mine, time.Since(f.sent))
				return true
			}
			topic := "devices/" + ids[i] + "/telemetry"
			for range per {
				f := inflight{sent: time.Now()}
				f.tok = c.Publish(topic, 1, false, b.payload)
				select {
				case window <- f:
				default:
					if !wait(<-window) {
						return
					}
					window <- f
				}
			}
			close(window)
			for f := range window {
				if !wait(f) {
					return
				}
			}
			mu.Lock()
			acks = append(acks, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return ClusterRun{}, fmt.Errorf("publish: %w", err)
	}
	sent := per * clients
	got, at, err := b.waitStored(ctx, base+uint64(sent))
	if err != nil {
		return ClusterRun{}, err
	}
	el := at.Sub(start)
	slices.Sort(acks)
	stored := int(got - base)
	return ClusterRun{Hubs: len(benches), Clients: clients, Sent: sent, Stored: stored, PerSec: float64(stored) / el.Seconds(),
		AckP50ms: percentile(acks, 0.5), AckP99ms: percentile(acks, 0.99), DurationMS: el.Milliseconds()}, nil
}

// clusterLatency publishes at rate through 10 devices spread over the hubs for d; one
// subscriber on hub 1 measures publish → delivery.
func clusterLatency(benches []*bench, rate int, d time.Duration) (Latency, error) {
	run := fmt.Sprint("cluster-", len(benches), "-", time.Now().UnixNano())
	sub, col, err := benches[0].subscribe(run)
	if err != nil {
		return Latency{}, err
	}
	defer sub.Disconnect(100)
	ids := deviceIDs(benches[0].tokens, 10)
	pubs := make([]paho.Client, len(ids))
	for i, id := range ids {
		b := benches[i%len(benches)]
		if pubs[i], err = b.mqttClient(fmt.Sprintf("latency-%s-%d", id, len(benches)), id, b.tokens[id]); err != nil {
			return Latency{}, err
		}
		defer pubs[i].Disconnect(100)
	}
	sent, el, err := paced(len(pubs), rate, d, func(w, seq int) error {
		body, _ := json.Marshal(latencyProbe{Run: run, Sent: time.Now().UnixNano(), Seq: seq, Pad: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"})
		t := pubs[w].Publish("devices/"+ids[w]+"/telemetry", 1, false, body)
		t.Wait()
		return t.Error()
	})
	if err != nil {
		return Latency{}, err
	}
	time.Sleep(2 * time.Second) // stragglers
	return col.result(fmt.Sprintf("MQTT → MQTT, %d hub(s)", len(benches)), rate, sent, el), nil
}

func (r *ClusterReport) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MQTT QoS 1 ingest on a 3-node NATS cluster (R3), 100 clients, 32 in flight each, %d messages per run\n", r.Messages)
	fmt.Fprintln(tw, "hubs\tstored\tmsgs/s\tPUBACK p50 ms\tPUBACK p99 ms\tlatency offered/s\tachieved/s\tp50 ms\tp99 ms\tlost")
	for _, c := range r.Runs {
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.2f\t%.2f\t%d\t%.0f\t%.2f\t%.2f\t%d\n", c.Hubs, c.Stored, c.PerSec, c.AckP50ms, c.AckP99ms,
			c.Latency.Rate, c.Latency.Achieved, c.Latency.P50ms, c.Latency.P99ms, c.Latency.Lost)
	}
	tw.Flush()
}
