package natscluster_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams/natscluster"
)

// An R3 stream on the cluster keeps every acknowledged message while one node is down and
// while it comes back, and the returning node catches up.
func TestClusterSurvivesOneNode(t *testing.T) {
	t.Parallel()
	c := natscluster.ForTest(t, 3)
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.ConnectedClusterName() != "tributary" {
		t.Fatalf("cluster name %q, want tributary", nc.ConnectedClusterName())
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	acked := 0
	publish := func(n int) {
		for range n {
			// A publish during the leader election may fail; the caller retries, as hubs do.
			for attempt := 0; ; attempt++ {
				// A publish whose request was lost with the node waits for its own deadline only.
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "t.x", []byte(fmt.Sprint(acked)))
				cancel()
				if err == nil {
					acked++
					break
				}
				if attempt > 100 {
					t.Fatalf("publish %d: %v", acked, err)
				}
				if attempt%10 == 0 {
					t.Logf("%s publish %d attempt %d: %v (connected %s)", time.Now().Format("15:04:05.000"), acked, attempt, err, nc.ConnectedUrl())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	publish(100)
	c.Stop(1)
	if c.Server(1) != nil {
		t.Fatal("stopped node still has a server")
	}
	publish(100)
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	publish(100)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(acked) || acked != 300 {
		t.Fatalf("stream holds %d messages, %d acknowledged", info.State.Msgs, acked)
	}
	if got := len(info.Cluster.Replicas) + 1; got != 3 {
		t.Fatalf("%d replicas, want 3", got)
	}
}

func TestStartNeedsDir(t *testing.T) {
	if _, err := natscluster.Start(natscluster.Options{}); err == nil {
		t.Fatal("Start without Dir: no error")
	}
}

// A port that is taken fails the start at once with the listener's error, not after a wait.
func TestStartPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	began := time.Now()
	_, err = natscluster.Start(natscluster.Options{Nodes: 1, Dir: t.TempDir(), ClientPorts: []int{taken}, RoutePorts: []int{0}})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a taken port: %v, want an error naming the address in use", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("Start on a taken port took %v", took)
	}
}
