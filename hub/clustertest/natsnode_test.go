package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// TestNATSNodeStopsDuringIngest: two hubs on a 3-node cluster (R3 by default), 20 devices
// publishing QoS 1. The node leading the IOT stream stops: a new leader is elected, hubs
// connected to that node reconnect to another, ingest goes on, and after the node is back
// every PUBACKed message is in the stream, on every replica.
func TestNATSNodeStopsDuringIngest(t *testing.T) {
	t.Parallel()
	const devices = 20
	c := natscluster.ForTest(t, 3)
	a := hubtest.Start(t, onCluster(c))
	b := hubtest.Start(t, onCluster(c))
	tokens := createDevices(t, a.HTTPAddr(), "n", devices)

	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := func() string {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := js.Stream(ictx, streams.StreamMessages)
		if err != nil {
			return ""
		}
		info, err := s.Info(ictx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		if info.Config.Replicas != 3 {
			t.Errorf("IOT stream has %d replicas; a hub on a cluster should default to 3", info.Config.Replicas)
		}
		return info.Cluster.Leader
	}

	// Every telemetry message seen on the wire (core NATS, at most once), so that a loss can
	// be told apart: never sent by the hub, or sent and not stored.
	wire := seqCounts{}
	var wireMu sync.Mutex
	wnc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer wnc.Close()
	wnc.Subscribe("iot.devices.*.telemetry", func(m *nats.Msg) {
		var p struct{ Seq *int }
		if json.Unmarshal(m.Data, &p) != nil || p.Seq == nil {
			return
		}
		topic, _ := streams.SubjectToTopic(m.Subject)
		wireMu.Lock()
		wire.add(strings.Split(topic, "/")[1], *p.Seq)
		wireMu.Unlock()
	})
	wnc.Flush()
	// Half the devices start on each hub.
	half := map[string]string{}
	rest := map[string]string{}
	for id, tok := range tokens {
		if len(half) < devices/2 {
			half[id] = tok
		} else {
			rest[id] = tok
		}
	}
	f1 := startFleet(t, []string{a.MQTTAddr(), b.MQTTAddr()}, half, 100*time.Millisecond, 8)
	f2 := startFleet(t, []string{b.MQTTAddr(), a.MQTTAddr()}, rest, 100*time.Millisecond, 8)
	acked := func() int64 { return f1.ackedN.Load() + f2.ackedN.Load() }
	hubtest.Eventually(t, 30*time.Second, func() bool { return acked() >= 10*devices }, "ingest did not start")

	// The victim is a node a hub publishes through, made the stream's leader too if it can
	// be: the worst case, where the hub must reconnect and the stream elect a new leader.
	victim := hubNode(t, c)
	lead := c.Name(victim)
	for deadline := time.Now().Add(10 * time.Second); leader() != lead && time.Now().Before(deadline); {
		req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, lead)
		nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+streams.StreamMessages, []byte(req), 2*time.Second)
		time.Sleep(200 * time.Millisecond) // let the election settle before asking again
	}
	wasLeader := leader() == lead
	c.Stop(victim)
	stoppedAt, before := time.Now(), acked()
	hubtest.Eventually(t, 30*time.Second, func() bool { return acked() >= before+20*devices }, "ingest did not go on without node %s: %d acked since", lead, acked()-before)
	newLead := leader()
	t.Logf("stopped %s (stream leader: %v) after %d acks; %d more in %s; leader now %s", lead, wasLeader, before, acked()-before, time.Since(stoppedAt).Round(time.Millisecond), newLead)
	if newLead == lead || newLead == "" {
		t.Errorf("stream leader after the stop: %q", newLead)
	}

	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	before = acked()
	hubtest.Eventually(t, 30*time.Second, func() bool { return acked() >= before+10*devices }, "ingest stalled after the node came back")
	haltAt := time.Now()
	f1.halt()
	f2.halt()
	t.Logf("halt took %s; sent %d", time.Since(haltAt), f1.sent.Load()+f2.sent.Load())
	if tmo := f1.timedOut.Load() + f2.timedOut.Load(); tmo > 0 {
		t.Errorf("%d messages still not acknowledged 30 s after publishing stopped", tmo)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	// Every node's own replica, the restarted one included, catches up to the same state. The check
	// reads the stream only then: its reader is served from one replica, and a replica still
	// catching up would show gaps that are not losses.
	hubtest.Eventually(t, 30*time.Second, func() bool {
		want, ok := c.LocalStream((victim+1)%c.Len(), streams.StreamMessages)
		for i := range c.Len() {
			st, ok2 := c.LocalStream(i, streams.StreamMessages)
			if !ok || !ok2 || st.Msgs != want.Msgs || st.LastSeq != want.LastSeq {
				return false
			}
		}
		return true
	}, "the replicas differ: %s", replicaStates(c))

	all := f1.ackedSnapshot()
	for id, s := range f2.ackedSnapshot() {
		all[id] = s
	}
	got := streamSeqs(t, c.URL())
	missing, dups, distinct, ex := got.check(all)
	t.Logf("%d acknowledged, %d distinct in the stream, %d duplicates; %d attempts failed and were sent again", total(all), distinct, dups, f1.retried.Load()+f2.retried.Load())
	if missing > 0 {
		wireMu.Lock()
		for dev, seqs := range all {
			for _, sq := range seqs {
				if got[dev][sq] == 0 {
					t.Logf("missing %s seq %d: seen on the wire %d times; the stream holds seq-1 %d times, seq+1 %d times", dev, sq, wire[dev][sq], got[dev][sq-1], got[dev][sq+1])
				}
			}
		}
		wireMu.Unlock()
		for dev, m := range got {
			for sq, n := range m {
				if n > 1 {
					t.Logf("duplicate %s seq %d: %d times in the stream, %d on the wire", dev, sq, n, wire[dev][sq])
				}
			}
		}
		if s, err := js.Stream(ctx, streams.StreamMessages); err == nil {
			if info, err := s.Info(ctx); err == nil {
				t.Logf("stream state %+v", info.State)
			}
		}
		t.Fatalf("%d acknowledged messages are not in the stream (e.g. %s)", missing, ex)
	}
}

// hubNode is the node holding the most hub publishing connections ("tributary-hub").
func hubNode(t *testing.T, c *natscluster.Cluster) int {
	best, most := -1, 0
	for i := range c.Len() {
		cz, err := c.Server(i).Connz(&server.ConnzOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ci := range cz.Conns {
			if ci.Name == "tributary-hub" {
				n++
			}
		}
		if n > most {
			best, most = i, n
		}
	}
	if best < 0 {
		t.Fatal("no hub is connected to any node")
	}
	return best
}

func replicaStates(c *natscluster.Cluster) string {
	var b strings.Builder
	for i := range c.Len() {
		st, ok := c.LocalStream(i, streams.StreamMessages)
		fmt.Fprintf(&b, "%s: %v msgs %d last %d; ", c.Name(i), ok, st.Msgs, st.LastSeq)
	}
	return b.String()
}
